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
- the namespace, one per scenario;
- `spec.provider` where the tutorial sets the controller's `meshProvider` instead (gatewayapi:v1): one
  controller serves every mesh here, its default provider is istio.

Every status the controller writes is recorded by the server together with the routing objects of that
instant (the router writes before the status), so each step's status is checked against its routing object.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
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
from tests.podinfo import deployment as podinfo_deployment
from tests.podinfo import hpa
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
    return podinfo_deployment(ns, version)


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
        for ns in (f"smi-{case}", f"lk-{case}"):
            t = MeshTarget("linkerd", ns, "podinfo")
            out += side_series(LINKERD, t, "primary", GOOD, start) + side_series(
                LINKERD, t, "canary", canary, start
            )
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
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = (
                f"ghcr.io/stefanprodan/podinfo:{version}"
            )

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

    def events(self, ns: str) -> set[str]:
        """The reasons of the Kubernetes Events on the Canary."""
        return {
            o["reason"]
            for (k, n, _), o in list(self.server.store.items())
            if k == "v1/events" and n == ns and o["involvedObject"]["kind"] == "Canary"
        }

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


def route_split(snap: Snapshot, kind: str) -> tuple[int, int]:
    obj = snap.route(kind, "podinfo-canary" if kind == "Ingress" else "podinfo")
    assert obj is not None, f"no {kind}"
    if kind == "HTTPRoute":
        default = next(r for r in obj["spec"]["rules"] if r.get("name") == "default")
        w = {b["name"]: b["weight"] for b in default["backendRefs"]}
    elif kind == "TrafficSplit":
        w = {b["service"]: b["weight"] for b in obj["spec"]["backends"]}
    elif kind == "VirtualService":
        default = next(r for r in obj["spec"]["http"] if r.get("name") == "default")
        w = {d["destination"]["host"]: d["weight"] for d in default["route"]}
    else:
        cw = int(obj["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"])
        return 100 - cw, cw
    return w["podinfo-primary"], w["podinfo-canary"]


async def check_run(
    w: World,
    ns: str,
    run: list[Snapshot],
    kind: str,
    expected: list[tuple[str, int, int, int]],
    *,
    promoted: bool,
    old_spec: str,
    faults: bool = False,
) -> None:
    """Each status written against its routing object, and the outcome in the cluster."""
    assert steps(run) == expected
    for s in run:
        weight = s.status["canaryWeight"]
        assert route_split(s, kind) == (100 - weight, weight), (s.status, s.routing)
        tick = conditions(s.status)["RheostatTick"]
        # an API failure that outlived the client's retries fails that tick, and the condition says so
        assert tick["status"] == "True" or (faults and "injected failure" in tick["message"]), tick
    assert conditions(run[-1].status)["RheostatTick"]["status"] == "True"
    for obj in {id(o): o for s in run for o in s.routing.values()}.values():
        assert_valid(obj)
    # lastAppliedSpec moves to the new revision at once; lastPromotedSpec only with the promotion
    new = run[-1].status["lastAppliedSpec"]
    assert new and new != old_spec
    assert all(s.status["lastAppliedSpec"] == new for s in run)
    assert all(s.status["lastPromotedSpec"] == old_spec for s in run[:-2])
    final = run[-1].status
    promoted_cond = conditions(final)["Promoted"]
    if promoted:
        assert final["lastPromotedSpec"] == new
        assert (promoted_cond["status"], promoted_cond["reason"]) == ("True", "Succeeded")
        assert w.image(ns, "podinfo-primary") == "6.0.1"
    else:
        assert final["lastPromotedSpec"] == old_spec
        assert (promoted_cond["status"], promoted_cond["reason"]) == ("False", "Failed")
        assert w.image(ns, "podinfo-primary") == "6.0.0"
    target = w.server.object(kinds.DEPLOYMENT, ns, "podinfo")
    assert target is not None and target["spec"]["replicas"] == 0  # scaled to zero between runs
    assert w.events(ns) >= ({"Promoted"} if promoted else {"CheckFailed", "Rollback"}) | {"NewRevision"}, (
        w.events(ns)
    )


def never_half_shifted(w: World, kind: str, namespaces: tuple[str, ...]) -> None:
    """Every version of the routing object ever committed has a whole split (weights adding up to 100)."""
    seen = 0
    for event, obj in w.server.route_writes:
        if obj["kind"] != kind or obj["metadata"]["namespace"] not in namespaces or event == "DELETED":
            continue
        if kind == "Ingress" and not obj["metadata"]["name"].endswith("-canary"):
            continue
        seen += 1
        snap = Snapshot({}, {(kind, obj["metadata"]["name"]): obj})
        primary, canary = route_split(snap, kind)
        assert primary + canary == 100, obj
    assert seen > 0


