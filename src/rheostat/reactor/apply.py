"""Applying a revision: validate every object first, then all of it or nothing; prune what left Git."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.load import FieldError, Manifest, ManifestError, load_tree
from rheostat.model.workload import Workload
from rheostat.reactor.source import Snapshot
from rheostat.store import Store

SOURCE = "Source"
APPLIED_KINDS = ("Canary", "MetricTemplate", "AlertProvider", "Workload")


class WorkloadHost(Protocol):
    """What the applier needs of a platform beyond the rollout protocol."""

    def apply(self, workload: Workload) -> None: ...

    def set_managed(self, key: ObjectKey, managed: bool) -> None: ...

    async def delete(self, key: ObjectKey) -> None: ...


@dataclass
class ApplyResult:
    ok: bool
    revision: str
    message: str
    changed: set[tuple[str, str]] = field(default_factory=set)
    deleted: set[tuple[str, str]] = field(default_factory=set)


def check_references(objects: list[Manifest], source: str) -> None:
    """Cross-object rules that no single schema can state."""
    workloads = {o.metadata.key for o in objects if isinstance(o, Workload)}
    ports: dict[int, str] = {}
    for o in objects:
        if not isinstance(o, Canary):
            continue
        ref = o.spec.targetRef
        where = f"Canary {o.metadata.key}"
        if ref.kind != "Workload":
            raise ManifestError(
                source,
                where,
                [
                    FieldError(
                        "spec.targetRef.kind",
                        f"{ref.kind} targets need the kubernetes platform; the local platform runs "
                        "`rheostat.dev/v1alpha1` Workload targets",
                    )
                ],
            )
        target = object_key(o.metadata.namespace, ref.name)
        if target not in workloads:
            raise ManifestError(
                source,
                where,
                [FieldError("spec.targetRef.name", f"Workload {target} is not declared in this revision")],
            )
        port = o.spec.service.port
        if port in ports:
            raise ManifestError(
                source,
                where,
                [FieldError("spec.service.port", f"port {port} is already used by Canary {ports[port]}")],
            )
        ports[port] = o.metadata.key


class Applier:
    def __init__(
        self,
        store: Store,
        host: WorkloadHost,
        on_canary_change: Callable[[ObjectKey], None],
        on_canary_delete: Callable[[ObjectKey], None],
    ) -> None:
        self.store = store
        self.host = host
        self.on_canary_change = on_canary_change
        self.on_canary_delete = on_canary_delete

    def last_revision(self) -> str | None:
        stored = self.store.get_object(SOURCE, "repo")
        return None if stored is None else str(stored.body.get("appliedRevision") or "") or None

    async def apply(self, snap: Snapshot) -> ApplyResult:
        try:
            objects = load_tree(snap.root)
            check_references(objects, str(snap.root))
        except ManifestError as exc:
            return self._rejected(snap, exc)
        current = {(o.kind, o.key): o for o in self.store.list_objects() if o.kind in APPLIED_KINDS}
        wanted: dict[tuple[str, str], Manifest] = {(str(o.kind), str(o.metadata.key)): o for o in objects}
        changed: set[tuple[str, str]] = set()
        with self.store.transaction():
            for (kind_, key_), obj in wanted.items():
                body = obj.model_dump(mode="json", exclude_none=True, by_alias=True)
                old = current.get((kind_, key_))
                if old is None or old.body != body:
                    self.store.put_object(kind_, key_, body, source=snap.describe)
                    changed.add((kind_, key_))
            deleted = set(current) - set(wanted)
            for kind, key in deleted:
                self.store.delete_object(kind, key)
                if kind == "Canary":
                    self.store.delete_status(key)
            self.store.put_object(
                SOURCE, "repo", {"appliedRevision": snap.revision, "describe": snap.describe, "error": ""}
            )
            self.store.add_event(
                SOURCE,
                "repo",
                "Applied",
                f"applied {snap.describe}: {len(changed)} changed, {len(deleted)} pruned",
            )
        managed = {
            object_key(o.metadata.namespace, o.spec.targetRef.name) for o in objects if isinstance(o, Canary)
        }
        for o in objects:
            if isinstance(o, Workload):
                self.host.set_managed(o.metadata.key, o.metadata.key in managed)
                self.host.apply(o)
        for kind, key in deleted:
            if kind == "Workload":
                await self.host.delete(ObjectKey(key))
            elif kind == "Canary":
                self.on_canary_delete(ObjectKey(key))
        for o in objects:
            if isinstance(o, Canary):
                self.on_canary_change(o.metadata.key)
        return ApplyResult(True, snap.revision, f"applied {snap.describe}", changed, deleted)

    def _rejected(self, snap: Snapshot, exc: ManifestError) -> ApplyResult:
        message = f"revision {snap.describe} rejected, the last good revision keeps running: {exc}"
        with self.store.transaction():
            prev = self.store.get_object(SOURCE, "repo")
            body = dict(prev.body) if prev else {"appliedRevision": ""}
            body.update(error=message, rejectedRevision=snap.revision)
            self.store.put_object(SOURCE, "repo", body)
            self.store.add_event(SOURCE, "repo", "RevisionRejected", message, warning=True)
            kind, _, key = exc.obj.partition(" ")
            if kind in APPLIED_KINDS and key:
                self.store.add_event(kind, key, "InvalidSpec", str(exc), warning=True)
        return ApplyResult(False, snap.revision, message)
