"""A feature flag as a Canary's target: the router and the platform of a progressive flag rollout.

The rollout engine drives a flag exactly as it drives a Workload; only the two plugins differ:

* platform: the *primary* is the flag definition users are served; the *target revision* is the digest of
  Git's definition. First sight pins Git's definition as the primary (Flagger's initialization); a new
  definition in Git is then served only to the split's share of users until promotion pins it.
* router: the split is the percent of targeting keys (sticky buckets) served Git's definition.

Primaries and splits are kept in the state store, so a restart serves the same users the same definition.
"""

from __future__ import annotations

import sqlite3

from rheostat.flags.store import FlagStore
from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.model.flags import FlagdConfig
from rheostat.plugins.platforms.base import Group, PlatformError, Readiness, TargetMoved
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, Upstream
from rheostat.store.port import State

PRIMARY_STATE = "FlagPrimary"  # state rows, keyed by flag key: {digest, flagd, split, canary}


class FlagRollouts:
    """Router and Platform of Canaries whose targetRef is a FeatureFlag or FlagSet (target = flag key)."""

    def __init__(self, flags: FlagStore, db: State) -> None:
        self.flags = flags
        self.db = db
        self._flag_of: dict[ObjectKey, str] = {}  # canary -> flag key, learnt from reconcile()

    def restore(self) -> None:
        """Put back the primaries and splits kept in the state store (at controller start)."""
        for key, row in self.db.list_states(PRIMARY_STATE).items():
            config = FlagdConfig.model_validate(row["flagd"])
            self.flags.restore(key, config, str(row["digest"]), int(row.get("split", 0)))
            if row.get("canary"):
                self._flag_of[ObjectKey(str(row["canary"]))] = key

    def bound(self) -> list[ObjectKey]:
        """The flag Canaries this router has seen (it binds each at its first tick, forgets it when deleted)."""
        return list(self._flag_of)

    def canary_of(self, flag: str) -> ObjectKey | None:
        return next((c for c, f in self._flag_of.items() if f == flag), None)

    def _save(self, key: str, **changes: object) -> None:
        row = self.db.get_state(PRIMARY_STATE, key) or {}
        pinned = self.flags.primary(key)
        if pinned is None:
            self.db.delete_state(PRIMARY_STATE, key)
            return
        row.update(digest=pinned.digest, flagd=pinned.config.to_flagd(), split=self.flags.split(key))
        row.update(changes)
        self.db.put_state(PRIMARY_STATE, key, row)

    # -- Platform --------------------------------------------------------------------------------------

    async def bind(self, canary: Canary) -> None:
        """Nothing to keep: what this platform runs comes to it otherwise."""

    async def release(self, canary: Canary) -> None:
        """Nothing to hand back here."""

    async def ensure_primary(self, target: ObjectKey) -> None:
        if self.flags.primary(target) is None and self.flags.get(target) is not None:
            self.flags.pin(target)
            self._save(target)

    async def revision(self, target: ObjectKey) -> str:
        info = self.flags.get(target)
        if info is None:
            raise PlatformError(f"flag {target!r} is not served (not in Git, or its flag set was refused)")
        return info.digest[:16]

    async def primary_revision(self, target: ObjectKey) -> str | None:
        pinned = self.flags.primary(target)
        return None if pinned is None else pinned.digest[:16]

    async def is_ready(self, target: ObjectKey, group: Group) -> Readiness:
        if self.flags.get(target) is None:
            return Readiness(False, f"flag {target!r} is not served")
        return Readiness(True)

    async def promote(self, target: ObjectKey, revision: str) -> None:
        if await self.primary_revision(target) == revision:
            return
        now = await self.revision(target)
        if now != revision:
            raise TargetMoved(f"flag {target!r} is at definition {now} in Git now, not {revision}")
        self.flags.pin(target)
        self._save(target, split=0)

    async def scale(self, target: ObjectKey, group: Group, replicas: int | None) -> None:
        return None  # a flag definition has no replicas

    def tracked_configs(self, target: ObjectKey) -> dict[str, str]:
        return {}  # nothing but the target itself makes a revision here

    async def endpoints(self, target: ObjectKey, group: Group) -> tuple[Upstream, ...]:
        return ()

    # -- Router ----------------------------------------------------------------------------------------

    async def reconcile(self, route: ServiceRoute) -> None:
        key = route.target
        for canary, flag in self._flag_of.items():
            if flag == key and canary != route.key:
                raise RouterError(f"flag {key!r} is already rolled out by Canary {canary}")
        before = self._flag_of.get(route.key)
        if before != key:
            if before is not None:  # the Canary now rolls out another flag: the old one goes back to Git
                self.flags.unpin(before)
                self.db.delete_state(PRIMARY_STATE, before)
            self._flag_of[route.key] = key
            self._save(key, canary=route.key)

    def _key(self, canary: ObjectKey) -> str:
        key = self._flag_of.get(canary)
        if key is None:
            raise RouterError(f"Canary {canary} has no flag bound (reconcile first)")
        return key

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        if routes.match or routes.mirror or routes.sticky is not None:
            raise RouterError("a flag is rolled out by share of users only (no match, mirror or cookie)")
        flag = self._key(key)
        before = self.flags.split(flag)
        self.flags.set_split(flag, routes.canary)
        try:
            self._save(flag)
        except sqlite3.Error as exc:  # not kept, so not served: a restart would go back to `before`
            self.flags.set_split(flag, before)
            raise RouterError(f"the split of flag {flag!r} could not be kept: {exc}") from exc

    async def get_routes(self, key: ObjectKey) -> Routes:
        share = self.flags.split(self._key(key))
        return Routes(100 - share, share)

    async def finalize(self, key: ObjectKey) -> None:
        """The Canary is gone: no rollout any more, Git's definition serves everyone."""
        flag = self._flag_of.pop(key, None)
        if flag is None:
            return
        self.flags.unpin(flag)
        self.db.delete_state(PRIMARY_STATE, flag)
