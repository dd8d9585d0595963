"""`rheostat run` against a cluster, in-process on the in-memory API server: the Canaries in the cluster are
picked up, the Deployment is rolled out behind Istio, the status is Flagger's, and a restart goes on from it."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.reactor.controller import Controller
from rheostat.reactor.settings import ClusterSettings, Settings
from tests import podinfo
from tests.kubelet import kubelet

NS = "test"


def deployment(version: str) -> dict[str, Any]:
    return podinfo.deployment(NS, version)


def canary(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "targetPort": 9898, "gateways": ["public-gateway.istio-system"]},
            "analysis": {
                "interval": "200ms",
                "threshold": 2,
                "stepWeight": 25,
                "maxWeight": 50,
                "metrics": [],
            },
            **spec,
        },
    }


async def until(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def status(kube: MemoryKube) -> dict[str, Any]:
    obj = kube.objects.get(("flagger.app/v1beta1", "Canary", NS, "podinfo"))
    return (obj or {}).get("status") or {}


def weights(kube: MemoryKube) -> tuple[int, ...]:
    vs = kube.objects.get((kinds.VIRTUAL_SERVICE.api_version, "VirtualService", NS, "podinfo"))
    if vs is None:
        return ()
    default = next(r for r in vs["spec"]["http"] if r.get("name") == "default")
    return tuple(d["weight"] for d in default["route"])


def controller(kube: MemoryKube, data: Path) -> Controller:
    settings = Settings(
        repo=None, data_dir=data, sync_interval_s=0.05, cluster=ClusterSettings(mesh_provider="istio")
    )
    return Controller(settings, kube=kube)


@contextlib.asynccontextmanager
async def serving(
    kube: MemoryKube, data: Path, hold: Callable[[dict[str, Any]], bool] = lambda _: False
) -> AsyncIterator[Controller]:
    """A controller on `kube`, with the kubelet keeping the workloads ready (but `hold`), stopped at the end."""
    ctl = controller(kube, data)
    async with kubelet(kube, kube, hold=hold):
        await ctl.start()
        try:
            yield ctl
        finally:
            await ctl.stop()


async def test_a_deployment_behind_istio_is_promoted_and_the_status_is_flaggers(tmp_path: Path) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    kube.add(canary())
    seen: set[tuple[int, ...]] = set()
    async with serving(kube, tmp_path / "data"):
        await until(lambda: status(kube).get("phase") == "Initialized")
        primary = await kube.get(kinds.DEPLOYMENT, NS, "podinfo-primary")
        assert primary is not None and primary["spec"]["selector"]["matchLabels"] == {
            "app": "podinfo-primary"
        }
        target = await kube.get(kinds.DEPLOYMENT, NS, "podinfo")
        assert target is not None and target["spec"]["replicas"] == 0  # scaled to 0 between runs
        assert weights(kube) == (100, 0)
        promoted = status(kube)["lastPromotedSpec"]

        await kube.apply(deployment("6.0.1"))

        def done() -> bool:
            seen.add(weights(kube))
            return status(kube).get("phase") == "Succeeded"

        await until(done)
    assert {(75, 25), (50, 50)} <= seen and weights(kube) == (100, 0)
    primary = await kube.get(kinds.DEPLOYMENT, NS, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    st = status(kube)
    assert st["lastPromotedSpec"] == st["lastAppliedSpec"] != promoted
    assert {c["type"]: c["status"] for c in st["conditions"]}["Promoted"] == "True"
    events = [o for (_, k, _, _), o in kube.objects.items() if k == "Event"]
    reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == "podinfo"}
    assert {"Initialized", "NewRevision", "Advance", "Promoting", "Promoted"} <= reasons
    assert all(e["source"]["component"] == "rheostat" for e in events)


async def test_at_rest_nothing_is_written_to_the_cluster(tmp_path: Path) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    kube.add(canary())
    async with serving(kube, tmp_path / "data"):
        await until(lambda: status(kube).get("phase") == "Initialized")
        await asyncio.sleep(0.5)
        before = len(kube.writes)
        await asyncio.sleep(1.0)  # five intervals
        assert kube.writes[before:] == []


async def test_a_restarted_controller_goes_on_from_the_status_alone(tmp_path: Path) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    await kube.apply(
        canary(analysis={"interval": "200ms", "threshold": 2, "iterations": 3, "metrics": [], "webhooks": []})
    )
    async with kubelet(kube, kube):
        ctl = controller(kube, tmp_path / "first")
        await ctl.start()
        try:
            await until(lambda: status(kube).get("phase") == "Initialized")
            await kube.apply(deployment("6.0.1"))
            await until(lambda: status(kube).get("phase") == "Progressing")
        finally:
            await ctl.stop()
        mid = copy.deepcopy(status(kube))
        ctl = controller(kube, tmp_path / "second")  # a new data dir: only the cluster remembers
        await ctl.start()
        try:
            await until(lambda: status(kube).get("phase") == "Succeeded")
        finally:
            await ctl.stop()
    assert mid["lastAppliedSpec"] == status(kube)["lastPromotedSpec"]
    primary = await kube.get(kinds.DEPLOYMENT, NS, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")


async def test_a_provider_not_available_is_a_condition_on_the_canary(tmp_path: Path) -> None:
    kube = MemoryKube(missing=(kinds.VIRTUAL_SERVICE,))
    await kube.apply(deployment("6.0.0"))
    kube.add(canary(provider="appmesh"))
    async with serving(kube, tmp_path / "data"):
        cond = await until(
            lambda: {c["type"]: c for c in status(kube).get("conditions", [])}.get("RheostatTick")
        )
    assert (
        cond["status"] == "False"
        and "spec.provider: 'appmesh' is not available in this cluster" in cond["message"]
    )


async def test_the_secrets_templates_name_are_read_from_the_cluster_and_kept_in_memory_only(
    tmp_path: Path,
) -> None:
    kube = MemoryKube()
    token = "s3cr3t-t0ken"
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "prom-auth", "namespace": NS},
        "data": {"token": base64.b64encode(token.encode()).decode()},
    }
    await kube.apply(secret)
    await kube.apply(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": "error-rate", "namespace": NS},
            "spec": {
                "provider": {
                    "type": "prometheus",
                    "address": "http://127.0.0.1:9",
                    "secretRef": {"name": "prom-auth"},
                },
                "query": "1",
            },
        }
    )
    ctl = controller(kube, tmp_path / "data")
    await ctl.start()
    try:
        assert ctl.secrets.get(NS, "prom-auth") == {"token": token}
        rotated = {**secret, "data": {"token": base64.b64encode(b"rotated").decode()}}
        await kube.apply(rotated)
        await until(lambda: ctl.secrets.get(NS, "prom-auth") == {"token": "rotated"})
    finally:
        await ctl.stop()
    on_disk = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("*") if p.is_file())
    assert token.encode() not in on_disk and b"rotated" not in on_disk


async def test_a_blue_green_cut_over_with_the_kubernetes_provider_is_not_undone_by_the_next_tick(
    tmp_path: Path,
) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    bluegreen = {"interval": "200ms", "threshold": 2, "iterations": 2, "metrics": []}
    kube.add(canary(provider="kubernetes", service={"port": 9898}, analysis=bluegreen))
    ctl = controller(kube, tmp_path / "data")
    selectors: list[str] = []
    rolled: list[float] = []
    during_rollout: list[str] = []  # whom the apex selects while the primary rolls out the new revision

    def apex() -> str:
        svc = kube.objects.get(("v1", "Service", NS, "podinfo"))
        return svc["spec"]["selector"]["app"] if svc else ""

    def slow_primary(obj: dict[str, Any]) -> bool:
        """The primary takes a second to roll out the new revision: several ticks of the cut-over."""
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        if obj["metadata"]["name"] != "podinfo-primary" or not image.endswith(":6.0.1"):
            return False
        rolled.append(time.monotonic())
        held = time.monotonic() - rolled[0] < 1.0
        if held:
            during_rollout.append(apex())
        return held

    async with kubelet(kube, kube, hold=slow_primary):
        await ctl.start()
        try:
            await until(lambda: status(kube).get("phase") == "Initialized")
            await kube.apply(deployment("6.0.1"))

            def done() -> bool:
                if not selectors or selectors[-1] != apex():
                    selectors.append(apex())
                return status(kube).get("phase") == "Succeeded"

            await until(done)
        finally:
            await ctl.stop()
    # primary, then the canary while the primary takes the new revision, then the primary again: no flapping
    assert len(during_rollout) > 3 and set(during_rollout) == {"podinfo"}
    assert selectors == ["podinfo-primary", "podinfo", "podinfo-primary"]
    apex_writes = [w for w in kube.writes if w[1] == kinds.SERVICE and w[2] == "podinfo"]
    assert len(apex_writes) == 3, apex_writes  # made, switched to the canary, switched back


async def test_a_configmap_change_is_a_new_revision_and_the_status_tracks_it(tmp_path: Path) -> None:
    kube = MemoryKube()
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "podinfo-config", "namespace": NS},
        "data": {"color": "blue"},
    }
    await kube.apply(config)
    target = deployment("6.0.0")
    target["spec"]["template"]["spec"]["containers"][0]["envFrom"] = [
        {"configMapRef": {"name": "podinfo-config"}}
    ]
    await kube.apply(target)
    kube.add(canary())
    async with serving(kube, tmp_path / "data"):
        await until(lambda: status(kube).get("phase") == "Initialized")
        before = status(kube)["trackedConfigs"]
        assert list(before) == ["configmap/podinfo-config"]
        await kube.apply({**config, "data": {"color": "green"}})  # the image does not change
        await until(lambda: status(kube).get("phase") == "Progressing")
        await until(lambda: status(kube).get("phase") == "Succeeded")
    after = status(kube)["trackedConfigs"]
    assert list(after) == ["configmap/podinfo-config"] and after != before
    copy_ = await kube.get(kinds.CONFIGMAP, NS, "podinfo-config-primary")
    assert copy_ is not None and copy_["data"] == {"color": "green"}  # promoted with the revision


async def test_a_canary_edited_into_an_invalid_one_keeps_its_last_good_version_and_says_so_once(
    tmp_path: Path,
) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    kube.add(canary())
    async with serving(kube, tmp_path / "data"):
        await until(lambda: status(kube).get("phase") == "Initialized")
        bad = canary()
        bad["spec"]["analysis"]["stepWeight"] = 500  # over 100
        await kube.apply(bad, force=True)  # an edit over the user's own fields

        def invalid() -> list[dict[str, Any]]:
            return [
                o for (_, k, _, _), o in kube.objects.items() if k == "Event" and o["reason"] == "InvalidSpec"
            ]

        (event,) = await until(invalid)
        assert "stepWeight" in event["message"] and event["type"] == "Warning"
        await kube.apply(deployment("6.0.1"))  # the last good version rolls this out
        await until(lambda: status(kube).get("phase") == "Succeeded")
        assert len(invalid()) == 1  # not again at every status written


async def test_a_halt_is_kept_on_the_canary_and_a_controller_on_a_new_data_dir_honours_it(
    tmp_path: Path,
) -> None:
    kube = MemoryKube()
    await kube.apply(deployment("6.0.0"))
    kube.add(canary())
    async with kubelet(kube, kube):
        ctl = controller(kube, tmp_path / "first")
        await ctl.start()
        try:
            await until(lambda: status(kube).get("phase") == "Initialized")
            await kube.apply(deployment("6.0.1"))
            await until(lambda: status(kube).get("canaryWeight") == 25)
            ctl.engine.request(ObjectKey(f"{NS}/podinfo"), halt=True)  # what `rheostat halt` asks
            ctl.scheduler.kick(ObjectKey(f"{NS}/podinfo"))

            def annotation() -> str:
                obj = kube.objects[("flagger.app/v1beta1", "Canary", NS, "podinfo")]
                return str((obj["metadata"].get("annotations") or {}).get("rheostat.dev/manual", ""))

            await until(lambda: '"halt": true' in annotation())
        finally:
            await ctl.stop()
        held = status(kube)["canaryWeight"]
        ctl = controller(kube, tmp_path / "second")  # only the cluster remembers
        await ctl.start()
        try:
            await asyncio.sleep(1.5)  # seven intervals: the weight would have reached maxWeight and promoted
            assert (status(kube)["phase"], status(kube)["canaryWeight"]) == ("Progressing", held)
            ctl.engine.request(ObjectKey(f"{NS}/podinfo"), halt=False)
            ctl.scheduler.kick(ObjectKey(f"{NS}/podinfo"))
            await until(lambda: status(kube).get("phase") == "Succeeded")
            await until(lambda: '"halt"' not in annotation() or '"halt": false' in annotation())
        finally:
            await ctl.stop()


async def test_a_daemonset_behind_istio_is_promoted(tmp_path: Path) -> None:
    kube = MemoryKube()
    ds = podinfo.deployment(NS, "6.0.0")
    ds["kind"] = "DaemonSet"
    del ds["spec"]["replicas"]
    ds["spec"]["updateStrategy"] = {"type": "RollingUpdate"}
    await kube.apply(ds)
    kube.add(canary(targetRef={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"}))
    seen: set[tuple[int, ...]] = set()
    async with serving(kube, tmp_path / "data"):
        await until(lambda: status(kube).get("phase") == "Initialized")
        target = await kube.get(kinds.DAEMONSET, NS, "podinfo")
        assert target is not None  # "scaled to 0" as Flagger does: a node selector no node has
        node_selector = target["spec"]["template"]["spec"].get("nodeSelector") or {}
        assert "flagger.app/scale-to-zero" in node_selector
        await kube.apply(
            {
                **ds,
                "spec": {**ds["spec"], "template": podinfo.deployment(NS, "6.0.1")["spec"]["template"]},
            }
        )

        def done() -> bool:
            seen.add(weights(kube))
            return status(kube).get("phase") == "Succeeded"

        await until(done)
    assert {(75, 25), (50, 50)} <= seen
    primary = await kube.get(kinds.DAEMONSET, NS, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
