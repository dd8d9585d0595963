"""A replica group (the primary or the canary of one workload) converging on a template and a count.

Like a Deployment's rolling update with maxSurge 1 and maxUnavailable 0: while replicas of another revision
serve, a new replica is started, and only when it is ready is one old replica taken out of the endpoints,
drained and stopped. A new template arriving midway simply becomes the next target.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rheostat.model.base import ObjectKey
from rheostat.model.workload import ProcessTemplate
from rheostat.plugins.platforms.base import Group, Readiness
from rheostat.plugins.platforms.local.process import Replica, ReplicaContext
from rheostat.plugins.platforms.local.status import GroupStatus
from rheostat.plugins.routers.base import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupHooks:
    """How a group reaches the platform that owns it."""

    replica: ReplicaContext  # on_change and on_launch are replaced per group below
    publish: Callable[[], Awaitable[None]]  # push the current endpoints to the router, and wait for it
    endpoints_changed: Callable[[], None]  # the same, in the background
    persist: Callable[[], None]
    drain_s: float


class ReplicaGroup:
    def __init__(self, hooks: GroupHooks) -> None:
        self._hooks = hooks
        self._ctx = ReplicaContext(
            key=hooks.replica.key,
            group=hooks.replica.group,
            log_dir=hooks.replica.log_dir,
            ports=hooks.replica.ports,
            tasks=hooks.replica.tasks,
            clock=hooks.replica.clock,
            on_event=hooks.replica.on_event,
            on_change=self._on_change,
            on_launch=hooks.persist,
        )
        self.template: ProcessTemplate | None = None
        self.desired = 0
        self.replicas: list[Replica] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._not_ready_since: float | None = None

    @property
    def key(self) -> ObjectKey:
        return self._ctx.key

    @property
    def group(self) -> Group:
        return self._ctx.group

    @property
    def revision(self) -> str | None:
        return self.template.revision() if self.template else None

    def set_desired(self, template: ProcessTemplate | None, replicas: int) -> None:
        if template == self.template and replicas == self.desired:
            return
        self.template = template
        self.desired = replicas if template is not None else 0
        if self._task is None:
            self._task = self._ctx.tasks.spawn(self._run(), name=f"group {self.key} {self.group}")
        self._on_change()

    async def adopt(
        self, template: ProcessTemplate, found: list[tuple[int, int, int, int | None, str]]
    ) -> None:
        """Take over replicas a previous controller left running: (index, port, pid, start ticks, revision).

        Called before `set_desired`, so the group counts them and starts only what is missing. A replica
        of an older revision keeps serving until the rolling update replaces it (it is probed with the
        current template's readiness probe; if it exits, it comes back on the current template).
        """
        replicas = [Replica(self._ctx, index, template, port) for index, port, *_ in found]
        for r, (*_, revision) in zip(replicas, found, strict=True):
            r.revision = revision
        self.replicas.extend(replicas)
        await asyncio.gather(
            *(r.adopt(pid, ticks) for r, (_, _, pid, ticks, _) in zip(replicas, found, strict=True))
        )
        for r in replicas:
            log.info(
                "%s: adopted %s (pid %s) revision %s on port %d", self.key, r.name, r.pid, r.revision, r.port
            )

    async def detach(self) -> None:
        """Stop converging and supervising; the processes keep running for the next controller."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(r.detach() for r in self.replicas))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(r.stop() for r in self.replicas))
        self.replicas.clear()

    # -- what the platform reads -----------------------------------------------------------------------

    def endpoints(self) -> tuple[Upstream, ...]:
        serving = sorted((r for r in self.replicas if r.ready and not r.retiring), key=lambda r: r.index)
        return tuple(Upstream("127.0.0.1", r.port) for r in serving)

    def readiness(self) -> Readiness:
        ready, fatal, message = self._assess()
        if ready:
            self._not_ready_since = None
        elif self._not_ready_since is None:
            self._not_ready_since = self._ctx.clock()
        return Readiness(ready, message, self._not_ready_since, fatal)

    def status(self) -> GroupStatus:
        readiness = self.readiness()
        return GroupStatus(
            group=self.group,
            revision=self.revision,
            desired=self.desired,
            ready=readiness.ready,
            replicas=tuple(r.status() for r in sorted(self.replicas, key=lambda r: r.index)),
            message=readiness.message,
        )

    def _assess(self) -> tuple[bool, bool, str]:
        if self.template is None:
            return False, False, f"{self.group} does not exist yet"
        if self.desired == 0:
            return True, False, ""
        new, old = self._split()
        ready_new = [r for r in new if r.ready]
        failing = [r for r in new if r.fatal]
        if failing:
            return False, True, failing[0].message
        draining = [r for r in self.replicas if r.retiring]
        if len(ready_new) == len(new) == self.desired and not old and not draining:
            return True, False, ""
        message = f"{self.group}: {len(ready_new)}/{self.desired} replicas ready on revision {self.revision}"
        if old:
            message += f", {len(old)} still on an older revision"
        if draining:
            message += f", {len(draining)} draining"
        waiting = [r.message for r in new if not r.ready and r.message]
        if waiting:
            message += f"; {waiting[0]}"
        return False, False, message

    # -- convergence ----------------------------------------------------------------------------------------

    def _split(self) -> tuple[list[Replica], list[Replica]]:
        live = [r for r in self.replicas if not r.retiring]
        rev = self.revision
        return [r for r in live if r.revision == rev], [r for r in live if r.revision != rev]

    def _on_change(self) -> None:
        self._wake.set()
        self.readiness()  # stamps not_ready_since at the moment the group stops being ready
        self._hooks.endpoints_changed()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while await self._step():
                pass

    async def _step(self) -> bool:
        """One move towards the desired state; False when there is nothing to do until something changes."""
        new, old = self._split()
        never_served = [r for r in old if not r.ever_ready]
        if never_served:
            await self._retire(never_served)
            return True
        ready_new = [r for r in new if r.ready]
        if old and len(ready_new) + len(old) > self.desired:
            await self._retire([old[0]])
            return True
        if len(new) > self.desired:
            # Not-ready replicas go first: they serve nothing.
            extra = sorted(new, key=lambda r: (r.ready, -r.index))[: len(new) - self.desired]
            await self._retire(extra)
            return True
        if len(new) < self.desired:
            if not old:
                for _ in range(self.desired - len(new)):
                    self._add()
                return True
            if len(ready_new) == len(new):  # surge by one, only once the previous surge is ready
                self._add()
                return True
        return False

    def _add(self) -> None:
        assert self.template is not None
        used = {r.index for r in self.replicas}
        index = next(i for i in range(len(used) + 1) if i not in used)
        replica = Replica(self._ctx, index, self.template, self._ctx.ports.take())
        self.replicas.append(replica)
        replica.start()
        log.info(
            "%s: started %s revision %s on port %d", self.key, replica.name, replica.revision, replica.port
        )

    async def _retire(self, replicas: list[Replica]) -> None:
        for r in replicas:
            r.retiring = True
        if any(r.ready for r in replicas):
            # The router must stop sending new requests before the process goes; then in-flight ones finish.
            await self._hooks.publish()
            await asyncio.sleep(self._hooks.drain_s)
        await asyncio.gather(*(r.stop() for r in replicas))
        for r in replicas:
            self.replicas.remove(r)
            log.info("%s: stopped %s revision %s", self.key, r.name, r.revision)
        self._hooks.persist()
        self._on_change()
