"""The kill switch: turn a flag off at once, by hand, ahead of Git; kept until Git agrees or it is lifted.

Git stays the source of truth, so a killed flag is *drift*: it is reported (with the edit that makes Git agree)
until Git's definition says `state: DISABLED` too, and then the override is dropped by itself.
"""

from __future__ import annotations

import time
from typing import Any

from rheostat.flags.store import FlagStore
from rheostat.store.port import State

KILL_STATE = "FlagKill"  # state rows, keyed by flag key: {at, reason}
FLAG = "Flag"  # the kind events about a flag are recorded under


class KillSwitch:
    def __init__(self, flags: FlagStore, db: State) -> None:
        self.flags = flags
        self.db = db

    def disable(self, key: str, reason: str = "") -> None:
        """Raises KeyError for a flag that is not served."""
        self.flags.disable(key)
        with self.db.transaction():
            self.db.put_state(KILL_STATE, key, {"at": time.time(), "reason": reason})
            why = f": {reason}" if reason else ""
            self.db.add_event(FLAG, key, "KillSwitch", f"flag {key} disabled by hand{why}", warning=True)

    def enable(self, key: str) -> bool:
        """Lift the kill switch; False if the flag was not killed."""
        if self.db.get_state(KILL_STATE, key) is None and not self.flags.killed(key):
            return False
        self.flags.enable(key)
        with self.db.transaction():
            self.db.delete_state(KILL_STATE, key)
            self.db.add_event(FLAG, key, "KillSwitchLifted", f"flag {key} serves Git's definition again")
        return True

    def killed(self) -> dict[str, dict[str, Any]]:
        return self.db.list_states(KILL_STATE)

    def reconcile(self) -> None:
        """After Git's flags change: re-apply kills, and drop those Git now agrees with."""
        for key in self.killed():
            info = self.flags.get(key)
            if info is None:
                continue  # the flag is gone from Git; the kill waits in case it comes back
            if info.state == "DISABLED":
                self.flags.enable(key)
                with self.db.transaction():
                    self.db.delete_state(KILL_STATE, key)
                    self.db.add_event(
                        FLAG, key, "KillSwitchInGit", f"Git now disables flag {key}; the override is dropped"
                    )
            elif not self.flags.killed(key):
                self.flags.disable(key)