async def initialized(w: World, *namespaces: str) -> list[str]:
    """Each Canary initialized (routes all to the primary); the lastPromotedSpec of each."""
    out = []
    for ns in namespaces:
        st = await w.phase(ns, "Initialized")
        assert st["canaryWeight"] == 0 and conditions(st)["Promoted"]["status"] == "True"
        assert w.image(ns, "podinfo-primary") == "6.0.0"
        out.append(st["lastPromotedSpec"])
    return out


# -- Istio: a weighted canary ------------------------------------------------------------------------------


async def test_istio_weighted_canary_is_promoted_and_a_bad_one_rolled_back(world: World) -> None:
    """The Canaries were in the cluster when the controller started."""
    w = world
    old_ok, old_bad = await initialized(w, "istio-ok", "istio-bad")
    assert route_split(w.server.snapshots["istio-ok"][-1], "VirtualService") == (100, 0)
    good, bad = await asyncio.gather(w.run("istio-ok"), w.run("istio-bad"))
    expected = [("Progressing", x, 0, 0) for x in (0, 10, 20, 30, 40, 50)]
    expected += [("Promoting", 50, 0, 0), ("Finalising", 0, 0, 0), ("Succeeded", 0, 0, 0)]
    await check_run(w, "istio-ok", good, "VirtualService", expected, promoted=True, old_spec=old_ok)
    expected = [("Progressing", 0, 0, 0)] + [("Progressing", 10, n, 0) for n in range(5)]
    expected += [("Failed", 0, 5, 0)]  # the tutorial's threshold: 5 failed checks
    await check_run(w, "istio-bad", bad, "VirtualService", expected, promoted=False, old_spec=old_bad)
    never_half_shifted(w, "VirtualService", ("istio-ok", "istio-bad"))
    # the tutorial's pre-rollout acceptance test first, then the load test at every step
    for ns in ("istio-ok", "istio-bad"):
        names = w.hooks.names(ns)
        assert names[0] == "acceptance-test" and names.count("acceptance-test") == 1
        assert names.count("load-test") >= 5


# -- Gateway API: an A/B test ------------------------------------------------------------------------------


async def test_gatewayapi_ab_test_is_promoted_and_a_bad_one_rolled_back(world: World) -> None:
    """Created while the controller runs: picked up from the watch. Metrics from the tutorial's MetricTemplates."""
    w = world
    objs = tutorial(w.shared, "gatewayapi-progressive-delivery")
    for tmpl in [o for o in objs if o["kind"] == "MetricTemplate"]:  # error-rate and latency
        tmpl["spec"]["provider"]["address"] = w.prometheus
        w.server.add(tmpl)
    ab = pick(objs, "Canary", lambda o: "match" in o["spec"].get("analysis", {}))
    ab["spec"]["provider"] = "gatewayapi:v1"  # the tutorial installs Flagger with meshProvider=gatewayapi:v1
    for ns in ("gw-ok", "gw-bad"):
        w.setup(ns, shortened(ab, ns, w.hooks_url))
    old_ok, old_bad = await initialized(w, "gw-ok", "gw-bad")
    good, bad = await asyncio.gather(w.run("gw-ok"), w.run("gw-bad"))
    expected = [("Progressing", 0, 0, n) for n in range(11)]  # the tutorial's 10 iterations
    expected += [("Promoting", 0, 0, 10), ("Finalising", 0, 0, 10), ("Succeeded", 0, 0, 10)]
    await check_run(w, "gw-ok", good, "HTTPRoute", expected, promoted=True, old_spec=old_ok)
    expected = [("Progressing", 0, 0, 0), ("Progressing", 0, 0, 1), ("Progressing", 0, 1, 1)]
    expected += [("Failed", 0, 2, 1)]  # the tutorial's threshold: 2
    await check_run(w, "gw-bad", bad, "HTTPRoute", expected, promoted=False, old_spec=old_bad)
    # The users the tutorial matches (Firefox, the insider cookie) reach the canary while it is analysed
    for s in good + bad:
        route = s.route("HTTPRoute")
        assert route is not None
        rules = {r["name"]: r for r in route["spec"]["rules"]}
        analysing = s.status["phase"] in ("Progressing", "Promoting") and s.status["iterations"] > 0
        assert set(rules) == ({"ab", "default"} if analysing else {"default"}), s.status
        if analysing:
            assert [b["name"] for b in rules["ab"]["backendRefs"]] == ["podinfo-canary"]
            headers = [m["headers"][0] for m in rules["ab"]["matches"]]
            assert headers == [
                {"name": "user-agent", "type": "RegularExpression", "value": ".*Firefox.*"},
                {"name": "cookie", "type": "RegularExpression", "value": "^(.*?;)?(type=insider)(;.*)?$"},
            ]
        assert route["spec"]["parentRefs"] == [{"name": "gateway", "namespace": "istio-ingress"}]
    never_half_shifted(w, "HTTPRoute", ("gw-ok", "gw-bad"))


