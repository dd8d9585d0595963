"""The real-cluster suite: `rheostat run --kubeconfig` rolls out podinfo behind Istio, Gateway API and Linkerd
on the cluster of $KUBECONFIG (kind, prepared as docs/kubernetes.md "The real-cluster test suite" says).

Deselected by default (marker `real_cluster`, `-m "not real_cluster"` in pyproject's addopts): no cluster can
run where the rest of the suite runs. Run it with `pytest -m real_cluster tests/test_real_cluster.py`.
Everything is read back through the API with `LightkubeAPI`, never with kubectl. Each test makes its own
namespace and deletes it at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Conflict, Kind, Obj
from rheostat.plugins.kube.client import LightkubeAPI, resource
from tests.podinfo import deployment as podinfo_deployment
from tests.servers import free_port

pytestmark = pytest.mark.real_cluster

IMAGE = os.environ.get("RHEOSTAT_TEST_IMAGE", "ghcr.io/stefanprodan/podinfo")
TIMEOUT = float(os.environ.get("RHEOSTAT_TEST_TIMEOUT", "600"))  # seconds per rollout
CONTEXT = os.environ.get("RHEOSTAT_TEST_CONTEXT") or None
GATEWAY_NS, _, GATEWAY_NAME = os.environ.get("RHEOSTAT_TEST_GATEWAY", "istio-ingress/gateway").partition("/")
GATEWAY = Kind("gateway.networking.k8s.io/v1", "Gateway", "gateways")  # not a kind Rheostat writes itself
INTERVAL = "10s"
AT_REST = ("Initialized", "Succeeded", "Failed")


def kubeconfig() -> str:
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    if not path:
        pytest.skip("the real-cluster suite needs $KUBECONFIG (a kind cluster, see docs/kubernetes.md)")
    return path


@dataclass(frozen=True)
class Case:
    """One provider: how its namespace is meshed and how its Canary analyses a release."""

    provider: str
    analysis: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    service: dict[str, Any] = field(default_factory=dict)


CASES = {
    # a weighted canary in Istio's mesh
    "istio": Case(
        "istio",
        {"interval": INTERVAL, "threshold": 2, "stepWeight": 25, "maxWeight": 50, "metrics": []},
        labels={"istio-injection": "enabled"},
    ),
    # an A/B test on an HTTPRoute attached to an Istio Gateway
    "gatewayapi": Case(
        "gatewayapi:v1",
        {
            "interval": INTERVAL,
            "threshold": 2,
            "iterations": 3,
            "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
            "metrics": [],
        },
        service={
            "hosts": ["podinfo.example.com"],
            "gatewayRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NS}],
        },
    ),
    # a blue/green on Linkerd's SMI TrafficSplit
    "linkerd": Case(
        "linkerd",
        {"interval": INTERVAL, "threshold": 2, "iterations": 3, "metrics": []},
        annotations={"linkerd.io/inject": "enabled"},
    ),
}


def namespace(name: str, case: Case) -> Obj:
    meta: Obj = {"name": name, "labels": dict(case.labels), "annotations": dict(case.annotations)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def podinfo(ns: str, tag: str) -> Obj:
    """podinfo without its HPA, ready when it answers /readyz."""
    probe = {"httpGet": {"path": "/readyz", "port": 9898}, "initialDelaySeconds": 1, "periodSeconds": 2}
    obj = podinfo_deployment(ns, tag, image=IMAGE, readinessProbe=probe)
    obj["spec"]["progressDeadlineSeconds"] = 120
    return obj


def canary(ns: str, case: Case) -> Obj:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "provider": case.provider,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "progressDeadlineSeconds": 120,
            "service": {"port": 9898, "targetPort": 9898, **case.service},
            "analysis": case.analysis,
        },
    }


def gateway() -> Obj:
    """The Gateway of Flagger's Gateway API tutorial, served by Istio."""
    listener = {
        "name": "default",
        "hostname": "*.example.com",
        "port": 80,
        "protocol": "HTTP",
        "allowedRoutes": {"namespaces": {"from": "All"}},
    }
    return {
        "apiVersion": GATEWAY.api_version,
        "kind": GATEWAY.kind,
        "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NS},
        "spec": {"gatewayClassName": "istio", "listeners": [listener]},
    }


# -- reading the cluster --------------------------------------------------------------------------------


async def canary_status(api: LightkubeAPI, ns: str) -> Obj:
    obj = await api.get(kinds.CANARY, ns, "podinfo")
    assert obj is not None, f"Canary {ns}/podinfo is gone"
    status: Obj = obj.get("status") or {}
    return status


