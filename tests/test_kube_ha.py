"""High availability end to end: two real `rheostat run --kubeconfig` processes against the kmock API server
(tests/kube_e2e_world.py's rig: the test plays the kubelet, serves the mesh's metrics from a real Prometheus
and answers the webhooks). One leads through the Lease; the other serves the API read-only. The leader is
killed (SIGKILL) in the middle of a rollout; the standby takes the Lease once it expires and finishes the
rollout from the Canary's status in the cluster: the same steps as an uninterrupted run, one promotion."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import kmock
import pytest

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Obj
from tests.kube_e2e_world import (
    Controller,
    Hooks,
    RecordingServer,
    StoreView,
    fast_prometheus,
    kubeconfig_for,
)
from tests.kubelet import kubelet
from tests.test_kube_e2e import (
    GOOD,
    World,
    initialized,
    istio_series,
    never_half_shifted,
    pick,
    route_split,
    shortened,
    steps,
    tutorial,
)
from tests.test_mesh_queries import Exporter

pytestmark = pytest.mark.e2e

NS = "ha-ok"
LEASE_NS = "rheostat-system"


async def leader_view(ctl: Controller) -> dict[str, Any]:
    view: dict[str, Any] = await ctl.get("/api/v1/leader")
    return view


def promoted_events(server: RecordingServer) -> int:
    return sum(
        1
        for (k, n, _), o in list(server.store.items())
        if k == "v1/events"
        and n == NS
        and o["involvedObject"]["kind"] == "Canary"
        and o["reason"] == "Promoted"
    )


def holder(server: RecordingServer) -> str:
    found = server.object(kinds.LEASE, LEASE_NS, "rheostat-leader")
    return str(found["spec"]["holderIdentity"]) if found is not None else ""


def primary_images(server: RecordingServer) -> list[str]:
    """The image of podinfo-primary at each of its versions, repeats removed."""
    out: list[str] = []
    for _, kind, event, obj in server.history:
        meta = obj["metadata"]
        if kind != kinds.DEPLOYMENT or event == "DELETED" or meta["name"] != "podinfo-primary":
            continue
        if meta.get("namespace") != NS:
            continue
        image = obj["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
        if not out or out[-1] != image:
            out.append(image)
    return out


async def test_the_standby_finishes_a_rollout_after_the_leader_is_killed(
    shared: Path, tmp_path: Path
) -> None:
    exporter = Exporter()
    exporter.series = istio_series(NS, GOOD, time.time() - 1.0)
    hooks = Hooks()
    async with RecordingServer() as server, kmock.Server(server):
        try:
            with (
                exporter.serve() as address,
                fast_prometheus(tmp_path, address) as prom,
                hooks.serve() as hooks_url,
            ):
                config = kubeconfig_for(server, tmp_path / "kubeconfig")
                lease = ("--leader-elect", "--lease-namespace", LEASE_NS)
                a = Controller(config, tmp_path / "a", tmp_path / "a-logs", prom, args=lease)
                b = Controller(config, tmp_path / "b", tmp_path / "b-logs", prom, args=lease)
                w = World(server, a, hooks, hooks_url, prom, shared)
                canary = pick(tutorial(shared, "istio-progressive-delivery"), "Canary")
                w.setup(NS, shortened(canary, NS, hooks_url))
                async with kubelet(StoreView(server).api(), server, period_s=0.05):
                    try:
                        await a.start()
                        await w.until("a to lead", lambda: holder(server))
                        await b.start()
                        await scenario(w, a, b)
                    finally:
                        await a.kill()  # killed already, unless the scenario failed before
                        code = await b.stop()
                    assert code == 0, b.stderr()[-3000:]
                    # b stopped cleanly: it gave the Lease up rather than leave it to expire
                    lease_obj = server.object(kinds.LEASE, LEASE_NS, "rheostat-leader")
                    assert lease_obj is not None and lease_obj["spec"]["holderIdentity"] == ""
        finally:
            server.drop_watches()


async def scenario(w: World, a: Controller, b: Controller) -> None:
    server = w.server
    first, second = await leader_view(a), await leader_view(b)
    assert first["leading"] and not second["leading"]
    assert second["holder"] == first["identity"] and second["lease"] == f"{LEASE_NS}/rheostat-leader"
    (old,) = await initialized(w, NS)

    # the standby: the API read-only, the Canary's status as the leader writes it; actions refused
    listed = await b.cli("get", "canaries", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    (item,) = [i for i in json.loads(listed.stdout) if i["metadata"]["namespace"] == NS]
    assert item["status"]["phase"] == w.status(NS)["phase"] == "Initialized"
    refused = await b.cli("promote", f"{NS}/podinfo")
    assert refused.returncode == 1 and "standby" in refused.stderr, refused
    assert first["identity"] in refused.stderr  # it names the leader

    # a rollout, led by a
    before = promoted_events(server)
    at = w.new_revision(NS, "6.0.1")
    await w.until("the canary to take 20% of the traffic", lambda: w.status(NS).get("canaryWeight", 0) >= 20)

    # the leader dies in the middle of the rollout
    killed_at = w.status(NS)
    await a.kill()
    assert killed_at["phase"] == "Progressing" and 20 <= killed_at["canaryWeight"] < 50, killed_at
    w.ctl = b  # timeouts now print b's log
    await w.until("b to lead", lambda: holder(server) == second["identity"])
    final = await w.phase(NS, "Succeeded", "Failed")

    # the same run as without the failover: each step once, in order, and one promotion
    run = server.snapshots[NS][at:]
    expected = [("Progressing", x, 0, 0) for x in (0, 10, 20, 30, 40, 50)]
    expected += [("Promoting", 50, 0, 0), ("Finalising", 0, 0, 0), ("Succeeded", 0, 0, 0)]
    assert steps(run) == expected, steps(run)
    assert final["lastPromotedSpec"] == final["lastAppliedSpec"] != old
    for s in run:
        weight = s.status["canaryWeight"]
        assert route_split(s, "VirtualService") == (100 - weight, weight)
    never_half_shifted(w, "VirtualService", (NS,))
    assert primary_images(server) == ["6.0.0", "6.0.1"]  # promoted once, never undone
    assert promoted_events(server) == before + 1
    lease_obj: Obj | None = server.object(kinds.LEASE, LEASE_NS, "rheostat-leader")
    assert lease_obj is not None and lease_obj["spec"]["leaseTransitions"] == 1
    view = await leader_view(b)
    assert view["leading"] and view["holder"] == second["identity"]
    narrated = (b.logs / "run.out").read_text()
    assert "leads" in narrated, narrated
