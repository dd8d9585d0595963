"""The builtin checks and the sequential judge's counts per mesh provider, against a real Prometheus.

A small exporter plays each mesh's proxies: counters that grow at fixed rates under that mesh's metric names
and labels (plus series the queries must leave out: Istio's source-side reports, Linkerd's outbound
traffic). Prometheus (Debian's `prometheus`, as in tests/test_prometheus.py) scrapes it every second, and the
checks are asked through `MeshMetrics`. Counters that grow linearly make `rate()` exact, so the success rate
and the p99 are known numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.model.load import parse_object
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.mesh_queries import (
    HTTP,
    ISTIO,
    LINKERD,
    NGINX,
    Mesh,
    MeshMetrics,
    MeshTarget,
    flagger_query,
    mesh_of,
    mesh_target,
)
from rheostat.plugins.metrics.prometheus import DURATION, SUCCESS_RATE, PrometheusProvider
from rheostat.rollout.analysis import Checker, Monitor, RunWindow
from rheostat.rollout.types import Verdict
from tests.servers import serving
from tests.test_prometheus import Prometheus, prometheus

BOUNDS_MS = (25.0, 50.0, 1000.0, 2500.0)
FAST_P99 = 25 + 25 * 0.99  # all in (25, 50]: histogram_quantile interpolates 99% of the way
SLOW_P99 = 1000 + 1500 * (9.9 - 5) / 5  # half in (25, 50], half in (1000, 2500]: rank 9.9 of 10
PROVIDERS = ("istio", "linkerd", "smi:v1alpha3", "kubernetes", "gatewayapi:v1", "nginx")


# -- Flagger's query text ------------------------------------------------------------------------------


def test_istio_queries_are_flaggers_for_podinfo_in_test() -> None:
    podinfo = MeshTarget("istio", "test", "podinfo")
    # As Flagger's Prometheus client sends them (pkg/metrics/observers/istio.go, whitespace runs made one)
    assert flagger_query(ISTIO, SUCCESS_RATE, podinfo, "1m") == (
        ' sum( rate( istio_requests_total{ reporter="destination", destination_workload_namespace="test",'
        ' destination_workload=~"podinfo", response_code!~"5.*" }[1m] ) ) / sum( rate( istio_requests_total{'
        ' reporter="destination", destination_workload_namespace="test",'
        ' destination_workload=~"podinfo" }[1m]'
        " ) ) * 100"
    )
    assert flagger_query(ISTIO, DURATION, podinfo, "30s") == (
        " histogram_quantile( 0.99, sum( rate( istio_request_duration_milliseconds_bucket{"
        ' reporter="destination", destination_workload_namespace="test",'
        ' destination_workload=~"podinfo" }[30s]'
        " ) ) by (le) )"
    )
    assert flagger_query(NGINX, DURATION, MeshTarget("nginx", "test", "podinfo", "podinfo"), "1m") == (
        ' sum( rate( nginx_ingress_controller_response_duration_seconds_sum{ namespace="test",'
        ' ingress="podinfo", canary!="" }[1m] ) ) / sum( rate('
        ' nginx_ingress_controller_response_duration_seconds_count{ namespace="test", ingress="podinfo",'
        ' canary!="" }[1m] ) ) * 1000'
    )
    assert 'deployment=~"podinfo", classification!="failure", direction="inbound"' in flagger_query(
        LINKERD, SUCCESS_RATE, podinfo, "1m"
    )


def test_provider_names_map_to_flaggers_observers_and_an_unknown_one_names_the_supported() -> None:
    assert mesh_of("istio") is ISTIO
    assert mesh_of("smi:v1alpha2") is LINKERD and mesh_of("linkerd") is LINKERD
    assert (
        mesh_of("gatewayapi:v1") is HTTP
        and mesh_of("gatewayapi:v1beta1") is HTTP
        and mesh_of("kubernetes") is HTTP
    )
    assert mesh_of("envoy") is None  # the embedded Envoy: prometheus.py's own queries
    with pytest.raises(
        ValueError, match=r"'appmesh'; supported: envoy, gatewayapi:\*, istio, kubernetes, linkerd"
    ):
        mesh_of("appmesh")


async def test_an_unknown_provider_is_a_provider_error_before_any_query() -> None:
    asked: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "scalar", "result": [0, "1"]}}
        )

    prom = PrometheusProvider("http://prom.test", transport=httpx.MockTransport(answer))
    mesh = MeshMetrics(prom, lambda key: MeshTarget("traefik", "test", "podinfo"))
    for name in (SUCCESS_RATE, DURATION):
        with pytest.raises(
            ProviderError, match=r"test/podinfo: .*'traefik'; supported: envoy, .*nginx, smi:\*"
        ):
            await mesh.query(MetricQuery(ObjectKey("test/podinfo"), name, 60.0))
    with pytest.raises(ProviderError, match="'traefik'"):
        await mesh.counts(ObjectKey("test/podinfo"))

    def unknown(key: ObjectKey) -> MeshTarget:
        raise LookupError("no such Canary")

    with pytest.raises(ProviderError, match="test/gone: no such Canary"):
        await MeshMetrics(prom, unknown).counts(ObjectKey("test/gone"))
    assert not asked
    # A query text is Prometheus' as it is, whatever the provider
    assert await mesh.query(MetricQuery(ObjectKey("test/podinfo"), "custom", 60.0, "vector(1)")) == 1.0
    assert len(asked) == 1


def test_a_canary_names_its_provider_target_and_ingress() -> None:
    c = podinfo_canary("nginx", ingress="podinfo-ingress")
    assert mesh_target(c, "istio") == MeshTarget("nginx", "test", "podinfo", "podinfo-ingress")
    assert mesh_target(podinfo_canary(None), "istio").provider == "istio"


# -- a mesh's series, served to a real Prometheus --------------------------------------------------------


@dataclass(frozen=True)
class Series:
    name: str
    labels: dict[str, str]
    per_s: float
    start: float
    stop: float = math.inf

    def value(self, now: float) -> float:
        return self.per_s * (min(now, self.stop) - self.start)


class Exporter:
    """Serves counters that grow linearly from `start` (not shown before it) on /metrics."""

    def __init__(self) -> None:
        self.series: list[Series] = []

    def text(self) -> str:
        now = time.time()
        lines = []
        for s in self.series:
            if now >= s.start:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                lines.append(f"{s.name}{{{labels}}} {s.value(now):.6f}")
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler), "mesh-exporter") as server:
            yield f"127.0.0.1:{server.server_address[1]}"


@dataclass(frozen=True)
class Traffic:
    """Requests per second of one side, `ok` and `failed`; `slow` of all in (1000, 2500] ms, the rest fast."""

    ok: float = 10.0
    failed: float = 0.0
    slow: float = 0.0


GOOD = Traffic()
BAD = Traffic(ok=6.0, failed=4.0, slow=5.0)


def side_series(
    mesh: Mesh, t: MeshTarget, side: str, traffic: Traffic, start: float, stop: float = math.inf
) -> list[Series]:
    """The series a mesh's proxies export for one side, as Flagger's observer expects them: per response
    code, the requests and the latency histogram (buckets in the mesh's unit)."""
    workload = t.target if side == "canary" else f"{t.target}-primary"
    if mesh is ISTIO:
        base = {
            "reporter": "destination",
            "destination_workload_namespace": t.namespace,
            "destination_workload": workload,
        }
        ok, failed = {"response_code": "200"}, {"response_code": "503"}
    elif mesh is LINKERD:
        base = {"namespace": t.namespace, "deployment": workload, "direction": "inbound"}
        ok = {"classification": "success", "status_code": "200"}
        failed = {"classification": "failure", "status_code": "500"}
    elif mesh is HTTP:
        base = {"kubernetes_namespace": t.namespace, "kubernetes_pod_name": f"{workload}-7d9f8c6b5-x2x4z"}
        ok, failed = {"status": "200"}, {"status": "500"}
    else:
        canary = f"{t.namespace}-{t.target}-canary-80" if side == "canary" else ""
        base = {"namespace": t.namespace, "ingress": t.ingress or t.target, "canary": canary}
        ok, failed = {"status": "200"}, {"status": "503"}
    unit = 1.0 if mesh.to_ms == 1 else 1 / mesh.to_ms  # of a millisecond
    total = traffic.ok + traffic.failed
    fast = total - traffic.slow
    out: list[Series] = []
    for code, n in ((ok, traffic.ok), (failed, traffic.failed)):
        if not n:
            continue  # a code never answered has no series
        share, labels = n / total, {**base, **code}
        if mesh.requests != f"{mesh.latency}_count":  # the app's histogram is its request counter
            out.append(Series(mesh.requests, labels, n, start, stop))
        for le, m in zip((*BOUNDS_MS, math.inf), (0.0, fast, fast, total, total), strict=True):
            shown = "+Inf" if math.isinf(le) else f"{le * unit:g}"
            out.append(Series(f"{mesh.latency}_bucket", {**labels, "le": shown}, m * share, start, stop))
        spent = (fast * 40 + traffic.slow * 1500) * unit * share
        out.append(Series(f"{mesh.latency}_sum", labels, spent, start, stop))
        out.append(Series(f"{mesh.latency}_count", labels, n, start, stop))
    return out


def decoys(mesh: Mesh, t: MeshTarget, start: float) -> list[Series]:
    """Series a query must leave out: they fail and are slow, so counting them shows."""
    if mesh is ISTIO:
        labels = {
            "reporter": "source",
            "destination_workload_namespace": t.namespace,
            "destination_workload": t.target,
        }
        return [Series(mesh.requests, {**labels, "response_code": "500"}, 50.0, start)]
    if mesh is LINKERD:
        labels = {"namespace": t.namespace, "deployment": t.target, "direction": "outbound"}
        return [Series(mesh.requests, {**labels, "classification": "failure"}, 50.0, start)]
    return []


@dataclass
class World:
    prom: Prometheus
    exporter: Exporter
    targets: dict[ObjectKey, MeshTarget]
    start: float

    def metrics(self) -> MeshMetrics:
        return MeshMetrics(PrometheusProvider(self.prom.url), lambda key: self.targets[key])


def scenario(provider: str) -> str:
    return provider.replace(":", "-")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """For each provider: `<p>-good` (canary like the primary), `<p>-bad` (40% failures, half slow)."""
    exporter = Exporter()
    start = time.time() - 1.0
    targets: dict[ObjectKey, MeshTarget] = {}
    for provider in PROVIDERS:
        mesh = mesh_of(provider)
        assert mesh is not None
        for case, canary in (("good", GOOD), ("bad", BAD)):
            ns = f"{scenario(provider)}-{case}"
            t = MeshTarget(provider, ns, "podinfo", "podinfo" if provider == "nginx" else "")
            targets[ObjectKey(f"{ns}/podinfo")] = t
            exporter.series += side_series(mesh, t, "primary", GOOD, start)
            exporter.series += side_series(mesh, t, "canary", canary, start)
            exporter.series += decoys(mesh, t, start)
    # Istio: a canary that only fails; one whose counters stopped (no traffic in the window); a run that
    # began after a failing one (for the window clamped to the run)
    only_fails = MeshTarget("istio", "istio-fails", "podinfo")
    exporter.series += side_series(ISTIO, only_fails, "canary", Traffic(ok=0.0, failed=10.0), start)
    quiet = MeshTarget("istio", "istio-quiet", "podinfo")
    exporter.series += side_series(ISTIO, quiet, "canary", GOOD, start - 60, stop=start - 30)
    targets[ObjectKey("istio-fails/podinfo")] = only_fails
    targets[ObjectKey("istio-quiet/podinfo")] = quiet
    targets[ObjectKey("istio-none/podinfo")] = MeshTarget("istio", "istio-none", "podinfo")
    with (
        exporter.serve() as address,
        prometheus(tmp_path_factory.mktemp("prom"), {"mesh": (address, "/metrics")}) as prom,
    ):
        yield World(prom, exporter, targets, start)


async def settled(m: World, query: MetricQuery, *, timeout: float = 30.0) -> float:
    """The value once Prometheus has scraped enough (a few seconds) to answer."""
    metrics = m.metrics()
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await metrics.query(query)
        except NoData:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


@pytest.mark.e2e
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_success_rate_and_duration_of_a_good_and_a_bad_canary(meshes: World, provider: str) -> None:
    good = ObjectKey(f"{scenario(provider)}-good/podinfo")
    bad = ObjectKey(f"{scenario(provider)}-bad/podinfo")
    mean = mesh_of(provider) is NGINX  # Flagger's NGINX check is the mean duration
    assert await settled(meshes, MetricQuery(good, SUCCESS_RATE, 10.0)) == pytest.approx(100.0)
    assert await settled(meshes, MetricQuery(bad, SUCCESS_RATE, 10.0)) == pytest.approx(60.0, abs=0.5)
    fast, slow = (40.0, (5 * 40 + 5 * 1500) / 10) if mean else (FAST_P99, SLOW_P99)
    assert await settled(meshes, MetricQuery(good, DURATION, 10.0)) == pytest.approx(fast, rel=0.02)
    assert await settled(meshes, MetricQuery(bad, DURATION, 10.0)) == pytest.approx(slow, rel=0.02)
    # the primary of the bad canary is measured apart from it
    primary = MetricQuery(bad, SUCCESS_RATE, 10.0, group="primary")
    assert await settled(meshes, primary) == pytest.approx(100.0)


@pytest.mark.e2e
@pytest.mark.parametrize("provider", PROVIDERS)
async def test_counts_of_both_sides_for_the_sequential_judge(meshes: World, provider: str) -> None:
    key = ObjectKey(f"{scenario(provider)}-bad/podinfo")
    await settled(meshes, MetricQuery(key, SUCCESS_RATE, 5.0))
    counts = await meshes.metrics().counts(key)
    p, c = counts.primary, counts.canary
    assert p.requests > 20 and c.requests > 20
    assert p.errors == 0
    assert c.errors == pytest.approx(0.4 * c.requests, abs=2)
    assert p.le == c.le == (*BOUNDS_MS, math.inf)  # milliseconds, whatever unit the mesh exports
    assert c.at_or_below[1] == pytest.approx(c.at_or_below[-1] / 2, abs=2)  # half the canary is slow
    assert p.at_or_below[1] == p.at_or_below[-1]  # the primary is all fast


@pytest.mark.e2e
async def test_a_canary_that_only_fails_is_zero_percent_and_no_traffic_is_no_data(meshes: World) -> None:
    fails = MetricQuery(ObjectKey("istio-fails/podinfo"), SUCCESS_RATE, 10.0)
    assert await settled(meshes, fails) == 0.0  # Flagger's `ok / all` has no `ok` series here: no values
    metrics = meshes.metrics()
    for key in ("istio-quiet/podinfo", "istio-none/podinfo"):  # stopped counters; never any series
        for name in (SUCCESS_RATE, DURATION):
            with pytest.raises(NoData, match=r"istio: no requests of the canary of istio-\w+/podinfo"):
                await metrics.query(MetricQuery(ObjectKey(key), name, 10.0))
    none = await metrics.counts(ObjectKey("istio-none/podinfo"))
    assert none.canary.requests == none.primary.requests == 0 and none.canary.le == ()


@pytest.mark.e2e
async def test_flaggers_own_form_reads_the_same_numbers_where_it_has_one(meshes: World) -> None:
    prom = PrometheusProvider(meshes.prom.url)
    for case in ("good", "bad"):
        t = meshes.targets[ObjectKey(f"istio-{case}/podinfo")]
        key = ObjectKey(f"istio-{case}/podinfo")
        for name in (SUCCESS_RATE, DURATION):
            ours = await settled(meshes, MetricQuery(key, name, 10.0))
            assert await prom.value(flagger_query(ISTIO, name, t, "10s")) == pytest.approx(ours, rel=0.01)
    only_fails = meshes.targets[ObjectKey("istio-fails/podinfo")]
    with pytest.raises(NoData):
        await prom.value(flagger_query(ISTIO, SUCCESS_RATE, only_fails, "10s"))


# -- through the Checker and the sequential judge -----------------------------------------------------


def podinfo_canary(
    provider: str | None, *, namespace: str = "test", ingress: str | None = None, judge: str = "threshold"
) -> Canary:
    spec: dict[str, object] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {
            "interval": "1m",
            "threshold": 5,
            "stepWeight": 10,
            "maxWeight": 50,
            "judge": judge,
            "metrics": [{"name": SUCCESS_RATE, "thresholdRange": {"min": 99}, "interval": "1m"}],
        },
    }
    if provider is not None:
        spec["provider"] = provider
    if ingress is not None:
        spec["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": ingress}
    obj = parse_object(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": namespace},
            "spec": spec,
        },
        "test",
    )
    assert isinstance(obj, Canary)
    return obj