# -- Linkerd with Gateway API: the Linkerd tutorial's Canary -----------------------------------------------


async def test_linkerd_tutorials_canary_over_gateway_api_is_promoted_and_a_bad_one_rolled_back(
    world: World,
) -> None:
    """Flagger's Linkerd tutorial: its MetricTemplates (Linkerd's `response_total`) and its Canary, whose
    `gatewayRefs` attach an HTTPRoute v1beta1 to the podinfo Service (the tutorial installs Flagger with
    meshProvider=gatewayapi:v1beta1: here `spec.provider` says so)."""
    w = world
    objs = tutorial(w.shared, "linkerd-progressive-delivery")
    canary = pick(objs, "Canary", lambda o: "gatewayRefs" in o["spec"].get("service", {}))
    canary["spec"]["provider"] = "gatewayapi:v1beta1"
    for ns in ("lk-ok", "lk-bad"):
        templates = []
        for tmpl in [copy.deepcopy(o) for o in objs if o["kind"] == "MetricTemplate"]:
            tmpl["metadata"]["namespace"] = ns
            tmpl["spec"]["provider"]["address"] = w.prometheus
            templates.append(tmpl)
        one = shortened(canary, ns, w.hooks_url)
        one["spec"]["service"]["gatewayRefs"][0]["namespace"] = ns
        w.setup(ns, *templates, one)
    old_ok, old_bad = await initialized(w, "lk-ok", "lk-bad")
    good, bad = await asyncio.gather(w.run("lk-ok"), w.run("lk-bad"))
    expected = [("Progressing", x, 0, 0) for x in range(0, 55, 5)]  # stepWeight 5 up to maxWeight 50
    expected += [("Promoting", 50, 0, 0), ("Finalising", 0, 0, 0), ("Succeeded", 0, 0, 0)]
    await check_run(w, "lk-ok", good, "HTTPRoute", expected, promoted=True, old_spec=old_ok)
    expected = [("Progressing", 0, 0, 0)] + [("Progressing", 5, n, 0) for n in range(5)]
    expected += [("Failed", 0, 5, 0)]  # the tutorial's threshold: 5
    await check_run(w, "lk-bad", bad, "HTTPRoute", expected, promoted=False, old_spec=old_bad)
    for s in good:
        route = s.route("HTTPRoute")
        assert route is not None and route["apiVersion"] == "gateway.networking.k8s.io/v1beta1"
        assert route["spec"]["parentRefs"] == [
            {"name": "podinfo", "namespace": "lk-ok", "group": "core", "kind": "Service", "port": 9898}
        ]
    never_half_shifted(w, "HTTPRoute", ("lk-ok", "lk-bad"))


# -- SMI: a blue/green -------------------------------------------------------------------------------------