async def routes(api: LightkubeAPI, case: Case, ns: str) -> tuple[tuple[int, int], list[str]] | None:
    """(primary, canary) weights of the provider's routing object, and its route or rule names."""
    if case.provider == "istio":
        vs = await api.get(kinds.VIRTUAL_SERVICE, ns, "podinfo")
        if vs is None:
            return None
        http = vs["spec"].get("http") or []
        default = next(r for r in http if r.get("name") == "default")
        by_host = {d["destination"]["host"]: int(d.get("weight", 0)) for d in default["route"]}
        return (by_host["podinfo-primary"], by_host["podinfo-canary"]), [r.get("name", "") for r in http]
    if case.provider.startswith("gatewayapi"):
        route = await api.get(kinds.HTTPROUTE, ns, "podinfo")
        if route is None:
            return None
        rules = route["spec"].get("rules") or []
        default = next(r for r in rules if r.get("name") == "default")
        by_name = {b["name"]: int(b.get("weight", 1)) for b in default["backendRefs"]}
        return (by_name["podinfo-primary"], by_name["podinfo-canary"]), [r.get("name", "") for r in rules]
    split = await api.get(kinds.TRAFFIC_SPLIT_V1ALPHA2, ns, "podinfo")
    if split is None:
        return None
    weights = {b["service"]: int(b["weight"]) for b in split["spec"]["backends"]}
    return (weights["podinfo-primary"], weights["podinfo-canary"]), []


def image_of(workload: Obj | None) -> str:
    assert workload is not None
    return str(workload["spec"]["template"]["spec"]["containers"][0]["image"])


async def release(api: LightkubeAPI, ns: str, tag: str) -> None:
    """What `kubectl set image` does: the user's read-modify-write of the target, again on a conflict."""
    for _ in range(10):
        target = await api.get(kinds.DEPLOYMENT, ns, "podinfo")
        assert target is not None
        target["spec"]["template"]["spec"]["containers"][0]["image"] = f"{IMAGE}:{tag}"
        target.pop("status", None)
        target["metadata"].pop("managedFields", None)
        try:
            await api.replace(target)
            return
        except Conflict:  # the controller scaled it meanwhile
            await asyncio.sleep(0.5)
    raise AssertionError(f"could not update Deployment {ns}/podinfo: it kept changing")


# -- the controller ----------------------------------------------------------------------------------------


