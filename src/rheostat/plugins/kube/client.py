"""The real client: `KubeAPI` on lightkube's AsyncClient, with generic resources for any `Kind`.

Errors are mapped at this boundary (see `errors`); 429, 5xx and connection errors are retried with capped
exponential backoff, honouring Retry-After. Watches are real watch streams: one LIST to start (every object
ADDED), then WATCH from its resourceVersion, resumed from the last one seen after a dropped stream, and a
relist only on 410 Gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx2
from lightkube import AsyncClient
from lightkube.config.kubeconfig import SERVICE_ACCOUNT, KubeConfig
from lightkube.core.exceptions import ConfigError, NotReadyError
from lightkube.core.resource import ApiInfo, ResourceDef
from lightkube.generic_resource import (
    GenericGlobalResource,
    GenericGlobalStatus,
    GenericNamespacedResource,
    GenericNamespacedStatus,
)
from lightkube.types import PatchType

from rheostat.plugins.kube.api import (
    FIELD_MANAGER,
    Kind,
    KubeError,
    NotInstalled,
    Obj,
    Unavailable,
    WatchType,
    WriteCheck,
)
from rheostat.plugins.kube.errors import Retry, failure, is_gone, retried
from rheostat.plugins.kube.kinds import EVENT, kind_of
from rheostat.plugins.kube.memory import event_for

T = TypeVar("T")
_EVENTS: dict[str, WatchType] = {"ADDED": "ADDED", "MODIFIED": "MODIFIED", "DELETED": "DELETED"}
Objs = list[Obj]  # `list` is a method name in the classes below
_VERBS = ["delete", "get", "global_list", "global_watch", "list", "patch", "post", "put", "watch"]
WRITES = frozenset({"create", "update", "patch", "delete"})


@functools.cache
def resource(kind: Kind) -> Any:
    """A lightkube generic resource class for `kind`. Not put in lightkube's global registry: a typed model
    of the same kind imported elsewhere must not clash with it."""
    info = ApiInfo(
        resource=ResourceDef(kind.group, kind.version, kind.kind), plural=kind.plural, verbs=_VERBS
    )
    status_info = ApiInfo(
        resource=info.resource,
        parent=info.resource,
        plural=kind.plural,
        verbs=["get", "patch", "put"],
        action="status",
    )
    main, status = (
        (GenericNamespacedResource, GenericNamespacedStatus)
        if kind.namespaced
        else (GenericGlobalResource, GenericGlobalStatus)
    )
    status_cls = type(f"{kind.kind}Status", (status,), {"_api_info": status_info})
    return type(kind.kind, (main,), {"_api_info": info, "Status": status_cls})


def _plain(obj: Any) -> Obj:
    return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)


def _config(path: str | None, context: str | None) -> KubeConfig:
    """--kubeconfig, else $KUBECONFIG (its first file), else the pod's service account, else ~/.kube/config."""
    if path:
        return KubeConfig.from_file(path)
    if env := os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]:
        return KubeConfig.from_file(env)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and Path(SERVICE_ACCOUNT, "token").is_file() and not context:
        return KubeConfig.from_service_account()
    return KubeConfig.from_file("~/.kube/config")


# Requests in flight at once (watches aside). Past the connections httpx keeps alive (20), each request
# waits in httpcore's pool, which rescans its whole queue for every request it places: with 500 canaries
# stepping together that scan was a fifth of the controller's CPU (bench/kube_scale.py).
IN_FLIGHT = 16