async def test_smi_blue_green_switches_all_traffic_and_a_bad_one_never_gets_any(world: World) -> None:
    """Flagger's examples/linkerd-canary.yaml (provider linkerd: SMI TrafficSplit v1alpha2) made a blue/green:
    maxWeight and stepWeight dropped, `iterations: 3` instead."""
    w = world
    bg = example(w.shared, "linkerd-canary.yaml")
    analysis = bg["spec"]["analysis"]
    del analysis["maxWeight"], analysis["stepWeight"]
    analysis["iterations"] = 3
    for ns in ("smi-ok", "smi-bad"):
        w.setup(ns, shortened(bg, ns, w.hooks_url))
    old_ok, old_bad = await initialized(w, "smi-ok", "smi-bad")
    good, bad = await asyncio.gather(w.run("smi-ok"), w.run("smi-bad"))
    expected = [("Progressing", 0, 0, n) for n in range(4)]
    # all traffic switched to the new version (TrafficSplit 0/100) while the primary is updated
    expected += [("Progressing", 100, 0, 4), ("Promoting", 100, 0, 4)]
    expected += [("Finalising", 0, 0, 4), ("Succeeded", 0, 0, 4)]
    await check_run(w, "smi-ok", good, "TrafficSplit", expected, promoted=True, old_spec=old_ok)
    assert (0, 100) in [route_split(s, "TrafficSplit") for s in good]
    expected = [("Progressing", 0, 0, 0), ("Progressing", 0, 0, 1)]
    expected += [("Progressing", 0, n, 1) for n in range(1, 10)] + [("Failed", 0, 10, 1)]
    await check_run(w, "smi-bad", bad, "TrafficSplit", expected, promoted=False, old_spec=old_bad)
    assert {route_split(s, "TrafficSplit") for s in bad} == {(100, 0)}
    for s in good + bad:
        split = s.route("TrafficSplit")
        assert split is not None and split["apiVersion"] == "split.smi-spec.io/v1alpha2"
        assert split["spec"]["service"] == "podinfo"
    never_half_shifted(w, "TrafficSplit", ("smi-ok", "smi-bad"))


# -- NGINX: a canary Ingress -------------------------------------------------------------------------------