@dataclass
class Controller:
    """One `rheostat run --kubeconfig` process watching one namespace; its output in files."""

    config: str
    ns: str
    data: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = shutil.which("rheostat", path=os.path.dirname(sys.executable))
        assert exe is not None, f"the `rheostat` console script is not installed beside {sys.executable}"
        args = [exe, "run", "--kubeconfig", self.config, "--namespace", self.ns]
        args += ["--data-dir", str(self.data / "state"), "--listen", f"127.0.0.1:{self.port}", "-v"]
        if CONTEXT:
            args += ["--context", CONTEXT]
        self.data.mkdir(parents=True, exist_ok=True)
        with open(self.data / "run.out", "wb") as out, open(self.data / "run.err", "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err)

    def log(self) -> str:
        path = self.data / "run.err"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"`rheostat run` exited with {self.proc.returncode}:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def running(config: str, ns: str, data: Path) -> Iterator[Controller]:
    ctl = Controller(config, ns, data)
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


# -- fixtures ------------------------------------------------------------------------------------------


@pytest.fixture
async def kube() -> AsyncIterator[LightkubeAPI]:
    api = LightkubeAPI.from_kubeconfig(kubeconfig(), CONTEXT)
    try:
        yield api
    finally:
        await api.close()


@contextlib.asynccontextmanager
async def gateway_for(kube: LightkubeAPI, case: Case) -> AsyncIterator[None]:
    """For Gateway API, the Gateway the HTTPRoute attaches to: the one there, or the tutorial's, made (and
    deleted) by the test."""
    ours: list[tuple[Kind, str, str]] = []
    if case.provider.startswith("gatewayapi"):
        if await kube.get(kinds.NAMESPACE, "", GATEWAY_NS) is None:
            await kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": GATEWAY_NS}})
            ours.append((kinds.NAMESPACE, "", GATEWAY_NS))
        res = resource(GATEWAY)
        try:
            await kube.client.get(res, GATEWAY_NAME, namespace=GATEWAY_NS)
        except Exception:  # missing (or its CRD is, which the apply below says)
            await kube.client.apply(res(gateway()), field_manager="rheostat-test", force=True)
            if not ours:  # a namespace made for it goes with it
                ours.append((GATEWAY, GATEWAY_NS, GATEWAY_NAME))
    try:
        yield
    finally:
        for kind, ns, name in ours:
            if kind is GATEWAY:
                await kube.client.delete(resource(GATEWAY), name, namespace=ns)
            else:
                await kube.delete(kind, ns, name)


async def until_at_rest(
    api: LightkubeAPI, ns: str, ctl: Controller, seen: list[Obj], case: Case, *, run: bool
) -> Obj:
    """Poll the Canary and its routes every second until it is at rest (with `run`: at rest after a run),
    keeping every status seen."""
    deadline = time.monotonic() + TIMEOUT
    moved = not run
    while time.monotonic() < deadline:
        ctl.check()
        status = await canary_status(api, ns)
        found = await routes(api, case, ns)
        seen.append({**status, "routes": found})
        phase = status.get("phase")
        moved = moved or (phase is not None and phase not in AT_REST)
        if phase in AT_REST and moved:
            return status
        await asyncio.sleep(1.0)
    raise AssertionError(f"Canary {ns}/podinfo not at rest within {TIMEOUT:g}s: {seen[-1:]}\n{ctl.log()}")


# -- the tests -----------------------------------------------------------------------------------------


@pytest.mark.timeout(3 * TIMEOUT + 300)
@pytest.mark.parametrize("name", list(CASES))
async def test_podinfo_is_initialized_and_a_new_image_is_promoted(
    name: str, kube: LightkubeAPI, tmp_path: Path
) -> None:
    case = CASES[name]
    ns = f"rheostat-e2e-{name}-{uuid.uuid4().hex[:6]}"
    async with gateway_for(kube, case):
        await kube.apply(namespace(ns, case))
        try:
            await rollout(kube, case, ns, tmp_path)
        finally:
            await kube.delete(kinds.NAMESPACE, "", ns)


async def rollout(kube: LightkubeAPI, case: Case, ns: str, tmp_path: Path) -> None:
    """podinfo 6.0.0 initialized, 6.0.1 released and promoted, checked at rest and on the way."""
    await kube.apply(podinfo(ns, "6.0.0"))
    await kube.apply(canary(ns, case))
    with running(kubeconfig(), ns, tmp_path / "controller") as ctl:
        seen: list[Obj] = []
        status = await until_at_rest(kube, ns, ctl, seen, case, run=False)
        assert status["phase"] == "Initialized", f"{status}\n{ctl.log()}"
        primary = await kube.get(kinds.DEPLOYMENT, ns, "podinfo-primary")
        assert primary is not None
        assert primary["spec"]["selector"]["matchLabels"] == {"app": "podinfo-primary"}
        assert image_of(primary).endswith(":6.0.0")
        target = await kube.get(kinds.DEPLOYMENT, ns, "podinfo")
        assert target is not None and target["spec"]["replicas"] == 0  # at 0 between runs
        for service in ("podinfo", "podinfo-primary", "podinfo-canary"):
            svc = await kube.get(kinds.SERVICE, ns, service)
            assert svc is not None, f"Service {ns}/{service} was not made"
        found = await routes(kube, case, ns)
        assert found is not None and found[0] == (100, 0)

        await release(kube, ns, "6.0.1")
        seen = []
        status = await until_at_rest(kube, ns, ctl, seen, case, run=True)
        assert status["phase"] == "Succeeded", f"{status}\n{ctl.log()}"
        assert status["lastPromotedSpec"] == status["lastAppliedSpec"]
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["Promoted"]["status"] == "True"
        assert conditions["RheostatTick"]["status"] == "True"
        primary = await kube.get(kinds.DEPLOYMENT, ns, "podinfo-primary")
        assert image_of(primary).endswith(":6.0.1")
        target = await kube.get(kinds.DEPLOYMENT, ns, "podinfo")
        assert target is not None and target["spec"]["replicas"] == 0
        found = await routes(kube, case, ns)
        assert found is not None and found[0] == (100, 0)
        assert "ab" not in found[1]  # the A/B route goes with the run

        weights = {s["canaryWeight"] for s in seen if s.get("phase") == "Progressing"}
        names = {n for s in seen if s["routes"] for n in s["routes"][1]}
        if "stepWeight" in case.analysis:
            assert weights & {25, 50}, f"no step seen: {seen}"
        elif "match" in case.analysis:
            assert "ab" in names, f"no A/B rule seen: {seen}"
        else:
            assert 100 in weights, f"no switch to the canary seen: {seen}"

        events = await kube.list(kinds.EVENT, ns)
        reasons = {
            e.get("reason")
            for e in events
            if e["involvedObject"].get("kind") == "Canary"
            and (e.get("source") or {}).get("component") == "rheostat"
        }
        assert {"Initialized", "NewRevision", "Promoted"} <= reasons, reasons
