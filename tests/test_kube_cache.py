"""Reads from watch-fed caches (plugins/kube/cache.py), over the real client against the kmock server: after
the first read of a kind, reads ask the API server nothing, yet see every change and every own write."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from rheostat.plugins.kube.api import Conflict, NotInstalled, Obj
from rheostat.plugins.kube.cache import CachedKube
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.kinds import DEPLOYMENT, READ_CACHED, VIRTUAL_SERVICE
from rheostat.plugins.kube.memory import MemoryKube
from tests import kubeapi
from tests.kubeapi import KubeServer

kube_server = kubeapi.kube_server  # the fixtures, made visible here
kubeconfig = kubeapi.kubeconfig


def deployment(name: str, ns: str = "test", image: str = "podinfo:6.0.0", **labels: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, **labels}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


@pytest.fixture
async def cached(kube_server: KubeServer, kubeconfig: Path) -> AsyncIterator[CachedKube]:
    api = CachedKube(LightkubeAPI.from_kubeconfig(str(kubeconfig), None), READ_CACHED)
    try:
        yield api
    finally:
        await api.close()


def reads(server: KubeServer) -> int:
    verbs = server.verbs()
    return verbs["get"] + verbs["list"]


async def until(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check() if asyncio.iscoroutinefunction(check) else check():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {check}")


async def test_after_the_first_read_reads_ask_the_server_nothing(
    cached: CachedKube, kube_server: KubeServer
) -> None:
    kube_server.add(deployment("podinfo"))
    kube_server.add(deployment("other", ns="prod", tier="web"))
    first = await cached.get(DEPLOYMENT, "test", "podinfo")
    assert first is not None and first["metadata"]["name"] == "podinfo"
    before = reads(kube_server)
    for _ in range(20):
        assert await cached.get(DEPLOYMENT, "test", "podinfo") is not None
        assert await cached.get(DEPLOYMENT, "test", "missing") is None
    assert [o["metadata"]["name"] for o in await cached.list(DEPLOYMENT, labels={"tier": "web"})] == ["other"]
    assert [o["metadata"]["name"] for o in await cached.list(DEPLOYMENT, "test")] == ["podinfo"]
    assert reads(kube_server) == before


async def test_changes_by_others_and_own_writes_are_seen(cached: CachedKube, kube_server: KubeServer) -> None:
    kube_server.add(deployment("podinfo"))
    assert await cached.get(DEPLOYMENT, "test", "podinfo") is not None
    kube_server.set_status(DEPLOYMENT, "test", "podinfo", {"availableReplicas": 1})  # the kubelet

    async def ready() -> bool:
        got = await cached.get(DEPLOYMENT, "test", "podinfo")
        return got is not None and (got.get("status") or {}).get("availableReplicas") == 1

    await until(ready)
    written = await cached.apply(deployment("podinfo-primary", image="podinfo:6.0.1"))
    got = await cached.get(DEPLOYMENT, "test", "podinfo-primary")  # at once: no wait for the watch
    assert got is not None and got["metadata"]["resourceVersion"] == written["metadata"]["resourceVersion"]
    await cached.delete(DEPLOYMENT, "test", "podinfo-primary")
    assert await cached.get(DEPLOYMENT, "test", "podinfo-primary") is None


async def test_a_conflict_refreshes_the_cache_so_a_retry_can_succeed(
    cached: CachedKube, kube_server: KubeServer
) -> None:
    kube_server.add(deployment("podinfo"))
    stale = await cached.get(DEPLOYMENT, "test", "podinfo")
    assert stale is not None
    kube_server.set_status(DEPLOYMENT, "test", "podinfo", {"replicas": 1})  # changed since it was read
    stale["spec"]["replicas"] = 0
    with pytest.raises(Conflict):
        await cached.replace(stale)
    fresh = await cached.get(DEPLOYMENT, "test", "podinfo")
    assert fresh is not None and fresh["status"] == {"replicas": 1}
    fresh["spec"]["replicas"] = 0
    assert (await cached.replace(fresh))["spec"]["replicas"] == 0


async def test_a_kind_the_server_does_not_serve_is_read_from_the_api_which_says_why(
    cached: CachedKube, kube_server: KubeServer
) -> None:
    kube_server.uninstall(VIRTUAL_SERVICE)
    with pytest.raises(NotInstalled, match="virtualservices"):
        await cached.get(VIRTUAL_SERVICE, "test", "podinfo")


class KubeletFirst(MemoryKube):
    """The kubelet reports the new Deployment ready, and the watch says so, before the write's answer is back."""

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        written = await super().apply(obj, force=force)
        meta = obj["metadata"]
        self.set_status(DEPLOYMENT, meta["namespace"], meta["name"], {"availableReplicas": 1})
        await asyncio.sleep(0.05)  # the watch delivers the newer version first
        return written


async def test_a_write_answered_after_a_later_change_does_not_put_the_older_version_back() -> None:
    api = CachedKube(KubeletFirst(), READ_CACHED)
    try:
        assert await api.get(DEPLOYMENT, "test", "podinfo-primary") is None  # the kind is cached from now on
        written = await api.apply(deployment("podinfo-primary"))
        assert "status" not in written
        got = await api.get(DEPLOYMENT, "test", "podinfo-primary")
        assert got is not None and got.get("status") == {"availableReplicas": 1}
    finally:
        await api.close()
