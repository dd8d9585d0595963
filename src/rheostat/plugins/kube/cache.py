"""Reads from watch-fed caches, as an informer serves a Kubernetes controller: a tick at rest asks the API
server nothing. Writes go through to the API and update the cache with what it answered (read-your-writes).

A kind is cached from its first read on: one LIST fills the cache, then a watch keeps it current (a broken
watch lists again). A kind the server does not serve (its CRD is not installed) or does not let us watch is
not cached: reads go to the API, which says why.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from rheostat.plugins.kube.api import Conflict, Kind, KubeAPI, KubeError, Obj, WatchType
from rheostat.plugins.kube.kinds import kind_of
from rheostat.plugins.kube.memory import matches
from rheostat.util.backoff import Backoff

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name)
RETRY_S = 30.0  # how long a kind that could not be listed is read from the API before listing it again


def _version(obj: Obj) -> int | None:
    found = obj.get("metadata", {}).get("resourceVersion")
    return int(found) if isinstance(found, str) and found.isdigit() else None


def _newer(have: Obj, new: Obj) -> bool:
    """True when `have` is a later version than `new` (resourceVersions are etcd revisions: comparable in
    practice; when either is not a number, the newest to arrive wins)."""
    a, b = _version(have), _version(new)
    return a is not None and b is not None and a > b


def _copy(obj: Obj) -> Obj:
    """A private copy for a reader (callers may change what they read). Objects are plain JSON values, which
    pickle copies three times faster than copy.deepcopy: most of a tick at rest went to copying."""
    copied: Obj = pickle.loads(pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))
    return copied


def _slim(obj: Obj) -> Obj:
    """The object as cached: without `metadata.managedFields` (the server's bookkeeping, often the larger part
    of an object; nothing reads it, and a PUT without it leaves the server's as it is)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


class _Informer:
    def __init__(self, api: KubeAPI, kind: Kind, namespace: str | None) -> None:
        self.api = api
        self.kind = kind
        self.namespace = namespace
        self.objects: dict[Key, Obj] = {}
        self.synced = asyncio.Event()
        self.failed: KubeError | None = None  # not cacheable (now): reads go to the API
        self.failed_at = 0.0
        self.task: asyncio.Task[None] | None = None

    def key(self, obj: Obj) -> Key:
        meta = obj.get("metadata", {})
        return (meta.get("namespace", "") if self.kind.namespaced else "", meta["name"])

    def put(self, obj: Obj) -> None:
        """Keep `obj` unless the cache already holds a newer version: a write's answer can arrive after the
        watch reported a later change (the kubelet's status), and must not put the older one back."""
        key = self.key(obj)
        have = self.objects.get(key)
        if have is None or not _newer(have, obj):
            self.objects[key] = _slim(obj)

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                listed = await self.api.list(self.kind, self.namespace)
                self.objects = {self.key(o): _slim(o) for o in listed}
                self.synced.set()
                async for event, obj in self.api.watch(self.kind, self.namespace):
                    backoff.reset()
                    if event == "DELETED":
                        self.objects.pop(self.key(obj), None)
                    else:
                        self.put(obj)
                await asyncio.sleep(backoff.delay_s)  # the watch ended: list again, a little later
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, KubeError) and not self.synced.is_set():
                    # never listed: reads go to the API, which says why
                    self.failed, self.failed_at = exc, time.monotonic()
                    self.synced.set()
                    return
                await backoff.wait(log, f"watch of {self.kind} (listing again)", exc)


class CachedKube:
    """A `KubeAPI` whose reads of `kinds` are served from caches; everything else passes through."""

    def __init__(self, api: KubeAPI, kinds: Iterable[Kind], namespace: str | None = None) -> None:
        self.api = api
        self.cached = frozenset(kinds)
        self.namespace = namespace
        self._informers: dict[Kind, _Informer] = {}

    async def _informer(self, kind: Kind, namespace: str | None) -> _Informer | None:
        if kind not in self.cached or (self.namespace is not None and namespace != self.namespace):
            return None
        inf = self._informers.get(kind)
        if inf is not None and inf.failed is not None and time.monotonic() - inf.failed_at > RETRY_S:
            inf = None  # a CRD installed since, or RBAC granted: try to cache it again
        if inf is None:
            inf = self._informers[kind] = _Informer(self.api, kind, self.namespace)
            inf.task = asyncio.get_running_loop().create_task(inf.run(), name=f"informer:{kind.plural}")
        await inf.synced.wait()
        return None if inf.failed is not None else inf

    # -- reads -------------------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        inf = await self._informer(kind, namespace)
        if inf is None:
            return await self.api.get(kind, namespace, name)
        found = inf.objects.get((namespace if kind.namespaced else "", name))
        return _copy(found) if found is not None else None

    async def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        inf = (
            await self._informer(kind, namespace) if namespace is not None or self.namespace is None else None
        )
        if inf is None:
            return await self.api.list(kind, namespace, labels)
        return [
            _copy(o)
            for (ns, _), o in sorted(inf.objects.items())
            if (namespace is None or ns == namespace) and matches(o, labels)
        ]

    def watch(self, kind: Kind, namespace: str | None = None) -> AsyncIterator[tuple[WatchType, Obj]]:
        return self.api.watch(kind, namespace)

    # -- writes: through to the API, and the answer into the cache -------------------------------------

    def _remember(self, kind: Kind, obj: Obj) -> Obj:
        inf = self._informers.get(kind)
        if inf is not None and inf.failed is None:
            inf.put(_copy(obj))
        return obj

    async def _refresh(self, kind: Kind, namespace: str, name: str) -> None:
        """After a conflict the cache may be behind: read the object from the API itself."""
        inf = self._informers.get(kind)
        if inf is None:
            return
        found = await self.api.get(kind, namespace, name)
        if found is None:
            inf.objects.pop((namespace if kind.namespaced else "", name), None)
        else:
            inf.put(found)

    async def create(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        return self._remember(kind, await self.api.create(obj))

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        try:
            return self._remember(kind, await self.api.apply(obj, force=force))
        except Conflict:
            meta = obj["metadata"]
            await self._refresh(kind, meta.get("namespace", ""), meta["name"])
            raise

    async def replace(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        try:
            return self._remember(kind, await self.api.replace(obj))
        except Conflict:
            meta = obj["metadata"]
            await self._refresh(kind, meta.get("namespace", ""), meta["name"])
            raise

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        return self._remember(kind, await self.api.patch_status(kind, namespace, name, status))

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        existed = await self.api.delete(kind, namespace, name)
        inf = self._informers.get(kind)
        if inf is not None:
            inf.objects.pop((namespace if kind.namespaced else "", name), None)
        return existed

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        await self.api.event(regarding, reason, message, warning=warning)

    async def close(self) -> None:
        tasks = [i.task for i in self._informers.values() if i.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._informers.clear()
        await self.api.close()
