"""An in-memory API server for fast tests, with the semantics the real one has and the plugins rely on:
resourceVersion, uid, generation (moved by spec changes only), the status subresource kept apart, 409 on a
stale resourceVersion, label selectors, watches, server-side apply with field ownership (see `ssa`), and
injected faults. tests/test_kube_client.py runs the same contract over this and the real client."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

from rheostat.plugins.kube import ssa
from rheostat.plugins.kube.api import (
    FIELD_MANAGER,
    Conflict,
    Forbidden,
    Kind,
    KubeError,
    NotInstalled,
    Obj,
    Unavailable,
    WatchType,
)
from rheostat.plugins.kube.kinds import EVENT, kind_of

Objs = list[Obj]  # `list` is a method name in MemoryKube
TRIES = 5  # what the real client retries a 429/5xx before Unavailable (client.Retry.tries)


def merge(into: Obj, patch: Mapping[str, Any]) -> Obj:
    """JSON merge patch (RFC 7386): None deletes a key, dicts merge, anything else replaces."""
    out = dict(into)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def matches(obj: Obj, labels: Mapping[str, str] | None) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in (labels or {}).items())


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MemoryKube:
    def __init__(self, *, missing: tuple[Kind, ...] = ()) -> None:
        self.objects: dict[tuple[str, str, str, str], Obj] = {}  # (apiVersion, kind, ns, name)
        self.owners: dict[tuple[str, str, str, str], ssa.Owners] = {}  # server-side apply field managers
        self.missing = set(missing)  # kinds whose CRD is "not installed"
        self.writes: list[tuple[str, Kind, str]] = []  # (verb, kind, name): what a test counts
        self.retried = 0  # transient faults the real client would have retried
        self._faults: list[tuple[int, str | None, Kind | None]] = []  # (status, verb, kind), one per request
        self._version = 0
        self._watchers: list[tuple[Kind, str | None, asyncio.Queue[tuple[WatchType, Obj]]]] = []

    # -- helpers ----------------------------------------------------------------------------------

    def _check(self, kind: Kind, verb: str, name: str = "") -> None:
        if kind in self.missing:
            raise NotInstalled(404, verb, kind, "the server could not find the requested resource")
        transient = 0
        while self._faults:
            status, want_verb, want_kind = self._faults[0]
            if (want_verb or verb) != verb or (want_kind or kind) != kind:
                break
            self._faults.pop(0)
            if status == 429 or status >= 500:
                transient += 1
                if transient == TRIES:
                    raise Unavailable(status, verb, kind, f"still failing after {TRIES} tries", name)
                self.retried += 1
                continue
            if status == 403:
                raise Forbidden(403, verb, kind, "injected", name)
            if status == 409:
                raise Conflict(409, verb, kind, "injected", name)
            raise KubeError(status, verb, kind, "injected", name)

    def _key(self, kind: Kind, namespace: str, name: str) -> tuple[str, str, str, str]:
        return (kind.api_version, kind.kind, namespace if kind.namespaced else "", name)

    def _store(self, kind: Kind, obj: Obj, event: WatchType) -> Obj:
        self._version += 1
        obj["metadata"]["resourceVersion"] = str(self._version)
        meta = obj["metadata"]
        self.objects[self._key(kind, meta.get("namespace", ""), meta["name"])] = obj
        self._notify(kind, event, obj)
        return copy.deepcopy(obj)

    def _notify(self, kind: Kind, event: WatchType, obj: Obj) -> None:
        ns = obj["metadata"].get("namespace")
        for k, want_ns, queue in self._watchers:
            if k == kind and (want_ns is None or want_ns == ns):
                queue.put_nowait((event, copy.deepcopy(obj)))

    def _create(self, kind: Kind, body: Obj) -> Obj:
        new = copy.deepcopy(body)
        if kind.status:
            new.pop("status", None)
        meta = new["metadata"]
        meta.update(generation=1, uid=str(uuid.uuid4()), creationTimestamp=now())
        if kind.namespaced:
            meta.setdefault("namespace", "default")
        return self._store(kind, new, "ADDED")

    # -- what a test does -------------------------------------------------------------------------

    def fail(self, status: int, times: int = 1, *, verb: str | None = None, kind: Kind | None = None) -> None:
        """The next `times` requests (of `verb` on `kind`, when given) answer `status`: 403, 409, 429, 5xx.
        A 429/5xx is absorbed as the real client's retries would, until TRIES in a row: Unavailable."""
        self._faults += [(status, verb, kind)] * times

    def add(self, obj: Obj, *, manager: str = "kubectl") -> Obj:
        """Create an object as another client would (`manager` comes to own its fields)."""
        kind = kind_of(obj["apiVersion"], obj["kind"])
        key = self._key(kind, obj["metadata"].get("namespace", "default"), obj["metadata"]["name"])
        ssa.record_update({}, obj, manager, self.owners.setdefault(key, {}), status_apart=kind.status)
        return self._create(kind, obj)

    def set_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> None:
        """Play the kubelet or a controller: replace an object's status."""
        key = self._key(kind, namespace, name)
        new = copy.deepcopy(self.objects[key])
        new["status"] = copy.deepcopy(status)
        self._store(kind, new, "MODIFIED")

    # -- the port ---------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        self._check(kind, "get", name)
        found = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        self._check(kind, "list")
        return self._list(kind, namespace, labels)

    def _list(self, kind: Kind, namespace: str | None, labels: Mapping[str, str] | None = None) -> Objs:
        return [
            copy.deepcopy(o)
            for (av, k, ns, _), o in sorted(self.objects.items())
            if (av, k) == (kind.api_version, kind.kind)
            and (namespace is None or ns == namespace)
            and matches(o, labels)
        ]

    async def watch(self, kind: Kind, namespace: str | None = None) -> AsyncIterator[tuple[WatchType, Obj]]:
        self._check(kind, "watch")
        queue: asyncio.Queue[tuple[WatchType, Obj]] = asyncio.Queue()
        entry = (kind, namespace, queue)
        self._watchers.append(entry)
        try:
            for obj in self._list(kind, namespace):
                yield "ADDED", obj
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(entry)

    async def create(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        self._check(kind, "create", meta["name"])
        self.writes.append(("create", kind, meta["name"]))
        if self._key(kind, meta.get("namespace", "default"), meta["name"]) in self.objects:
            raise Conflict(409, "create", kind, "already exists", meta["name"])
        key = self._key(kind, meta.get("namespace", "default"), meta["name"])
        ssa.record_update({}, obj, FIELD_MANAGER, self.owners.setdefault(key, {}), status_apart=kind.status)
        return self._create(kind, obj)

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata", {})
        self._check(kind, "patch", meta["name"])
        key = self._key(kind, meta.get("namespace", "default"), meta["name"])
        self.writes.append(("apply", kind, meta["name"]))
        old = self.objects.get(key)
        owners = self.owners.setdefault(key, {})
        if old is not None and meta.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise Conflict(409, "patch", kind, "the object has been modified", meta["name"])
        fields = ssa.applied_leaves(obj, status_apart=kind.status)
        if old is not None and not force and (clash := ssa.conflicts(old, fields, FIELD_MANAGER, owners)):
            raise Conflict(409, "patch", kind, f"apply conflicts: {', '.join(clash)}", meta["name"])
        ident = {k: meta[k] for k in ("name", "namespace") if k in meta}
        base = old or {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": ident}
        new = ssa.apply(base, obj, FIELD_MANAGER, owners, force=force, status_apart=kind.status)
        if old is None:
            return self._create(kind, new)
        if ssa.spec_changed(old, new, status_apart=kind.status):
            new["metadata"]["generation"] = int(old["metadata"]["generation"]) + 1
        if new == old:
            return copy.deepcopy(old)
        return self._store(kind, new, "MODIFIED")

    async def replace(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        self._check(kind, "update", meta["name"])
        key = self._key(kind, meta.get("namespace", "default"), meta["name"])
        self.writes.append(("update", kind, meta["name"]))
        old = self.objects.get(key)
        if old is None:
            raise KubeError(404, "update", kind, "not found", meta["name"])
        if meta.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise Conflict(409, "update", kind, "the object has been modified", meta["name"])
        new = copy.deepcopy(obj)
        new["metadata"] = {
            **meta,
            **{k: old["metadata"][k] for k in ("uid", "creationTimestamp", "generation")},
        }
        if kind.status:
            new.pop("status", None)
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
        if ssa.spec_changed(old, new, status_apart=kind.status):
            new["metadata"]["generation"] = int(old["metadata"]["generation"]) + 1
        ssa.record_update(old, new, FIELD_MANAGER, self.owners.setdefault(key, {}), status_apart=kind.status)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            return copy.deepcopy(old)
        return self._store(kind, new, "MODIFIED")

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        self._check(kind, "patch", name)
        if not kind.status:
            raise KubeError(404, "patch", kind, "it has no status subresource", name)
        key = self._key(kind, namespace, name)
        self.writes.append(("status", kind, name))
        old = self.objects.get(key)
        if old is None:
            raise KubeError(404, "patch", kind, "not found", name)
        new = copy.deepcopy(old)
        new["status"] = merge(old.get("status") or {}, status)
        if new == old:
            return copy.deepcopy(old)
        return self._store(kind, new, "MODIFIED")

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        self._check(kind, "delete", name)
        self.writes.append(("delete", kind, name))
        key = self._key(kind, namespace, name)
        old = self.objects.pop(key, None)
        self.owners.pop(key, None)
        if old is not None:
            self._version += 1
            old["metadata"]["resourceVersion"] = str(self._version)
            self._notify(kind, "DELETED", old)
        return old is not None

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        self._check(EVENT, "create")
        self._create(EVENT, event_for(regarding, reason, message, warning=warning))

    async def close(self) -> None:
        """Nothing to close."""


def event_for(regarding: Obj, reason: str, message: str, *, warning: bool) -> Obj:
    """A core/v1 Event about `regarding`, as `kubectl describe` lists them (the real client sends the same)."""
    meta = regarding["metadata"]
    stamp = now()
    involved = {
        "apiVersion": regarding.get("apiVersion"),
        "kind": regarding.get("kind"),
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {k: v for k, v in involved.items() if v is not None},
        "reason": reason,
        "message": message,
        "type": "Warning" if warning else "Normal",
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": FIELD_MANAGER,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
