"""End to end against an emulated cluster: the real `rheostat run --kubeconfig` (a subprocess) on the kmock API
server of tests/kubeapi.py, in this module's event loop on 127.0.0.1. The test plays the kubelet (every
Deployment reports ready), serves the mesh's metrics from a real Prometheus scraping a small exporter (Istio,
Linkerd and NGINX series per namespace: `*-ok` namespaces have a healthy canary, `*-bad` ones a canary
failing half its requests), and answers the webhooks.

One controller serves the whole module; each test works in its own namespaces. The Canaries are Flagger's
tutorials' (../shared/testdata/flagger), unchanged except:
- `analysis.interval` is 1s (the tutorials' 30s to 1m would make a run take minutes);
- the webhooks' URL is a local receiver: `http://flagger-loadtester.test/` cannot resolve here;
- the MetricTemplates' `provider.address` is the local Prometheus, for the same reason;
- the namespace, one per scenario.

Every status the controller writes is recorded by the server together with the routing objects of that
instant (the router writes before the status), so each step's status is checked against its routing object.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio
import yaml

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Obj
from rheostat.plugins.metrics.mesh_queries import ISTIO, LINKERD, NGINX, MeshTarget
from tests.kube_e2e_world import (
    Controller,
    Hooks,
    RecordingServer,
    Snapshot,
    StoreView,
    fast_prometheus,
    kubeconfig_for,
    running,
)
from tests.kube_schemas import assert_valid
from tests.kubelet import kubelet
from tests.test_mesh_queries import Exporter, Series, Traffic, side_series

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

GOOD = Traffic(ok=10.0)
BAD = Traffic(ok=5.0, failed=5.0)  # 50% 5xx
RUN_TIMEOUT_S = 90.0


# -- Flagger's tutorials ----------------------------------------------------------------------------------


def tutorial(shared: Path, name: str) -> list[Obj]:
    text = (shared / "testdata/flagger/tutorials" / f"{name}.md").read_text()
    out: list[Obj] = []
    for block in re.findall(r"```yaml\n(.*?)```", text, re.S):
        try:
            out += [d for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]
        except yaml.YAMLError:
            continue
    return out


def example(shared: Path, name: str) -> Obj:
    obj: Obj = yaml.safe_load((shared / "testdata/flagger/examples" / name).read_text())
    return obj


def pick(objs: list[Obj], kind: str, where: Callable[[Obj], bool] = lambda _: True) -> Obj:
    found = [o for o in objs if o["kind"] == kind and where(o)]
    assert found, f"no {kind} in the tutorial"
    return copy.deepcopy(found[0])


def shortened(canary: Obj, ns: str, hooks: str) -> Obj:
    """The tutorial's Canary in `ns`, its interval 1s and its webhooks sent to the local receiver."""
    out = copy.deepcopy(canary)
    out["metadata"]["namespace"] = ns
    analysis = out["spec"]["analysis"]
    analysis["interval"] = "1s"
    for hook in analysis.get("webhooks") or []:
        hook["url"] = f"{hooks}/{hook['name']}"
    for metric in analysis.get("metrics") or []:
        if "templateRef" in metric and metric["templateRef"].get("namespace") == "test":
            metric["templateRef"]["namespace"] = ns
    return out


def podinfo(ns: str, version: str = "6.0.0") -> Obj:
    """The tutorials' target, as Flagger's kustomize/podinfo declares it."""
    labels = {"app": "podinfo"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 2,
            "minReadySeconds": 3,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "podinfod",
                            "image": f"ghcr.io/stefanprodan/podinfo:{version}",
                            "ports": [{"name": "http", "containerPort": 9898, "protocol": "TCP"}],
                        }
                    ]
                },
            },
        },
    }


def hpa(ns: str) -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}},
                }
            ],
        },
    }


# -- the mesh's metrics -----------------------------------------------------------------------------------


def istio_series(ns: str, canary: Traffic, start: float, reporter: str = "destination") -> list[Series]:
    t = MeshTarget("istio", ns, "podinfo")
    out = side_series(ISTIO, t, "primary", GOOD, start) + side_series(ISTIO, t, "canary", canary, start)
    return [Series(s.name, {**s.labels, "reporter": reporter}, s.per_s, s.start) for s in out]


def mesh_series(start: float) -> list[Series]:
    """Each scenario's namespace pair: `<p>-ok` healthy, `<p>-bad` failing half its requests."""
    out: list[Series] = []
    for case, canary in (("ok", GOOD), ("bad", BAD)):
        for ns in (f"istio-{case}", f"manual-{case}", f"faults-{case}"):
            out += istio_series(ns, canary, start)
        # the gatewayapi tutorial's MetricTemplates read Istio's source-side series
        out += istio_series(f"gw-{case}", canary, start, reporter="source")
        t = MeshTarget("linkerd", f"smi-{case}", "podinfo")
        out += side_series(LINKERD, t, "primary", GOOD, start) + side_series(LINKERD, t, "canary", canary, start)
        t = MeshTarget("nginx", f"nginx-{case}", "podinfo", "podinfo")
        out += side_series(NGINX, t, "primary", GOOD, start) + side_series(NGINX, t, "canary", canary, start)
    return out


# -- the world --------------------------------------------------------------------------------------------