@pytest.mark.e2e
async def test_the_window_is_clamped_to_the_run(meshes: World) -> None:
    """A run that began after the canary's failing run: its check sees only its own traffic."""
    t = MeshTarget("istio", "istio-rerun", "podinfo")
    now = time.time()
    switch = now + 4.0  # the failing revision serves for 4 s, then the new one: other pods, other series

    def revision(series: list[Series], rev: str) -> list[Series]:
        return [
            Series(s.name, {**s.labels, "destination_canonical_revision": rev}, s.per_s, s.start, s.stop)
            for s in series
        ]

    meshes.exporter.series += revision(side_series(ISTIO, t, "canary", BAD, now, stop=switch), "1")
    meshes.exporter.series += revision(side_series(ISTIO, t, "canary", GOOD, switch), "2")
    meshes.targets[ObjectKey("istio-rerun/podinfo")] = t
    canary = podinfo_canary("istio", namespace="istio-rerun")
    builtin = {"builtin": meshes.metrics()}
    checker = Checker(hooks=None, metrics=builtin, templates=lambda ns, n: None)  # type: ignore[arg-type]
    metric = canary.spec.the_analysis.metrics[0]
    await asyncio.sleep(switch + 5.0 - time.time())
    # the run started 1.5 s after the switch (when the new revision was first seen ready)
    run = RunWindow("run-2", started=switch + 1.5, now=time.time())
    clamped = await checker.measure(canary, metric, run)
    assert clamped.value == pytest.approx(100.0), clamped
    whole = await checker.measure(canary, metric, RunWindow("run-2"))
    assert whole.value is not None and whole.value < 99.0  # the whole minute holds the failing run
    young = await checker.measure(
        canary, metric, RunWindow("run-3", started=time.time() - 0.5, now=time.time())
    )
    assert young.no_data and young.value is None


@pytest.mark.e2e
@pytest.mark.parametrize("provider", ["istio", "nginx"])
async def test_the_sequential_judge_rolls_back_the_bad_canary_and_not_the_good(
    meshes: World, provider: str
) -> None:
    monitor = Monitor(meshes.metrics())
    verdicts = {}
    for case in ("good", "bad"):
        ns = f"{scenario(provider)}-{case}"
        canary = podinfo_canary(provider, namespace=ns, judge="sequential")
        await settled(meshes, MetricQuery(canary.metadata.key, SUCCESS_RATE, 5.0))
        await monitor.observe(canary, "run-1")
        await asyncio.sleep(4.0)  # four scrapes
        verdicts[case] = (await monitor.observe(canary, "run-1")).verdict
    assert verdicts["bad"] is Verdict.FAIL
    assert verdicts["good"] is not Verdict.FAIL
