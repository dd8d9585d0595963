"""Facts about processes from /proc, and ending whole sessions of them.

Each replica runs in its own session (start_new_session), so its session id is its pid and every process it
forks shares it: killing the session leaves nothing behind, even children that outlive the replica.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces; fields after it are plain.
    return text[text.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the pid, it names one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that may never reap it (an orphan in a container)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def signal_session(sid: int, signum: int) -> None:
    """Signal the process group led by `sid` and any stragglers that left the group but not the session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signum)
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill_sessions(sids: list[int], grace_s: float) -> None:
    """SIGTERM the sessions, SIGKILL whatever is left after `grace_s`. Blocking; for start-up clean-up."""
    sids = [sid for sid in sids if session_members(sid)]
    for sid in sids:
        signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(session_members(sid) for sid in sids):
        time.sleep(0.05)
    for sid in sids:
        if session_members(sid):
            signal_session(sid, signal.SIGKILL)
