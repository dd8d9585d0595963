"""LocalPlatform: workloads as supervised local processes, with a primary and a canary group each.

As Flagger's Deployment controller, with the Workload as the target: the canary group runs the target's
current template when scaled up, and the primary runs a promoted copy kept in the state file.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.model.workload import ProcessTemplate, Workload
from rheostat.plugins.platforms.base import Group, PlatformError, Readiness, TargetMoved
from rheostat.plugins.platforms.local import leftovers, procfs
from rheostat.plugins.platforms.local.group import GroupHooks, ReplicaGroup
from rheostat.plugins.platforms.local.ports import PortPool
from rheostat.plugins.platforms.local.process import ReplicaContext
from rheostat.plugins.platforms.local.state import (
    ProcessRecord,
    StateFile,
    WorkloadRecord,
    empty_state,
    load_state,
    save_state,
)
from rheostat.plugins.platforms.local.status import WorkloadStatus
from rheostat.plugins.platforms.local.tasks import TaskSet
from rheostat.plugins.routers.base import Upstream

log = logging.getLogger(__name__)

LEFTOVER_GRACE_S = 2.0

EventSink = Callable[[ObjectKey, str, str], None]
EndpointsSink = Callable[[ObjectKey], Awaitable[None]]


@dataclass
class _Entry:
    """One workload: what is declared, what was promoted, and its two groups."""

    workload: Workload
    primary: ReplicaGroup
    canary: ReplicaGroup
    primary_template: ProcessTemplate | None = None
    primary_scale: int | None = None  # None = spec.replicas
    canary_scale: int | None = 0
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    publish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    published: tuple[tuple[Upstream, ...], tuple[Upstream, ...]] | None = None

    def group(self, group: Group) -> ReplicaGroup:
        return self.primary if group is Group.PRIMARY else self.canary


class LocalPlatform:
    """The Platform protocol over local processes. Call `start()` before anything else and `stop()` last."""

    def __init__(
        self,
        data_dir: Path,
        *,
        on_event: EventSink | None = None,
        on_endpoints: EndpointsSink | None = None,
        drain_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.data_dir = Path(data_dir)
        self._on_event = on_event
        self._on_endpoints = on_endpoints
        self._drain_s = drain_s
        self._clock = clock
        self._entries: dict[ObjectKey, _Entry] = {}
        self._managed: dict[ObjectKey, bool] = {}
        self._ports = PortPool()
        self._tasks = TaskSet()
        self._lock_file: IO[str] | None = None
        self._running = False
        self._adopting = False

    @property
    def _state_path(self) -> Path:
        return self.data_dir / "state.json"

    # -- lifecycle ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the data dir, adopt the replicas a previous controller left running, end the rest, and
        relaunch what is missing of every workload in the state file."""
        if self._running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        state = load_state(self._state_path)
        records: dict[ObjectKey, WorkloadRecord] = {}
        for key, record in state["workloads"].items():
            try:
                self._restore(ObjectKey(key), record)
                records[ObjectKey(key)] = record
            except ValidationError as exc:
                log.error("state for %s is invalid, dropped: %s", key, exc)
        templates = {
            (key, str(group)): template
            for key, entry in self._entries.items()
            for group, template in (
                (Group.PRIMARY, entry.primary_template),
                (Group.CANARY, entry.workload.spec.template),
            )
        }
        revisions = {(str(k), g): t.revision() if t else None for (k, g), t in templates.items()}
        found = await asyncio.to_thread(leftovers.adoptable, state["processes"], revisions)
        keep = {f.pid for f in found}
        await asyncio.to_thread(self._kill_leftovers, state["processes"], keep)
        self._running = True
        self._adopting = True  # no endpoints published until every group has its replicas back
        try:
            await self._adopt_all(found, templates)
        finally:
            self._adopting = False
        for key in self._entries:
            self._endpoints_changed(key)
        if found:
            log.warning("adopted %d replica(s) left running by a previous controller", len(found))
        self._save()

    async def _adopt_all(
        self, found: list[leftovers.Found], templates: dict[tuple[ObjectKey, str], ProcessTemplate | None]
    ) -> None:
        for key, entry in self._entries.items():
            for g in (entry.primary, entry.canary):
                mine = [f for f in found if (f.key, f.group) == (key, str(g.group))]
                template = templates[(key, str(g.group))]
                if mine and template is not None:
                    for f in mine:
                        self._ports.claim(f.port)
                    await g.adopt(template, [(f.index, f.port, f.pid, f.ticks, f.revision) for f in mine])
            self._sync(entry)

    async def stop(self, *, end_processes: bool = True) -> None:
        """Stop every task, and every process unless `end_processes=False` (they are then left running for the
        next start() to adopt). Declared workloads stay in the state file for the next start()."""
        if not self._running:
            return
        if end_processes:
            await asyncio.gather(*(self._stop_entry(e) for e in self._entries.values()))
        else:
            await asyncio.gather(*(g.detach() for e in self._entries.values() for g in (e.primary, e.canary)))
        await self._tasks.close()
        self._save()
        self._running = False
        self._entries.clear()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _lock(self) -> None:
        lock_file = open(self.data_dir / "controller.pid", "a+")  # noqa: SIM115  # held until stop()
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "?"
            lock_file.close()
            raise PlatformError(f"{self.data_dir} is in use by another controller (pid {holder})") from exc
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()}\n")
        lock_file.flush()
        self._lock_file = lock_file

    def _kill_leftovers(self, records: list[ProcessRecord], keep: set[int]) -> None:
        sessions = leftovers.to_end(self.data_dir, records, keep)
        if sessions:  # only live ones: a pid counts if its /proc start time matches the record
            log.warning("ending processes left by a previous controller: %s", sessions)
        procfs.kill_sessions(sessions, LEFTOVER_GRACE_S)

    def _restore(self, key: ObjectKey, record: WorkloadRecord) -> None:
        """The entry as the state file has it; start() adopts its live replicas, then syncs it."""
        workload = Workload.model_validate(record["workload"])
        entry = self._new_entry(workload)
        self._managed[key] = record["managed"]
        if record["primary_template"] is not None:
            entry.primary_template = ProcessTemplate.model_validate(record["primary_template"])
        entry.primary_scale = record["primary_scale"]
        entry.canary_scale = record["canary_scale"]
        self._entries[key] = entry

    # -- declaring workloads ----------------------------------------------------------------------------------

    def apply(self, workload: Workload) -> None:
        """Declare or update a workload. Unmanaged ones (no Canary) roll the new template out to the primary."""
        self._require_running()
        key = workload.metadata.key
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._new_entry(workload)
        entry.workload = workload
        if not self._managed.get(key, False):
            entry.primary_template = workload.spec.template
        self._sync(entry)

    def set_managed(self, key: ObjectKey, managed: bool) -> None:
        """Whether a Canary drives this workload. Released workloads get the target template directly."""
        self._managed[key] = managed
        entry = self._entries.get(key)
        if entry is not None and not managed:
            entry.canary_scale = 0
            entry.primary_template = entry.workload.spec.template
            self._sync(entry)
        elif entry is not None:
            self._save()

    async def delete(self, key: ObjectKey) -> None:
        """Stop both groups and forget the workload (its logs stay)."""
        entry = self._entries.pop(key, None)
        self._managed.pop(key, None)
        if entry is not None:
            entry.dirty.set()  # lets its notifier see that the workload is gone, and end
            await self._stop_entry(entry)
            self._save()

    # -- the Platform protocol --------------------------------------------------------------------------------

    async def bind(self, canary: Canary) -> None:
        """Nothing to keep: what this platform runs comes to it otherwise."""

    async def release(self, canary: Canary) -> None:
        """Nothing to hand back here."""

    async def ensure_primary(self, target: ObjectKey) -> None:
        entry = self._get(target)
        if entry.primary_template is None:
            entry.primary_template = entry.workload.spec.template
            self._sync(entry)

    async def revision(self, target: ObjectKey) -> str:
        return self._get(target).workload.spec.template.revision()

    async def primary_revision(self, target: ObjectKey) -> str | None:
        template = self._get(target).primary_template
        return None if template is None else template.revision()

    async def is_ready(self, target: ObjectKey, group: Group) -> Readiness:
        return self._get(target).group(group).readiness()

    async def promote(self, target: ObjectKey, revision: str) -> None:
        """Start rolling the analysed template out to the primary; is_ready(PRIMARY) is false until done."""
        entry = self._get(target)
        if entry.primary_template is not None and entry.primary_template.revision() == revision:
            return
        template = entry.workload.spec.template
        if template.revision() != revision:
            raise TargetMoved(
                f"workload {target} declares revision {template.revision()} now, not {revision}"
            )
        entry.primary_template = template
        self._sync(entry)

    async def scale(self, target: ObjectKey, group: Group, replicas: int | None) -> None:
        if replicas is not None and replicas < 0:
            raise PlatformError(f"cannot scale {target} {group} to {replicas} replicas")
        entry = self._get(target)
        if group is Group.PRIMARY:
            entry.primary_scale = replicas
        else:
            entry.canary_scale = replicas
        self._sync(entry)

    def tracked_configs(self, target: ObjectKey) -> dict[str, str]:
        return {}  # nothing but the target itself makes a revision here

    async def endpoints(self, target: ObjectKey, group: Group) -> tuple[Upstream, ...]:
        return self._get(target).group(group).endpoints()

    # -- inspection ---------------------------------------------------------------------------------------------

    def status(self, key: ObjectKey) -> WorkloadStatus:
        entry = self._get(key)
        return WorkloadStatus(
            key=key,
            revision=entry.workload.spec.template.revision(),
            managed=self._managed.get(key, False),
            primary=entry.primary.status(),
            canary=entry.canary.status(),
        )

    def logs(self, key: ObjectKey, group: Group | None = None, tail: int = 200) -> str:
        """The last `tail` lines of each replica's log, one section per replica."""
        folder = self._log_dir(key)
        if key not in self._entries and not folder.is_dir():
            raise PlatformError(f"workload {key} not found")
        groups = [group] if group is not None else [Group.PRIMARY, Group.CANARY]
        sections = []
        for g in groups:
            files = sorted(folder.glob(f"{g}-*.log"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            for path in files:
                try:
                    lines = path.read_text(errors="replace").splitlines()[-tail:] if tail > 0 else []
                except OSError as exc:
                    raise PlatformError(f"cannot read {path}: {exc}") from exc
                sections.append("\n".join([f"==> {path.stem} <==", *lines]))
        return "\n".join(sections) + ("\n" if sections else "")

    # -- internals ------------------------------------------------------------------------------------------------

    def _require_running(self) -> None:
        if not self._running:
            raise PlatformError("the local platform is not started; call start() first")

    def _get(self, key: ObjectKey) -> _Entry:
        self._require_running()
        try:
            return self._entries[key]
        except KeyError:
            raise PlatformError(f"workload {key} not found") from None

    def _log_dir(self, key: ObjectKey) -> Path:
        namespace, _, name = key.partition("/")
        return self.data_dir / "logs" / namespace / name

    def _new_entry(self, workload: Workload) -> _Entry:
        key = workload.metadata.key

        def hooks(group: Group) -> GroupHooks:
            return GroupHooks(
                replica=ReplicaContext(
                    key=key,
                    group=group,
                    log_dir=self._log_dir(key),
                    ports=self._ports,
                    tasks=self._tasks,
                    clock=self._clock,
                    on_event=self._emit,
                    on_change=lambda: None,
                    on_launch=lambda: None,
                ),
                publish=lambda: self._publish(key),
                endpoints_changed=lambda: self._endpoints_changed(key),
                persist=self._save,
                drain_s=self._drain_s,
            )

        entry = _Entry(workload, ReplicaGroup(hooks(Group.PRIMARY)), ReplicaGroup(hooks(Group.CANARY)))
        self._tasks.spawn(self._notifier(key, entry), name=f"endpoints notifier {key}")
        return entry

    def _sync(self, entry: _Entry) -> None:
        """Hand both groups their desired template and count, and persist the decision."""
        spec = entry.workload.spec
        primary_n = spec.replicas if entry.primary_scale is None else entry.primary_scale
        canary_n = spec.replicas if entry.canary_scale is None else entry.canary_scale
        entry.primary.set_desired(entry.primary_template, primary_n)
        entry.canary.set_desired(spec.template, canary_n)
        self._save()

    async def _stop_entry(self, entry: _Entry) -> None:
        await asyncio.gather(entry.primary.stop(), entry.canary.stop())

    def _emit(self, key: ObjectKey, reason: str, message: str) -> None:
        if self._on_event is not None:
            self._on_event(key, reason, message)

    def _endpoints_changed(self, key: ObjectKey) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.dirty.set()

    async def _notifier(self, key: ObjectKey, entry: _Entry) -> None:
        """Tell the router about endpoints that changed on their own (a crash, a restart on a new port)."""
        while True:
            await entry.dirty.wait()
            entry.dirty.clear()
            if self._entries.get(key) is not entry:
                return
            await self._publish(key)

    async def _publish(self, key: ObjectKey) -> None:
        entry = self._entries.get(key)
        if entry is None or self._on_endpoints is None:
            return
        if self._adopting:  # half-adopted groups would tell the router of too few endpoints (a 503 blip)
            return
        async with entry.publish_lock:
            snapshot = (entry.primary.endpoints(), entry.canary.endpoints())
            if snapshot == entry.published:
                return
            try:
                await self._on_endpoints(key)
            except Exception:
                # Not recorded as published, so the next change retries.
                log.exception(
                    "the routes of %s could not follow its replicas (tried again at their next change)", key
                )
                return
            entry.published = snapshot

    def _save(self) -> None:
        if not self._running:
            return
        state: StateFile = empty_state()
        for key, entry in self._entries.items():
            state["workloads"][key] = {
                "workload": entry.workload.model_dump(mode="json", exclude_unset=True),
                "managed": self._managed.get(key, False),
                "primary_template": (
                    entry.primary_template.model_dump(mode="json") if entry.primary_template else None
                ),
                "primary_scale": entry.primary_scale,
                "canary_scale": entry.canary_scale,
            }
            for g in (entry.primary, entry.canary):
                for r in g.replicas:
                    if r.pid is not None:
                        state["processes"].append(
                            {
                                "key": key,
                                "group": str(g.group),
                                "index": r.index,
                                "pid": r.pid,
                                "port": r.port,
                                "revision": r.revision,
                                "start_ticks": r.start_ticks,
                            }
                        )
        try:
            save_state(self._state_path, state)
        except OSError:
            # Processes keep running; a crash before the next successful save would lose this change.
            log.exception("cannot save state to %s", self._state_path)
