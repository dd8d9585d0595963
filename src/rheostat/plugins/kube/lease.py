"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection package does it, and the
fence every write to the cluster checks.

The holder renews the Lease every `retry_s`; a renewal is a PUT with the resourceVersion just read, so a 409
means someone else wrote it first. Another replica takes the Lease once it has seen the same record unchanged
for `leaseDurationSeconds` (measured on its own monotonic clock, from when it saw the record change: clocks
of different machines are never compared).

The fence: this replica may write until `renew_deadline_s` after the start of its last renewal that went
through. The standby cannot take over before `duration_s` after it saw that renewal, which was after it
started; so the old leader stops writing at least `duration_s - renew_deadline_s` before anyone else starts
(the margin for a write already on the wire, and for clocks that run at slightly different rates). The
fence reads the clock at every check, so a busy event loop cannot make it late.

Our timings (client-go's defaults are 15 s / 10 s / 2 s): 10 s lease, 7 s renew deadline, 2 s retry. The
standby sees the last renewal at most one retry after it was made, and notices the expiry at most one retry
after it happens: the leader's death is followed by a takeover within 10 + 2 + 2 = 14 s, inside the 15 s we
promise. A 15 s lease would make that 19 s.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Conflict, Kind, KubeAPI, KubeError, NotLeader, Obj

log = logging.getLogger(__name__)

DURATION_S = 10
RENEW_DEADLINE_S = 7.0
RETRY_S = 2.0


def micro_time(at: datetime | None = None) -> str:
    """A Kubernetes MicroTime: RFC 3339 with microseconds, in UTC."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeaseConfig:
    name: str
    namespace: str
    identity: str  # unique per process: hostname (the pod's name) and a random suffix
    duration_s: int = DURATION_S  # leaseDurationSeconds: how long a standby waits on an unrenewed Lease
    renew_deadline_s: float = RENEW_DEADLINE_S  # how long the leader keeps trying to renew before it stops
    retry_s: float = RETRY_S  # how often the leader renews and a standby looks

    def __post_init__(self) -> None:
        if not self.name or not self.namespace or not self.identity:
            raise ValueError("a Lease needs a name, a namespace and an identity")
        if not 0 < self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError(
                f"Lease {self.namespace}/{self.name}: need 0 < retry ({self.retry_s:g}s) < renew deadline "
                f"({self.renew_deadline_s:g}s) < lease duration ({self.duration_s}s)"
            )

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Fence:
    """Whether this replica may write to the cluster now; `check` raises NotLeader when it may not."""

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what  # "Lease ns/name", for the message
        self.clock = clock
        self._until = -math.inf

    def held(self) -> bool:
        return self.clock() < self._until

    def hold_until(self, until: float) -> None:
        self._until = until

    def drop(self) -> None:
        self._until = -math.inf

    def left(self) -> float:
        """Seconds until the fence closes (negative once closed)."""
        return self._until - self.clock()

    def check(self, verb: str, kind: Kind, name: str = "") -> None:
        if not self.held():
            raise NotLeader(
                0, verb, kind, f"not written: this replica does not hold the leader {self.what}", name
            )


@dataclass
class Observed:
    """The Lease as this replica last saw it change, and when (monotonic)."""

    spec: dict[str, Any] = field(default_factory=dict)
    at: float = -math.inf


class LeaderElector:
    """Acquires, renews and releases one Lease. `api` should not retry much: a renewal that waits on
    retries eats the renew deadline (the controller gives it its own client, one try per request)."""

    def __init__(
        self,
        api: KubeAPI,
        config: LeaseConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.sleep = sleep
        self.fence = Fence(f"Lease {config.key}", clock)
        self.observed = Observed()
        self.holder = ""  # who holds the Lease, as last seen ("" when nobody does)
        self.transitions = 0

    @property
    def leading(self) -> bool:
        return self.fence.held()

    # -- one attempt -------------------------------------------------------------------------------

    def _spec(self, old: dict[str, Any] | None, now: str) -> dict[str, Any]:
        ours = old is not None and old.get("holderIdentity") == self.config.identity
        transitions = int((old or {}).get("leaseTransitions") or 0)
        return {
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": self.config.duration_s,
            "acquireTime": (old or {}).get("acquireTime") if ours else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours or old is None else transitions + 1,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when this replica holds the Lease now (the fence is extended)."""
        started = self.clock()
        cfg = self.config
        found = await self.api.get(kinds.LEASE, cfg.namespace, cfg.name)
        now = micro_time()
        if found is None:
            body = {
                "apiVersion": kinds.LEASE.api_version,
                "kind": kinds.LEASE.kind,
                "metadata": {"name": cfg.name, "namespace": cfg.namespace},
                "spec": self._spec(None, now),
            }
            try:
                stored = await self.api.create(body)
            except Conflict:  # another replica created it first
                return False
            return self._won(stored, started)
        spec = dict(found.get("spec") or {})
        if spec != self.observed.spec:
            self.observed = Observed(spec, self.clock())
        self.holder = str(spec.get("holderIdentity") or "")
        self.transitions = int(spec.get("leaseTransitions") or 0)
        duration = float(spec.get("leaseDurationSeconds") or cfg.duration_s)
        ours = self.holder == cfg.identity
        if self.holder and not ours and self.clock() < self.observed.at + duration:
            self.fence.drop()  # held by another: if we thought we led, we do not
            return False
        if not ours and self.leading:
            self.fence.drop()  # the Lease was released or taken from under us: never lead on a stale belief
        new = {**found, "spec": self._spec(spec, now)}
        try:
            stored = await self.api.replace(new)  # carries metadata.resourceVersion: 409 when it moved
        except Conflict:
            return False
        return self._won(stored, started)

    def _won(self, stored: Obj, started: float) -> bool:
        spec = dict(stored.get("spec") or {})
        self.observed = Observed(spec, self.clock())
        self.holder = str(spec.get("holderIdentity") or "")
        self.transitions = int(spec.get("leaseTransitions") or 0)
        self.fence.hold_until(started + self.config.renew_deadline_s)
        return True

    async def _attempt(self, timeout: float) -> bool:
        try:
            return await asyncio.wait_for(self.try_acquire_or_renew(), timeout=max(timeout, 0.001))
        except (KubeError, TimeoutError) as exc:
            if not isinstance(exc, NotLeader):
                log.debug("Lease %s: %s", self.config.key, exc)
            return False

    # -- the loops -----------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Returns once this replica leads: tries every `retry_s`."""
        while not await self._attempt(self.config.renew_deadline_s):
            await self.sleep(self.config.retry_s)

    async def hold(self) -> None:
        """Renews every `retry_s` while leading; returns (the fence dropped) once the Lease is lost: renewals
        failing past the renew deadline, or another holder seen."""
        while True:
            await self.sleep(self.config.retry_s)
            while True:
                left = self.fence.left()
                if left <= 0:
                    self.fence.drop()
                    return
                if await self._attempt(min(left, self.config.renew_deadline_s)):
                    break
                if self.holder and self.holder != self.config.identity:
                    self.fence.drop()  # someone else holds it: stop at once, do not wait for the deadline
                    return
                await self.sleep(min(self.config.retry_s, max(self.fence.left(), 0.0)))

    async def release(self) -> bool:
        """On a clean shutdown: give the Lease up (holder emptied) so a standby takes it at its next look,
        not after the lease duration. Only when the Lease still names this replica. True when released."""
        self.fence.drop()  # nothing more is written from here
        if self.holder != self.config.identity:
            return False
        cfg = self.config
        try:
            found = await self.api.get(kinds.LEASE, cfg.namespace, cfg.name)
            spec = dict((found or {}).get("spec") or {})
            if found is None or spec.get("holderIdentity") != cfg.identity:
                return False
            now = micro_time()
            spec.update(holderIdentity="", leaseDurationSeconds=1, renewTime=now, acquireTime=now)
            await asyncio.wait_for(self.api.replace({**found, "spec": spec}), cfg.renew_deadline_s)
        except (KubeError, TimeoutError) as exc:
            log.warning("Lease %s not released (a standby takes it once it expires): %s", cfg.key, exc)
            return False
        self.holder = ""
        return True


class Fenced:
    """A `KubeAPI` whose writes go out only while `fence` is held; reads pass through. The real client also
    checks the fence before each retry of a write (see client.LightkubeAPI)."""

    def __init__(self, api: KubeAPI, fence: Fence) -> None:
        self.api = api
        self.fence = fence

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        return await self.api.get(kind, namespace, name)

    async def list(self, kind: Kind, namespace: str | None = None, labels: Any = None) -> list[Obj]:
        return await self.api.list(kind, namespace, labels)

    def watch(self, kind: Kind, namespace: str | None = None) -> Any:
        return self.api.watch(kind, namespace)

    async def create(self, obj: Obj) -> Obj:
        self.fence.check("create", kinds.kind_of(obj["apiVersion"], obj["kind"]), obj["metadata"]["name"])
        return await self.api.create(obj)

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        self.fence.check("patch", kinds.kind_of(obj["apiVersion"], obj["kind"]), obj["metadata"]["name"])
        return await self.api.apply(obj, force=force)

    async def apply_as(self, kind: Kind, obj: Obj, *, force: bool = False, dry_run: bool = False) -> Obj:
        """Server-side apply of any kind (GitOps into the cluster); only on an API that has it."""
        apply_as = getattr(self.api, "apply_as", None)
        if apply_as is None:
            raise TypeError("this API has no server-side apply of any kind")
        self.fence.check("patch", kind, obj["metadata"]["name"])
        return cast(Obj, await apply_as(kind, obj, force=force, dry_run=dry_run))

    async def replace(self, obj: Obj) -> Obj:
        self.fence.check("update", kinds.kind_of(obj["apiVersion"], obj["kind"]), obj["metadata"]["name"])
        return await self.api.replace(obj)

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        self.fence.check("patch", kind, name)
        return await self.api.patch_status(kind, namespace, name, status)

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        self.fence.check("delete", kind, name)
        return await self.api.delete(kind, namespace, name)

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        self.fence.check("create", kinds.EVENT)
        await self.api.event(regarding, reason, message, warning=warning)

    async def close(self) -> None:
        await self.api.close()


__all__ = ["DURATION_S", "Fence", "Fenced", "LeaderElector", "LeaseConfig"]