async def test_nginx_canary_ingress_is_promoted_and_a_bad_one_rolled_back(world: World) -> None:
    w = world
    objs = tutorial(w.shared, "nginx-progressive-delivery")
    canary, ingress = pick(objs, "Canary"), pick(objs, "Ingress")
    for ns in ("nginx-ok", "nginx-bad"):
        ing = copy.deepcopy(ingress)
        ing["metadata"]["namespace"] = ns
        w.setup(ns, ing, shortened(canary, ns, w.hooks_url))
    old_ok, old_bad = await initialized(w, "nginx-ok", "nginx-bad")
    good, bad = await asyncio.gather(w.run("nginx-ok"), w.run("nginx-bad"))
    expected = [("Progressing", x, 0, 0) for x in range(0, 55, 5)]
    expected += [("Promoting", 50, 0, 0), ("Finalising", 0, 0, 0), ("Succeeded", 0, 0, 0)]
    await check_run(w, "nginx-ok", good, "Ingress", expected, promoted=True, old_spec=old_ok)
    expected = [("Progressing", 0, 0, 0)] + [("Progressing", 5, n, 0) for n in range(10)]
    expected += [("Failed", 0, 10, 0)]
    await check_run(w, "nginx-bad", bad, "Ingress", expected, promoted=False, old_spec=old_bad)
    for s in good + bad:
        main, copy_ = s.route("Ingress", "podinfo"), s.route("Ingress", "podinfo-canary")
        assert main is not None and copy_ is not None
        assert main == s.route("Ingress", "podinfo") and "nginx.ingress.kubernetes.io/canary" not in (
            main["metadata"].get("annotations") or {}
        )  # the user's Ingress is left alone
        assert copy_["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary"] == "true"
        backend = copy_["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        assert backend == {"name": "podinfo-canary", "port": {"number": 80}}
    never_half_shifted(w, "Ingress", ("nginx-ok", "nginx-bad"))


# -- manual actions, the CLI and /metrics against the running controller ------------------------------------


async def held(w: World, ns: str, seconds: float) -> set[int]:
    """The canary weights written over `seconds`."""
    at = len(w.server.snapshots[ns])
    await asyncio.sleep(seconds)
    return {s.status["canaryWeight"] for s in w.server.snapshots[ns][at:]} | {w.status(ns)["canaryWeight"]}


async def test_manual_approve_halt_promote_and_abort_through_the_cli(world: World) -> None:
    """Istio's tutorial Canary with one more webhook: a confirm-rollout gate that stays closed until
    `rheostat approve`."""
    w = world
    ns = "manual-ok"
    canary = shortened(pick(tutorial(w.shared, "istio-progressive-delivery"), "Canary"), ns, w.hooks_url)
    # Steps 4 s apart: the CLI's own start (seconds on a loaded machine) must not outrun five steps.
    canary["spec"]["analysis"]["interval"] = "4s"
    gate = {"name": "manual-gate", "type": "confirm-rollout", "url": f"{w.hooks_url}/manual-gate"}
    canary["spec"]["analysis"]["webhooks"].append(gate)
    w.hooks.closed.add("manual-gate")
    w.setup(ns, canary)
    (old,) = await initialized(w, ns)

    w.new_revision(ns, "6.0.1")
    waiting = await w.phase(ns, "Waiting")
    assert waiting["canaryWeight"] == 0 and waiting["lastPromotedSpec"] == old
    assert route_split(w.server.snapshots[ns][-1], "VirtualService") == (100, 0)
    assert await held(w, ns, 5.0) == {0}  # the gate is closed: nothing moves
    done = await w.ctl.cli("approve", f"{ns}/podinfo")
    assert done.returncode == 0, done.stderr
    assert f"approve: requested for {ns}/podinfo" in done.stdout
    await w.until("the canary to take traffic", lambda: w.status(ns).get("canaryWeight", 0) >= 10)

    done = await w.ctl.cli("halt", f"{ns}/podinfo")
    assert done.returncode == 0, done.stderr
    await asyncio.sleep(2.0)  # a tick in flight may still take one step
    weights = await held(w, ns, 5.0)
    assert len(weights) == 1 and w.status(ns)["phase"] == "Progressing", weights
    (weight,) = weights
    assert route_split(w.server.snapshots[ns][-1], "VirtualService") == (100 - weight, weight)

    done = await w.ctl.cli("promote", f"{ns}/podinfo")  # skips the rest of the analysis
    assert done.returncode == 0, done.stderr
    st = await w.phase(ns, "Succeeded")
    assert st["lastPromotedSpec"] == st["lastAppliedSpec"] != old
    assert w.image(ns, "podinfo-primary") == "6.0.1"
    assert max(s.status["canaryWeight"] for s in w.server.snapshots[ns]) < 50  # never reached maxWeight

    # the next revision is aborted by hand: back to the primary, which keeps 6.0.1
    w.new_revision(ns, "6.0.2")
    await w.phase(ns, "Waiting")
    assert (await w.ctl.cli("approve", f"{ns}/podinfo")).returncode == 0
    await w.until("the canary to take traffic", lambda: w.status(ns).get("canaryWeight", 0) >= 10)
    done = await w.ctl.cli("abort", f"{ns}/podinfo")
    assert done.returncode == 0, done.stderr
    st = await w.phase(ns, "Failed")
    assert st["canaryWeight"] == 0 and st["lastPromotedSpec"] != st["lastAppliedSpec"]
    assert route_split(w.server.snapshots[ns][-1], "VirtualService") == (100, 0)
    assert w.image(ns, "podinfo-primary") == "6.0.1"
    assert "ManualRequest" in w.events(ns)

    # an action without the token is refused
    proc = await asyncio.create_subprocess_exec(
        *(w.ctl.command("promote", f"{ns}/podinfo", "--server", w.ctl.api, "--data-dir", "/nonexistent")),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "RHEOSTAT_TOKEN"},
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1 and b"401" in err, err


async def test_get_canaries_and_metrics_show_the_cluster_canaries(world: World) -> None:
    w = world
    out = await w.ctl.cli("get", "canaries", "-o", "json")
    assert out.returncode == 0, out.stderr
    items = {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in json.loads(out.stdout)}
    for ns in ("istio-ok", "istio-bad", "gw-ok", "smi-ok", "nginx-ok"):
        assert items[f"{ns}/podinfo"]["status"]["phase"] == w.status(ns)["phase"]
    assert items["istio-bad/podinfo"]["status"]["phase"] == "Failed"
    table = await w.ctl.cli("get", "canaries")
    assert table.returncode == 0 and "istio-bad" in table.stdout and "Failed" in table.stdout
    metrics = await w.ctl.get("/metrics")
    assert 'rheostat_canary_status{name="podinfo",namespace="istio-bad"} 2' in metrics
    assert 'rheostat_canary_status{name="podinfo",namespace="istio-ok"} 1' in metrics
    assert 'rheostat_canary_total{namespace="nginx-ok"} 1' in metrics


# -- deletion ----------------------------------------------------------------------------------------------


async def test_a_deleted_canary_is_finalized_its_routing_objects_removed(world: World) -> None:
    w = world
    assert w.server.routing("istio-ok")
    w.server.remove(kinds.CANARY, "istio-ok", "podinfo")
    rules = ("podinfo-primary", "podinfo-canary")
    # the VirtualService goes first, then the DestinationRules: wait for all of them
    await w.until(
        "the VirtualService and the DestinationRules to go",
        lambda: (
            not w.server.routing("istio-ok")
            and all(w.server.object(kinds.DESTINATION_RULE, "istio-ok", n) is None for n in rules)
        ),
    )
    out = await w.ctl.cli("get", "canaries", "-o", "json")
    assert "istio-ok" not in {i["metadata"]["namespace"] for i in json.loads(out.stdout)}


# -- faults ------------------------------------------------------------------------------------------------


async def test_api_429_and_500_do_not_break_a_rollout_nor_half_shift_a_route(world: World) -> None:
    w = world
    ns = "faults-ok"
    w.setup(ns, shortened(pick(tutorial(w.shared, "istio-progressive-delivery"), "Canary"), ns, w.hooks_url))
    (old,) = await initialized(w, ns)
    before = len(w.server.calls)
    w.server.fail(429, 3, verb="patch", kind=kinds.VIRTUAL_SERVICE, retry_after=0.2)
    w.server.fail(500, 3, verb="patch", kind=kinds.VIRTUAL_SERVICE)
    w.server.fail(500, 2, verb="patch", kind=kinds.CANARY)
    w.server.fail(429, 2, verb="update", kind=kinds.DEPLOYMENT)  # reads come from the watch-fed cache
    run = await w.run(ns)
    expected = [("Progressing", x, 0, 0) for x in (0, 10, 20, 30, 40, 50)]
    expected += [("Promoting", 50, 0, 0), ("Finalising", 0, 0, 0), ("Succeeded", 0, 0, 0)]
    await check_run(w, ns, run, "VirtualService", expected, promoted=True, old_spec=old, faults=True)
    never_half_shifted(w, "VirtualService", (ns,))
    assert not w.server._faults  # every injected failure was met
    patches = [c for c in w.server.calls[before:] if c.verb == "patch" and c.kind == kinds.VIRTUAL_SERVICE]
    assert len(patches) >= 7


async def test_403_on_the_routing_kind_is_a_condition_naming_verb_and_resource(world: World) -> None:
    """RBAC without HTTPRoute v1beta1: the Canary says so, and goes on once it is granted."""
    w = world
    ns = "rbac"
    objs = tutorial(w.shared, "gatewayapi-progressive-delivery")
    canary = shortened(
        pick(objs, "Canary", lambda o: "match" in o["spec"].get("analysis", {})), ns, w.hooks_url
    )
    canary["spec"]["provider"] = "gatewayapi:v1beta1"
    w.server.fail(403, 10_000, kind=kinds.HTTPROUTE_V1BETA1)
    w.setup(ns, canary)
    cond = await w.until(
        "a RheostatTick condition",
        lambda: (c := conditions(w.status(ns)).get("RheostatTick")) and c["status"] == "False" and c,
    )
    # the verb is the first the RBAC denies: `get`, or `patch` when the cache already lists HTTPRoutes
    assert re.search(
        r"forbidden: cannot (get|patch) httproutes\.gateway\.networking\.k8s\.io", cond["message"]
    )
    assert w.server.object(kinds.HTTPROUTE_V1BETA1, ns, "podinfo") is None
    w.server._faults.clear()  # granted
    st = await w.phase(ns, "Initialized")
    assert conditions(st)["RheostatTick"]["status"] == "True"
    route = w.server.object(kinds.HTTPROUTE_V1BETA1, ns, "podinfo")
    assert route is not None and route["apiVersion"] == "gateway.networking.k8s.io/v1beta1"


async def test_a_mesh_crd_not_installed_and_a_provider_not_available_are_conditions(world: World) -> None:
    w = world
    w.server.uninstall(kinds.TRAFFIC_SPLIT_V1ALPHA3)
    smi = shortened(example(w.shared, "linkerd-canary.yaml"), "nocrd", w.hooks_url)
    smi["spec"]["provider"] = "smi:v1alpha3"
    w.setup("nocrd", smi)
    appmesh = shortened(example(w.shared, "linkerd-canary.yaml"), "noprovider", w.hooks_url)
    appmesh["spec"]["provider"] = "appmesh"
    w.setup("noprovider", appmesh)

    def failing(ns: str) -> Callable[[], Obj | None]:
        def check() -> Obj | None:
            c = conditions(w.status(ns)).get("RheostatTick")
            return c if c is not None and c["status"] == "False" else None

        return check

    crd, provider = await asyncio.gather(
        w.until("nocrd's condition", failing("nocrd")),
        w.until("noprovider's condition", failing("noprovider")),
    )
    assert "trafficsplits.split.smi-spec.io" in crd["message"], crd
    assert "spec.provider: 'appmesh' is not available in this cluster" in provider["message"]
    for name in ("istio", "gatewayapi:v1", "linkerd", "nginx", "smi:v1alpha3"):
        assert name in provider["message"], provider
    assert not w.server.routing("noprovider")