class LightkubeAPI:
    """`fence`, when given, is asked before every attempt of a write (retries included): a write waiting on
    its retries when leadership is lost does not go out (see lease.py)."""

    def __init__(
        self, client: AsyncClient, *, retry: Retry | None = None, fence: WriteCheck | None = None
    ) -> None:
        self.client = client
        self.retry = retry or Retry()
        self.slots = asyncio.Semaphore(IN_FLIGHT)
        self.fence = fence

    @property
    def namespace(self) -> str:
        """The kubeconfig context's namespace; in a pod, the pod's own."""
        return str(self.client.namespace)

    @classmethod
    def from_kubeconfig(
        cls,
        path: str | None = None,
        context: str | None = None,
        *,
        retry: Retry | None = None,
        fence: WriteCheck | None = None,
    ) -> LightkubeAPI:
        """The cluster of a kubeconfig file (and context); ValueError names what is wrong with it."""
        try:
            config = _config(path, context).get(context_name=context)
        except (ConfigError, KeyError, OSError) as exc:
            where = path or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
            raise ValueError(f"kubeconfig {where}: {exc}") from exc
        return cls(AsyncClient(config=config, field_manager=FIELD_MANAGER), retry=retry, fence=fence)

    async def close(self) -> None:
        await self.client.close()

    async def _call(self, verb: str, kind: Kind, name: str, fn: Callable[[], Awaitable[T]]) -> T:
        fence = self.fence
        checked = fn
        if fence is not None and verb in WRITES:

            async def fenced() -> T:
                fence(verb, kind, name)
                return await fn()

            checked = fenced

        async def attempt() -> T:  # a slot per attempt: a request backing off holds none
            async with self.slots:
                return await checked()

        return await retried(self.retry, verb, kind, name, attempt)

    # -- the port ---------------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        res = resource(kind)
        ns = namespace if kind.namespaced else None
        try:
            return _plain(
                await self._call("get", kind, name, lambda: self.client.get(res, name, namespace=ns))
            )
        except KubeError as exc:
            if exc.status == 404 and not isinstance(exc, NotInstalled):
                return None
            raise

    async def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]:
        items, _ = await self._list(kind, namespace, labels)
        return items

    async def _list(
        self, kind: Kind, namespace: str | None, labels: Mapping[str, str] | None = None
    ) -> tuple[Objs, str | None]:
        res = resource(kind)
        ns = (namespace or "*") if kind.namespaced else None

        async def once() -> tuple[Objs, str | None]:
            found = self.client.list(res, labels=dict(labels) if labels else None, namespace=ns)
            items = [_plain(o) async for o in found]
            try:
                return items, found.resourceVersion
            except NotReadyError:  # a list without metadata.resourceVersion
                return items, None

        return await self._call("list", kind, "", once)

    async def watch(self, kind: Kind, namespace: str | None = None) -> AsyncIterator[tuple[WatchType, Obj]]:
        res = resource(kind)
        ns = (namespace or "*") if kind.namespaced else None
        seen: dict[tuple[str, str], Obj] = {}
        version: str | None = None
        failures = 0
        while True:
            if version is None:  # the first time, and after 410 Gone: (re)list, tell what changed meanwhile
                items, version = await self._list(kind, namespace)
                listed = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in items}
                for key in [k for k in seen if k not in listed]:
                    yield "DELETED", seen.pop(key)
                for key, obj in listed.items():
                    old = seen.get(key)
                    seen[key] = obj
                    if old is None:
                        yield "ADDED", obj
                    elif old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                        yield "MODIFIED", obj
            stream = cast(
                AsyncGenerator[tuple[str, Any]],
                self.client.watch(res, resource_version=version, namespace=ns),
            )
            try:
                async with contextlib.aclosing(stream) as events:
                    async for typ, raw in events:
                        failures = 0
                        obj = _plain(raw)
                        version = obj.get("metadata", {}).get("resourceVersion") or version
                        if typ not in _EVENTS:
                            continue  # BOOKMARK: only its resourceVersion matters
                        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
                        if typ == "DELETED":
                            seen.pop(key, None)
                        else:
                            seen[key] = obj
                        yield _EVENTS[typ], obj
            except httpx2.HTTPError as exc:
                if is_gone(exc):
                    version = None
                    continue
                error = failure(exc, "watch", kind, "")
                if not isinstance(error, Unavailable):
                    raise error from exc
                failures += 1
                if failures >= self.retry.tries:
                    raise error from exc
                await self.retry.sleep(self.retry.delay(failures, exc))

    async def create(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        body = resource(kind)(obj)
        return _plain(
            await self._call("create", kind, obj["metadata"]["name"], lambda: self.client.create(body))
        )

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        return await self.apply_as(kind_of(obj["apiVersion"], obj["kind"]), obj, force=force)

    async def apply_as(self, kind: Kind, obj: Obj, *, force: bool = False, dry_run: bool = False) -> Obj:
        """Server-side apply of an object of any `kind` (GitOps applies kinds Rheostat does not know);
        with `dry_run` the server validates and answers, and stores nothing."""
        body = resource(kind)(obj)
        name = obj["metadata"]["name"]
        return _plain(
            await self._call(
                "patch",
                kind,
                name,
                lambda: self.client.apply(body, field_manager=FIELD_MANAGER, force=force, dry_run=dry_run),
            )
        )

    def impersonating(self, user: str) -> LightkubeAPI:
        """The same cluster as `user` (a Kustomization's serviceAccountName): lightkube has no impersonation
        setting, so a second client sends Kubernetes' Impersonate-User header on every request."""
        config = self.client.config
        client = AsyncClient(config=config, field_manager=FIELD_MANAGER)
        # lightkube keeps its httpx client in a private attribute; the header is the only thing set on it
        client._client._client.headers["Impersonate-User"] = user
        return LightkubeAPI(client, retry=self.retry)

    async def replace(self, obj: Obj) -> Obj:
        kind = kind_of(obj["apiVersion"], obj["kind"])
        body = resource(kind)(obj)
        return _plain(
            await self._call("update", kind, obj["metadata"]["name"], lambda: self.client.replace(body))
        )

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        if not kind.status:
            raise KubeError(404, "patch", kind, "it has no status subresource", name)
        res = resource(kind).Status
        ns = namespace if kind.namespaced else None
        patch = {"status": status}
        return _plain(
            await self._call(
                "patch",
                kind,
                name,
                lambda: self.client.patch(res, name, patch, patch_type=PatchType.MERGE, namespace=ns),
            )
        )

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        res = resource(kind)
        ns = namespace if kind.namespaced else None
        try:
            await self._call("delete", kind, name, lambda: self.client.delete(res, name, namespace=ns))
        except KubeError as exc:
            if exc.status == 404 and not isinstance(exc, NotInstalled):
                return False
            raise
        return True

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        body = resource(EVENT)(event_for(regarding, reason, message, warning=warning))
        await self._call("create", EVENT, "", lambda: self.client.create(body))
