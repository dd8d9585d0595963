"""In-memory platform: templates are revisions, readiness is whatever the test says."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.plugins.platforms.base import Group, PlatformError, Readiness, TargetMoved
from rheostat.plugins.routers.base import Upstream


@dataclass
class FakeWorkload:
    revision: str
    replicas: int = 1
    primary_revision: str | None = None
    scale: dict[Group, int] = field(default_factory=dict)
    ready: dict[Group, bool] = field(default_factory=lambda: {Group.PRIMARY: True, Group.CANARY: True})
    fatal: dict[Group, bool] = field(default_factory=lambda: {Group.PRIMARY: False, Group.CANARY: False})
    not_ready_since: dict[Group, float] = field(default_factory=dict)
    promotions: int = 0


class MemoryPlatform:
    def __init__(self, clock: object = None) -> None:
        self.workloads: dict[ObjectKey, FakeWorkload] = {}
        self._clock = clock

    def _now(self) -> float:
        now = getattr(self._clock, "now", None)
        return float(now()) if callable(now) else time.time()

    def set_revision(self, target: ObjectKey, revision: str, replicas: int = 1) -> None:
        w = self.workloads.get(target)
        if w is None:
            self.workloads[target] = FakeWorkload(revision=revision, replicas=replicas)
        else:
            w.revision = revision

    def set_ready(self, target: ObjectKey, group: Group, ready: bool, *, fatal: bool = False) -> None:
        w = self._get(target)
        if not ready and w.ready[group]:
            w.not_ready_since[group] = self._now()
        w.ready[group] = ready
        w.fatal[group] = fatal

    def _get(self, target: ObjectKey) -> FakeWorkload:
        try:
            return self.workloads[target]
        except KeyError:
            raise PlatformError(f"workload {target} not found") from None

    async def bind(self, canary: Canary) -> None:
        """Nothing to keep: what this platform runs comes to it otherwise."""

    async def release(self, canary: Canary) -> None:
        """Nothing to hand back here."""

    async def ensure_primary(self, target: ObjectKey) -> None:
        w = self._get(target)
        if w.primary_revision is None:
            w.primary_revision = w.revision
            w.scale[Group.PRIMARY] = w.replicas

    async def revision(self, target: ObjectKey) -> str:
        return self._get(target).revision

    async def primary_revision(self, target: ObjectKey) -> str | None:
        return self._get(target).primary_revision

    async def is_ready(self, target: ObjectKey, group: Group) -> Readiness:
        w = self._get(target)
        if w.ready[group]:
            return Readiness(True)
        return Readiness(False, f"{group} not ready", w.not_ready_since.get(group), w.fatal[group])

    async def promote(self, target: ObjectKey, revision: str) -> None:
        w = self._get(target)
        if w.primary_revision == revision:
            return
        if w.revision != revision:
            raise TargetMoved(f"{target} declares {w.revision} now, not {revision}")
        if w.primary_revision != w.revision:
            w.primary_revision = w.revision
            w.promotions += 1

    async def scale(self, target: ObjectKey, group: Group, replicas: int | None) -> None:
        w = self._get(target)
        w.scale[group] = w.replicas if replicas is None else replicas

    def tracked_configs(self, target: ObjectKey) -> dict[str, str]:
        return {}  # nothing but the target itself makes a revision here

    async def endpoints(self, target: ObjectKey, group: Group) -> tuple[Upstream, ...]:
        w = self._get(target)
        base = 20000 if group is Group.PRIMARY else 30000
        return tuple(Upstream("127.0.0.1", base + i) for i in range(w.scale.get(group, 0)))
