"""One contract for the Kubernetes port, run over MemoryKube and over LightkubeAPI against the kmock server
(tests/kubeapi.py): what the plugins may rely on from either."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rheostat.plugins.kube.api import (
    Conflict,
    Forbidden,
    Kind,
    KubeAPI,
    KubeError,
    NotInstalled,
    Obj,
    Unavailable,
)
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.errors import Retry
from rheostat.plugins.kube.kinds import CANARY, CONFIGMAP, DEPLOYMENT, EVENT, VIRTUAL_SERVICE
from rheostat.plugins.kube.memory import MemoryKube
from tests import kubeapi
from tests.kube_schemas import assert_valid
from tests.kubeapi import KubeServer

kube_server = kubeapi.kube_server  # the fixtures, made visible here
kubeconfig = kubeapi.kubeconfig


@dataclass
class Cluster:
    """The port and what a test does to the cluster behind it."""

    api: KubeAPI
    set_status: Callable[[Kind, str, str, Obj], None]
    fail: Callable[..., None]
    uninstall: Callable[[Kind], None]
    add: Callable[[Obj], Obj]
    drop_watches: Callable[[], None] = lambda: None
    compact: Callable[[], None] = lambda: None
    server: KubeServer | None = None
    sleeps: list[float] = field(default_factory=list)


@pytest.fixture(params=["memory", "lightkube"])
async def cluster(
    request: pytest.FixtureRequest, kube_server: KubeServer, kubeconfig: Path
) -> AsyncIterator[Cluster]:
    if request.param == "memory":
        mem = MemoryKube()
        yield Cluster(mem, mem.set_status, mem.fail, mem.missing.add, mem.add)
        return
    server = kube_server
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.sleep(0)

    api = LightkubeAPI.from_kubeconfig(
        str(request.getfixturevalue("kubeconfig")), None, retry=Retry(sleep=sleep)
    )
    try:
        yield Cluster(
            api,
            server.set_status,
            server.fail,
            server.uninstall,
            server.add,
            server.drop_watches,
            server.compact,
            server,
            sleeps,
        )
    finally:
        await api.close()


def deployment(name: str = "podinfo", ns: str = "test", replicas: int = 2, **labels: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, **labels}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/stefanprodan/podinfo:6.0.0"}]},
            },
        },
    }


def canary(name: str = "podinfo", ns: str = "test") -> Obj:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 9898},
            "analysis": {"interval": "1m", "threshold": 5, "maxWeight": 50, "stepWeight": 10},
        },
    }


# -- read and write -------------------------------------------------------------------------------


async def test_get_of_a_missing_object_is_none(cluster: Cluster) -> None:
    assert await cluster.api.get(DEPLOYMENT, "test", "nope") is None


async def test_apply_creates_with_server_filled_metadata(cluster: Cluster) -> None:
    made = await cluster.api.apply(deployment())
    got = await cluster.api.get(DEPLOYMENT, "test", "podinfo")
    assert got == made
    meta = got["metadata"]
    assert meta["generation"] == 1
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert got["spec"]["replicas"] == 2


async def test_generation_moves_on_spec_changes_only_and_a_noop_apply_writes_nothing(
    cluster: Cluster,
) -> None:
    first = await cluster.api.apply(deployment())
    same = await cluster.api.apply(deployment())
    assert same["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    relabelled = await cluster.api.apply(deployment(tier="web"))
    assert relabelled["metadata"]["generation"] == 1
    assert relabelled["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    scaled = await cluster.api.apply(deployment(replicas=5, tier="web"))
    assert scaled["metadata"]["generation"] == 2
    assert scaled["spec"]["replicas"] == 5


async def test_apply_removes_what_it_no_longer_sets(cluster: Cluster) -> None:
    await cluster.api.apply(deployment(tier="web"))
    after = await cluster.api.apply(deployment())
    assert "tier" not in after["metadata"]["labels"]


async def test_apply_conflicts_with_another_managers_field_unless_forced(cluster: Cluster) -> None:
    cluster.add(deployment(replicas=3))
    with pytest.raises(Conflict, match="replicas"):
        await cluster.api.apply(deployment(replicas=1))
    forced = await cluster.api.apply(deployment(replicas=1), force=True)
    assert forced["spec"]["replicas"] == 1


async def test_list_filters_by_namespace_and_labels(cluster: Cluster) -> None:
    await cluster.api.apply(deployment("a", tier="web"))
    await cluster.api.apply(deployment("b", tier="db"))
    await cluster.api.apply(deployment("c", ns="other", tier="web"))
    names = [o["metadata"]["name"] for o in await cluster.api.list(DEPLOYMENT, "test", {"tier": "web"})]
    assert names == ["a"]
    everywhere = await cluster.api.list(DEPLOYMENT, None, {"tier": "web"})
    assert sorted(o["metadata"]["name"] for o in everywhere) == ["a", "c"]
    assert len(await cluster.api.list(DEPLOYMENT, "test")) == 2


async def test_replace_with_a_stale_resource_version_is_a_conflict(cluster: Cluster) -> None:
    read = await cluster.api.apply(deployment())
    cluster.set_status(DEPLOYMENT, "test", "podinfo", {"replicas": 2})  # someone wrote since we read
    read["spec"]["replicas"] = 4
    with pytest.raises(Conflict):
        await cluster.api.replace(read)
    fresh = await cluster.api.get(DEPLOYMENT, "test", "podinfo")
    assert fresh is not None
    fresh["spec"]["replicas"] = 4
    fresh["status"] = {"replicas": 99}  # a main-resource write never changes status
    done = await cluster.api.replace(fresh)
    assert done["spec"]["replicas"] == 4
    assert done["status"] == {"replicas": 2}
    assert done["metadata"]["generation"] == 2


async def test_patch_status_changes_only_the_status(cluster: Cluster) -> None:
    made = await cluster.api.apply(canary())
    patched = await cluster.api.patch_status(
        CANARY, "test", "podinfo", {"phase": "Progressing", "canaryWeight": 10}
    )
    assert patched["status"] == {"phase": "Progressing", "canaryWeight": 10}
    assert patched["spec"] == made["spec"]
    assert patched["metadata"]["generation"] == 1
    assert patched["metadata"]["resourceVersion"] != made["metadata"]["resourceVersion"]
    merged = await cluster.api.patch_status(CANARY, "test", "podinfo", {"canaryWeight": 20})
    assert merged["status"] == {"phase": "Progressing", "canaryWeight": 20}
    reapplied = await cluster.api.apply({**canary(), "status": {"phase": "Failed"}})
    assert reapplied["status"]["phase"] == "Progressing"


async def test_patch_status_of_a_missing_object_is_a_404_not_a_missing_crd(cluster: Cluster) -> None:
    with pytest.raises(KubeError) as caught:
        await cluster.api.patch_status(CANARY, "test", "nope", {"phase": "Failed"})
    assert caught.value.status == 404
    assert not isinstance(caught.value, NotInstalled)


async def test_delete_says_whether_it_existed(cluster: Cluster) -> None:
    await cluster.api.apply(deployment())
    assert await cluster.api.delete(DEPLOYMENT, "test", "podinfo") is True
    assert await cluster.api.get(DEPLOYMENT, "test", "podinfo") is None
    assert await cluster.api.delete(DEPLOYMENT, "test", "podinfo") is False


async def test_event_is_a_valid_core_event_on_the_object(cluster: Cluster, shared: Path) -> None:
    target = await cluster.api.apply(canary())
    await cluster.api.event(target, "Synced", "Advance podinfo.test canary weight 10", warning=True)
    (event,) = await cluster.api.list(EVENT, "test")
    assert event["involvedObject"]["uid"] == target["metadata"]["uid"]
    assert (event["reason"], event["type"]) == ("Synced", "Warning")
    assert event["message"] == "Advance podinfo.test canary weight 10"
    assert_valid(
        {k: v for k, v in event.items() if k != "metadata"} | {"metadata": {"name": "e", "namespace": "test"}}
    )


# -- watch ----------------------------------------------------------------------------------------


async def next_event(stream: AsyncIterator[tuple[str, Obj]]) -> tuple[str, str, Any]:
    typ, obj = await asyncio.wait_for(anext(stream), 5)
    return typ, obj["metadata"]["name"], (obj.get("status") or {}).get("phase")


@contextlib.asynccontextmanager
async def watching(
    cluster: Cluster, kind: Kind, ns: str | None
) -> AsyncIterator[AsyncIterator[tuple[str, Obj]]]:
    stream = cluster.api.watch(kind, ns)
    try:
        yield stream
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_watch_gives_existing_objects_then_changes(cluster: Cluster) -> None:
    await cluster.api.apply(canary("a"))
    await cluster.api.apply(canary("elsewhere", ns="other"))
    async with watching(cluster, CANARY, "test") as stream:
        assert await next_event(stream) == ("ADDED", "a", None)
        await cluster.api.apply(canary("b"))
        assert await next_event(stream) == ("ADDED", "b", None)
        cluster.set_status(CANARY, "test", "a", {"phase": "Progressing"})
        assert await next_event(stream) == ("MODIFIED", "a", "Progressing")
        await cluster.api.delete(CANARY, "test", "b")
        assert await next_event(stream) == ("DELETED", "b", None)


async def test_watch_survives_a_dropped_stream_without_repeating_or_missing(cluster: Cluster) -> None:
    await cluster.api.apply(canary("a"))
    async with watching(cluster, CANARY, None) as stream:
        assert await next_event(stream) == ("ADDED", "a", None)  # from the list
        await cluster.api.apply(canary("b"))
        assert await next_event(stream) == ("ADDED", "b", None)  # from the watch stream
        cluster.drop_watches()
        cluster.set_status(CANARY, "test", "a", {"phase": "Succeeded"})
        assert await next_event(stream) == ("MODIFIED", "a", "Succeeded")
        await cluster.api.apply(canary("c"))
        assert await next_event(stream) == ("ADDED", "c", None)
    if cluster.server is not None:
        assert cluster.server.verbs()["list"] == 1  # one LIST to start, then watches only
        assert cluster.server.verbs()["watch"] == 2


async def test_watch_relists_after_410_gone_and_reports_what_changed_meanwhile(cluster: Cluster) -> None:
    await cluster.api.apply(canary("a"))
    await cluster.api.apply(canary("b"))
    async with watching(cluster, CANARY, "test") as stream:
        assert {await next_event(stream), await next_event(stream)} == {
            ("ADDED", "a", None),
            ("ADDED", "b", None),
        }
        await cluster.api.apply(canary("c"))
        assert await next_event(stream) == ("ADDED", "c", None)  # the watch stream is open
        cluster.drop_watches()
        await cluster.api.delete(CANARY, "test", "b")
        cluster.set_status(CANARY, "test", "a", {"phase": "Failed"})
        cluster.compact()  # the server forgot those changes: resuming answers 410 Gone, the client relists
        got = {await next_event(stream), await next_event(stream)}
        assert got == {("DELETED", "b", None), ("MODIFIED", "a", "Failed")}
        await cluster.api.apply(canary("d"))
        assert await next_event(stream) == ("ADDED", "d", None)
    if cluster.server is not None:
        assert cluster.server.verbs()["list"] == 2


# -- errors ---------------------------------------------------------------------------------------


async def test_a_missing_crd_is_not_installed_and_names_it(cluster: Cluster) -> None:
    cluster.uninstall(VIRTUAL_SERVICE)
    with pytest.raises(NotInstalled, match=r"VirtualService CRD \(virtualservices.networking.istio.io"):
        await cluster.api.get(VIRTUAL_SERVICE, "test", "podinfo")
    with pytest.raises(NotInstalled):
        await cluster.api.list(VIRTUAL_SERVICE, "test")
    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "x"}}
    with pytest.raises(NotInstalled):
        await cluster.api.apply(vs)


async def test_forbidden_names_verb_and_resource(cluster: Cluster) -> None:
    cluster.fail(403, verb="patch", kind=VIRTUAL_SERVICE)
    vs = {"apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService", "metadata": {"name": "x"}}
    with pytest.raises(Forbidden, match=r"cannot patch virtualservices.networking.istio.io"):
        await cluster.api.apply(vs)


async def test_too_many_requests_is_retried_then_succeeds(cluster: Cluster) -> None:
    if cluster.server is not None:
        cluster.server.fail(429, 2, retry_after=3)
    else:
        cluster.fail(429, 2)
    made = await cluster.api.apply(deployment())
    assert made["metadata"]["generation"] == 1
    if cluster.server is not None:
        assert cluster.sleeps == [3, 3]  # Retry-After honoured
        assert cluster.server.verbs()["patch"] == 3


async def test_server_errors_retried_with_capped_backoff_then_unavailable(cluster: Cluster) -> None:
    cluster.fail(500, 100)
    with pytest.raises(Unavailable, match="after 5 tries"):
        await cluster.api.get(CONFIGMAP, "test", "settings")
    if cluster.server is not None:
        assert cluster.sleeps == [0.2, 0.4, 0.8, 1.6]
        assert cluster.server.verbs()["get"] == 5


async def test_connection_refused_is_unavailable(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )

    async def no_sleep(_: float) -> None:
        return None

    api = LightkubeAPI.from_kubeconfig(str(config), retry=Retry(sleep=no_sleep))
    try:
        with pytest.raises(Unavailable, match="cannot reach the API server"):
            await api.get(DEPLOYMENT, "test", "podinfo")
    finally:
        await api.close()


# -- what only the real client shows ----------------------------------------------------------------


async def test_apply_is_server_side_apply_as_rheostat(kube_server: KubeServer, kubeconfig: Path) -> None:
    api = LightkubeAPI.from_kubeconfig(str(kubeconfig))
    try:
        await api.apply(deployment())
        await api.apply(deployment(replicas=3), force=True)
        await api.patch_status(DEPLOYMENT, "test", "podinfo", {"replicas": 3})
    finally:
        await api.close()
    assert [(a.content_type, a.field_manager, a.force) for a in kube_server.applies] == [
        ("application/apply-patch+yaml", "rheostat", False),
        ("application/apply-patch+yaml", "rheostat", True),
    ]
    status_call = kube_server.calls[-1]
    assert (status_call.verb, status_call.subresource, status_call.content_type) == (
        "patch",
        "status",
        "application/merge-patch+json",
    )


def test_kubeconfig_context_is_chosen_and_an_unknown_one_is_named(kubeconfig: Path) -> None:
    with pytest.raises(ValueError, match="Context 'nope' not found"):
        LightkubeAPI.from_kubeconfig(str(kubeconfig), "nope")
    with pytest.raises(ValueError, match="not found"):
        LightkubeAPI.from_kubeconfig(str(kubeconfig.parent / "missing"))


async def test_kubeconfig_from_the_environment(
    kube_server: KubeServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api = LightkubeAPI.from_kubeconfig(None, None)
    try:
        assert await api.list(DEPLOYMENT, "test") == []
    finally:
        await api.close()
    assert kube_server.verbs()["list"] == 1
