"""An in-memory API server for fast tests: resourceVersion, generation, status kept apart, label selectors,
watches. Server-side apply is approximated as a recursive merge (lists replaced), as kmock does."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Mapping
from typing import Any

from rheostat.plugins.kube.api import Conflict, Kind, KubeError, NotInstalled, Obj, WatchType
from rheostat.plugins.kube.kinds import EVENT, kind_of


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


class MemoryKube:
    def __init__(self, *, missing: tuple[Kind, ...] = ()) -> None:
        self.objects: dict[tuple[str, str, str, str], Obj] = {}  # (apiVersion, kind, ns, name)
        self.missing = set(missing)  # kinds whose CRD is "not installed"
        self.writes: list[tuple[str, Kind, str]] = []  # (verb, kind, name): what a test counts
        self._version = 0
        self._watchers: list[tuple[Kind, str | None, asyncio.Queue[tuple[WatchType, Obj]]]] = []

    # -- helpers ----------------------------------------------------------------------------------

    def _check(self, kind: Kind, verb: str) -> None:
        if kind in self.missing:
            raise NotInstalled(404, verb, kind, "the server could not find the requested resource")

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

    # -- the port ---------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        self._check(kind, "get")
        found = self.objects.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    async def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        self._check(kind, "list")
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
            for obj in await self.list(kind, namespace):
                yield "ADDED", obj
            while True:
                yield await queue.get()
        finally:
            self._watchers.remove(entry)

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        self._check(kind, "patch")
        meta = obj.get("metadata", {})
        key = self._key(kind, meta.get("namespace", ""), meta["name"])
        self.writes.append(("apply", kind, meta["name"]))
        old = self.objects.get(key)
        body = {k: v for k, v in obj.items() if k != "status"}
        if old is None:
            new = copy.deepcopy(body)
            new["metadata"]["generation"] = 1
            new["metadata"].setdefault("uid", f"uid-{self._version + 1}")
            return self._store(kind, new, "ADDED")
        new = merge(old, {k: v for k, v in body.items() if k != "metadata"})
        new["metadata"] = merge(old["metadata"], {k: v for k, v in body["metadata"].items()})
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        if new == old:
            return copy.deepcopy(old)
        return self._store(kind, new, "MODIFIED")

    async def replace(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        self._check(kind, "update")
        meta = obj["metadata"]
        key = self._key(kind, meta.get("namespace", ""), meta["name"])
        self.writes.append(("update", kind, meta["name"]))
        old = self.objects.get(key)
        if old is None:
            raise KubeError(404, "update", kind, "not found", meta["name"])
        if meta.get("resourceVersion") != old["metadata"]["resourceVersion"]:
            raise Conflict(409, "update", kind, "the object has been modified", meta["name"])
        new = copy.deepcopy(obj)
        new["status"] = copy.deepcopy(old.get("status"))
        if new.get("status") is None:
            new.pop("status")
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        return self._store(kind, new, "MODIFIED")

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        self._check(kind, "patch")
        key = self._key(kind, namespace, name)
        self.writes.append(("status", kind, name))
        old = self.objects.get(key)
        if old is None:
            raise KubeError(404, "patch", kind, "not found", name)
        new = copy.deepcopy(old)
        new["status"] = merge(old.get("status") or {}, status)
        return self._store(kind, new, "MODIFIED")

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        self._check(kind, "delete")
        self.writes.append(("delete", kind, name))
        old = self.objects.pop(self._key(kind, namespace, name), None)
        if old is not None:
            self._notify(kind, "DELETED", old)
        return old is not None

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        meta = regarding["metadata"]
        self._version += 1
        name = f"{meta['name']}.{self._version:x}"
        ev: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": meta.get("namespace", "default")},
            "involvedObject": {
                "apiVersion": regarding.get("apiVersion"),
                "kind": regarding.get("kind"),
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": {"component": "rheostat"},
        }
        self._store(EVENT, ev, "ADDED")

    async def aclose(self) -> None:
        """Nothing to close."""

    # -- what a test plays: the kubelet and the Deployment controller ---------------------------------

    def set_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> None:
        key = self._key(kind, namespace, name)
        new = copy.deepcopy(self.objects[key])
        new["status"] = status
        self._store(kind, new, "MODIFIED")