@dataclass
class World:
    server: RecordingServer
    ctl: Controller
    hooks: Hooks
    hooks_url: str
    prometheus: str
    shared: Path

    def setup(self, ns: str, *extra: Obj) -> None:
        """What `kubectl apply` of the tutorial's podinfo (and its HPA) does, plus `extra`."""
        for obj in (podinfo(ns), hpa(ns), *extra):
            self.server.add(obj)

    def status(self, ns: str) -> Obj:
        return self.server.status_of(ns)

    async def until(self, what: str, check: Callable[[], Any], timeout: float = RUN_TIMEOUT_S) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := check():
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; controller log:\n{self.ctl.stderr()[-4000:]}")

    async def phase(self, ns: str, *phases: str, timeout: float = RUN_TIMEOUT_S) -> Obj:
        st: Obj = await self.until(
            f"{ns}/podinfo to reach {'/'.join(phases)} (now {self.status(ns).get('phase')})",
            lambda: (s := self.status(ns)).get("phase") in phases and s,
            timeout,
        )
        return st

    def new_revision(self, ns: str, version: str = "6.0.1") -> int:
        """`kubectl set image`; returns where the snapshots of this run begin."""
        at = len(self.server.snapshots.get(ns, []))

        def image(obj: Obj) -> None:
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = f"ghcr.io/stefanprodan/podinfo:{version}"

        self.server.edit(kinds.DEPLOYMENT, ns, "podinfo", image)
        return at

    async def run(self, ns: str, version: str = "6.0.1") -> list[Snapshot]:
        """A new revision rolled out to the end: the statuses written from the change to the outcome."""
        before = self.status(ns)
        at = self.new_revision(ns, version)
        await self.until(
            f"{ns}/podinfo to start a run",
            lambda: self.status(ns).get("lastAppliedSpec") != before.get("lastAppliedSpec"),
        )
        await self.phase(ns, "Succeeded", "Failed")
        return self.server.snapshots[ns][at:]

    def image(self, ns: str, name: str) -> str:
        obj = self.server.object(kinds.DEPLOYMENT, ns, name)
        assert obj is not None, f"Deployment {ns}/{name} not found"
        image: str = obj["spec"]["template"]["spec"]["containers"][0]["image"]
        return image.rsplit(":", 1)[1]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("kube-e2e")
    exporter = Exporter()
    exporter.series = mesh_series(time.time() - 1.0)
    hooks = Hooks()
    async with RecordingServer() as server, kmock.Server(server):
        with (
            exporter.serve() as address,
            fast_prometheus(tmp, address) as prom,
            hooks.serve() as hooks_url,
        ):
            ctl = Controller(kubeconfig_for(server, tmp / "kubeconfig"), tmp / "data", tmp / "logs", prom)
            w = World(server, ctl, hooks, hooks_url, prom, shared)
            # The Istio Canaries are in the cluster before the controller starts; the others come later
            istio = pick(tutorial(shared, "istio-progressive-delivery"), "Canary")
            for ns in ("istio-ok", "istio-bad"):
                w.setup(ns, shortened(istio, ns, hooks_url))
            try:
                async with kubelet(StoreView(server).api(), server, period_s=0.05), running(ctl):
                    yield w
            finally:
                server.drop_watches()


# -- assertions -------------------------------------------------------------------------------------------


def conditions(status: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in status.get("conditions") or []}


def vs_split(snap: Snapshot) -> tuple[int, int]:
    vs = snap.route("VirtualService")
    assert vs is not None, "no VirtualService"
    default = next(r for r in vs["spec"]["http"] if r.get("name") == "default")
    w = {d["destination"]["host"]: d["weight"] for d in default["route"]}
    return w["podinfo-primary"], w["podinfo-canary"]


def steps(snaps: list[Snapshot]) -> list[tuple[str, int, int, int]]:
    """(phase, canaryWeight, failedChecks, iterations) of each status written, repeats removed."""
    out: list[tuple[str, int, int, int]] = []
    for s in snaps:
        st = s.status
        row = (st["phase"], st["canaryWeight"], st["failedChecks"], st["iterations"])
        if not out or out[-1] != row:
            out.append(row)
    return out


def check_specs(snaps: list[Snapshot], old_promoted: str, *, promoted: bool) -> None:
    """lastAppliedSpec moves to the new revision at once; lastPromotedSpec only with a promotion."""
    new = snaps[-1].status["lastAppliedSpec"]
    assert new and new != old_promoted
    for s in snaps:
        assert s.status["lastAppliedSpec"] == new
    final = snaps[-1].status
    assert final["lastPromotedSpec"] == (new if promoted else old_promoted)
    for s in snaps[:-1]:
        if s.status["phase"] not in ("Succeeded",):
            assert s.status["lastPromotedSpec"] in (old_promoted, new)


# -- Istio: a weighted canary ------------------------------------------------------------------------------


async def test_istio_weighted_canary_is_promoted_and_a_bad_one_rolled_back(world: World) -> None:
    w = world
    ok, bad = await asyncio.gather(w.phase("istio-ok", "Initialized"), w.phase("istio-bad", "Initialized"))
    for ns in ("istio-ok", "istio-bad"):
        init = w.server.snapshots[ns][-1]
        assert vs_split(init) == (100, 0)
        assert_valid(init.route("VirtualService") or {})
        assert conditions(init.status)["Promoted"]["status"] == "True"
        assert w.image(ns, "podinfo-primary") == "6.0.0"
    good_run, bad_run = await asyncio.gather(w.run("istio-ok"), w.run("istio-bad"))
    print(steps(good_run))
    print([vs_split(s) for s in good_run])
    print(steps(bad_run))
    print([vs_split(s) for s in bad_run])
    print(w.hooks.names("istio-ok"))
    print(good_run[-1].status)
