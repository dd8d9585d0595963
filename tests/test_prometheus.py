"""The Prometheus provider against a real Prometheus (Debian's `prometheus`), and canaries judged by PromQL.

Prometheus runs on 127.0.0.1 with a temporary config and TSDB, scraping every second the Envoy of the
embedded platform (through the router's /stats/prometheus listener) and a sample app. Without the binary
these tests skip, except under CI=true where they fail: CI installs it (`apt-get install -y prometheus`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.prometheus import Auth, PrometheusProvider
from rheostat.reactor.controller import BuiltinByTarget
from rheostat.rollout.types import Phase
from tests import processes
from tests.answering import Answer, AnswerServer, answering
from tests.processes import Server
from tests.rig import KEY, NS, Rig, Traffic, canary, workload
from tests.servers import free_port

pytestmark = pytest.mark.e2e


@dataclass
class Prometheus(Server):
    pause_s: float = 0.5  # between tries of `wait_for` (Prometheus scrapes every second)

    async def wait_for(self, query: str, timeout: float = 30.0) -> float:
        """Until the query has a value."""
        provider = PrometheusProvider(self.url)
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                return await provider.value(query)
            except (NoData, ProviderError) as exc:
                last = str(exc)
            await asyncio.sleep(self.pause_s)
        raise AssertionError(f"no value for {query} in {timeout}s: {last}; log: {self.tail()}")


@contextlib.contextmanager
def prometheus(
    tmp: Path, targets: dict[str, tuple[str, str]], *, scrape_interval: str = "1s"
) -> Iterator[Prometheus]:
    """Start Prometheus scraping `{job: (host:port, metrics path)}` every `scrape_interval`; stop it at the end."""
    binary = processes.binary("prometheus", "prometheus")
    port = free_port()
    jobs = "".join(
        f"""
  - job_name: {job}
    metrics_path: {path}
    static_configs: [{{targets: ["{target}"]}}]"""
        for job, (target, path) in targets.items()
    )
    config = tmp / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {scrape_interval}, evaluation_interval: 1s}}\nscrape_configs:{jobs}\n"
    )
    url, log = f"http://127.0.0.1:{port}", tmp / "prometheus.log"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    with processes.started(argv, log, processes.answers(f"{url}/-/ready"), name="Prometheus") as process:
        yield Prometheus(url, process, log)


@contextlib.contextmanager
def sample_app(version: str = "7.0.0") -> Iterator[int]:
    port = free_port()
    argv = [sys.executable, "-m", "rheostat.demo.app", "--port", str(port), "--version", version]
    ready = processes.answers(f"http://127.0.0.1:{port}/readyz")
    with processes.started(argv, Path(os.devnull), ready, name="the sample app", timeout_s=15):
        yield port


# -- the provider against a real Prometheus -------------------------------------------------------------


async def test_provider_values_no_data_errors_and_the_sample_app(tmp_path: Path) -> None:
    with (
        sample_app() as app_port,
        prometheus(tmp_path, {"app": (f"127.0.0.1:{app_port}", "/metrics")}) as prom,
    ):
        async with httpx.AsyncClient() as client:
            for path in ("/", "/", "/status/500"):
                await client.get(f"http://127.0.0.1:{app_port}{path}")
        p = PrometheusProvider(prom.url)
        assert await p.is_online()
        assert await p.value("scalar(vector(2.5))") == 2.5
        ok = await prom.wait_for('sum(http_requests_total{job="app",code="200"})')
        assert ok >= 2
        assert await p.value('sum(http_requests_total{job="app",code="500"})') >= 1
        # several series: not one value to judge (Flagger takes the last one, whichever that is)
        two = 'label_replace(vector(1), "x", "a", "", "") or label_replace(vector(2), "x", "b", "", "")'
        assert len(await p.vector(two)) == 2
        with pytest.raises(ProviderError, match=r'2 series \({x="a"}, {x="b"}\).*aggregate'):
            await p.value(two)
        with pytest.raises(NoData, match="no series"):
            await p.value('http_requests_total{job="nothing-like-this"}')
        for query, shown in (
            ("vector(0) / vector(0)", "NaN"),
            ("vector(1) / 0", "+Inf"),
            ("-vector(1) / 0", "-Inf"),
        ):
            with pytest.raises(ProviderError, match=rf"returned {re.escape(shown)}, not a number"):
                await p.value(query)
        # the builtin checks, on a cluster with no traffic: no data (wait), not NaN (a failed check)
        for builtin in ("request-success-rate", "request-duration"):
            with pytest.raises(NoData):
                await p.query(MetricQuery(ObjectKey("t/quiet"), builtin, 30.0))
        with pytest.raises(ProviderError, match=r"HTTP 400.*bad_data.*sum\(rate\(oops\[1m\)\)\)\)"):
            await p.value("sum(rate(oops[1m))))")
        q = MetricQuery(ObjectKey("t/web"), "custom", 60.0, 'sum(http_requests_total{job="app"})')
        assert await p.query(q) >= 3


async def test_provider_down_slow_or_unauthorised_is_a_reason_never_a_value() -> None:
    down = PrometheusProvider(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    assert not await down.is_online()
    with pytest.raises(ProviderError, match=r"unreachable.*query: vector"):
        await down.value("vector(1)")

    async def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    sleepy = PrometheusProvider("http://prom.test", timeout_s=0.2, transport=httpx.MockTransport(slow))
    with pytest.raises(ProviderError, match=r"did not answer within 0.2s"):
        await sleepy.value("up")

    seen: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401, text="unauthorized")

    secret = "s3cr3t-token"
    locked = PrometheusProvider(
        "http://prom.test",
        auth=Auth.from_secret({"token": secret}),
        headers={"X-Scope-OrgID": ["team-a"]},
        transport=httpx.MockTransport(refuse),
    )
    with pytest.raises(ProviderError) as info:
        await locked.value("up")
    assert "HTTP 401" in str(info.value) and secret not in str(info.value) and secret not in repr(locked)
    assert seen[0].headers["authorization"] == f"Bearer {secret}"
    assert seen[0].headers["x-scope-orgid"] == "team-a"
    basic = PrometheusProvider(
        "http://prom.test",
        auth=Auth.from_secret({"username": "u", "password": "p"}),
        transport=httpx.MockTransport(refuse),
    )
    with pytest.raises(ProviderError):
        await basic.value("up")
    assert seen[1].headers["authorization"].startswith("Basic ")
    with pytest.raises(ValueError, match="neither"):
        Auth.from_secret({"user": "x"})


# -- answers that are not Prometheus' (a real HTTP server answering what the test says) ----------------


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    yield from answering()


def _vector(*values: object) -> str:
    series = ",".join(f'{{"metric":{{"n":"{i}"}},"value":[1,{json.dumps(v)}]}}' for i, v in enumerate(values))
    return f'{{"status":"success","data":{{"resultType":"vector","result":[{series}]}}}}'


UNUSABLE = [
    # (status, body, what the failed check says)
    (200, '{"status":"success","data":["x"]}', "without a `data` object"),
    (200, '{"status":"success"}', "without a `data` object"),
    (200, '{"status":"success","data":{"resultType":"vector","result":{"a":1}}}', "result is not a list"),
    (
        200,
        '{"status":"success","data":{"resultType":"vector","result":["x"]}}',
        "series without string labels",
    ),
    (
        200,
        '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":1},"value":[1,"2"]}]}}',
        "string labels",
    ),
    (200, '{"status":"success","data":{"resultType":"scalar","result":[1,"lots"]}}', "not a number ('lots')"),
    (200, '{"status":"success","data":{"resultType":"scalar","result":{"1":"2"}}}', "not a number (a dict)"),
    (200, '{"status":"success","data":{"resultType":"scalar","result":[1,2]}}', "not a number"),
    (
        200,
        '{"status":"success","data":{"resultType":"matrix","result":[]}}',
        "returned a matrix, not a single value",
    ),
    (200, '{"status":"success","data":{"resultType":7,"result":[]}}', "returned a <int>, not a single value"),
    (200, _vector("1", "2"), "returned 2 series"),
    (200, _vector("NaN"), "returned NaN, not a number"),
    (200, _vector("+Inf"), "returned +Inf, not a number"),
    (200, _vector("-Inf"), "returned -Inf, not a number"),
    (200, '{"status":"success","data":{"resultType":"scalar","result":[1,"1e999"]}}', "returned +Inf"),
    (
        422,
        '{"status":"error","errorType":"execution","error":"query timed out"}',
        "HTTP 422: execution: query timed out",
    ),
    (
        200,
        '{"status":"error","errorType":"bad_data","error":"parse error at char 3"}',
        "HTTP 200: bad_data: parse error",
    ),
    (200, '{"status":"pending"}', "HTTP 200: status 'pending'"),
    (200, '{"status":{"deep":[1]},"error":["x"]}', "<list>"),
    (200, "null", "JSON that is not an object"),
    (200, '{"status":"success","data":{"resultType":"vector","result":[]}} trailing', "not JSON"),
]


@pytest.mark.parametrize(("status", "body", "reason"), UNUSABLE)
async def test_every_unusable_answer_is_a_failed_check_with_the_reason(
    server: AnswerServer, status: int, body: str, reason: str
) -> None:
    server.answer = Answer(status, body.encode())
    p = PrometheusProvider(server.url)
    with pytest.raises(ProviderError) as info:
        await p.value("up")
    assert reason in str(info.value) and "query: up" in str(info.value)
    assert len(str(info.value)) < 600  # a short, bounded quote of what came back
    # the same answer to the sequential judge's raw counts: a ProviderError too, never another exception
    if '"resultType":"vector"' not in body or "NaN" in body or "Inf" in body:
        with pytest.raises(ProviderError):
            await p.counts(ObjectKey("t/web"))
    assert not await p.is_online()


async def test_an_empty_vector_is_no_data_and_counts_need_finite_numbers(server: AnswerServer) -> None:
    server.answer = Answer(200, _vector().encode())
    p = PrometheusProvider(server.url)
    with pytest.raises(NoData, match="no series"):
        await p.value("up")
    assert (await p.counts(ObjectKey("t/web"))).canary.requests == 0
    buckets = '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"envoy_cluster_name":"t-web-canary","le":"soon"},"value":[1,"3"]}]}}'
    server.answer = Answer(200, buckets.encode())
    with pytest.raises(ProviderError, match="bucket bound that is not a number"):
        await p.counts(ObjectKey("t/web"))


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_huge_answer_is_refused_past_the_cap_in_bounded_memory(
    server: AnswerServer, chunked: bool
) -> None:
    server.answer = Answer(200, b"[" + b" " * (1024 * 1024 - 1), repeat=200, chunked=chunked)  # 200 MiB
    p = PrometheusProvider(server.url, timeout_s=30)
    tracemalloc.start()
    try:
        with pytest.raises(ProviderError, match=r"larger than 10 MiB; stopped reading; query: up"):
            await p.value("up")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * 1024 * 1024
    assert await asyncio.to_thread(server.served.done.wait, 30)
    assert server.served.cut and server.served.sent < 100 * 1024 * 1024


# -- canaries judged by PromQL, end to end ----------------------------------------------------------------


SUCCESS_TEMPLATE = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {{name: envoy-success-rate, namespace: {ns}}}
spec:
  provider: {{type: prometheus, address: "{url}"}}
  query: |
    100 * (1 - (sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{{{{ namespace }}}}-{{{{ name }}}}-canary",envoy_response_code_class="5"}}[{{{{ interval }}}}])) or on() vector(0))
    / (sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{{{{ namespace }}}}-{{{{ name }}}}-canary"}}[{{{{ interval }}}}])) > 0))
"""


def promql_analysis(api: str, port: int, path: str = "/", judge: str = "threshold") -> str:
    template = """
- name: success-rate-by-promql
  templateRef: {name: envoy-success-rate}
  thresholdRange: {min: 99}
  interval: 10s"""
    return f"""
interval: 2s
threshold: 2
stepWeight: 25
maxWeight: 50
judge: {judge}
metrics:{template if judge == "threshold" else ""}
- {{name: request-duration, thresholdRange: {{max: 500}}, interval: 10s}}
webhooks:
- name: load-test
  url: {api}/loadtester/
  timeout: 5s
  metadata: {{cmd: "hey -z 1m -q 20 -c 2 -host web-canary http://127.0.0.1:{port}{path}"}}
"""


@contextlib.asynccontextmanager
async def prom_rig(tmp_path: Path) -> AsyncIterator[tuple[Rig, Prometheus]]:
    stats_port = free_port()
    with prometheus(tmp_path, {"envoy": (f"127.0.0.1:{stats_port}", "/stats/prometheus")}) as prom:
        rig = Rig(tmp_path)
        template = SUCCESS_TEMPLATE.format(ns=NS, url=prom.url)
        rig.commit(
            workload("6.0.0", replicas=1), canary(rig.port, promql_analysis(rig.api, rig.port)), template
        )
        try:
            await rig.start(metrics_server=prom.url, envoy_stats_port=stats_port)
            await rig.wait(Phase.INITIALIZED)
            yield rig, prom
        finally:
            await rig.stop()


async def test_canaries_promoted_and_rolled_back_by_promql_then_by_the_sequential_judge(
    tmp_path: Path,
) -> None:
    async with prom_rig(tmp_path) as (rig, prom):
        template = SUCCESS_TEMPLATE.format(ns=NS, url=prom.url)
        # Envoy is scraped through the stats listener: Prometheus sees its clusters.
        await prom.wait_for('up{job="envoy"} == 1')
        assert rig.server is not None
        builtin = rig.server.controller.providers.builtin
        assert (
            isinstance(builtin, BuiltinByTarget)
            and builtin.workloads is rig.server.controller.providers.server
        )

        good = promql_analysis(rig.api, rig.port)
        tick = rig.status().tick
        rig.commit(workload("6.0.1"), canary(rig.port, good), template, message="6.0.1")
        await rig.wait(Phase.SUCCEEDED, after_tick=tick, timeout=90)
        history = rig.server.controller.store.history(KEY)
        judged = [m for h in history for m in h.body["metrics"] if m["name"] == "success-rate-by-promql"]
        # the first check may come before Prometheus scraped any canary traffic: "no values", a failed check
        assert sum(m["ok"] for m in judged) >= 2
        assert all(m["value"] >= 99 for m in judged if m["value"] is not None)
        assert all("no values" in m["message"] for m in judged if m["value"] is None)
        durations = [m for h in history for m in h.body["metrics"] if m["name"] == "request-duration"]
        assert sum(m["ok"] for m in durations) >= 2  # the builtin p99, in PromQL via the metrics server
        assert all(m["value"] < 500 for m in durations if m["value"] is not None)

        bad = promql_analysis(rig.api, rig.port, path="/status/500")
        tick = rig.status().tick
        rig.commit(workload("6.0.2"), canary(rig.port, bad), template, message="6.0.2 with 500s")
        st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=90)
        assert "success-rate-by-promql" in st.message and "< 99" in st.message

        # The sequential judge compares with the primary: it needs users on the primary too.
        sequential = promql_analysis(rig.api, rig.port, path="/status/500", judge="sequential")
        users = Traffic(rig.service + "/")
        users.start()
        try:
            tick = rig.status().tick
            rig.commit(workload("6.0.3"), canary(rig.port, sequential), template, message="6.0.3 sequential")
            st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=90)
        finally:
            await users.stop()
        assert "sequential judge: the canary is worse than the primary" in st.message
        assert "errors: canary" in st.message and st.failed_checks == 0  # on the evidence, at once


async def test_prometheus_down_fails_the_check_with_the_reason(tmp_path: Path) -> None:
    """The template's Prometheus is gone: failed checks naming why, then a rollback; never a pass."""
    async with prom_rig(tmp_path) as (rig, prom):
        gone = f"http://127.0.0.1:{free_port()}"
        template = SUCCESS_TEMPLATE.format(ns=NS, url=gone)
        tick = rig.status().tick
        rig.commit(
            workload("6.0.1"), canary(rig.port, promql_analysis(rig.api, rig.port)), template, message="x"
        )
        st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=90)
        assert "unreachable" in st.message and gone in st.message
        assert prom.process.poll() is None


async def test_sequential_judge_on_envoy_stats_catches_errors(tmp_path: Path) -> None:
    """The other metric source: no Prometheus, the builtin Envoy admin stats."""
    rig = Rig(tmp_path)
    spec = f"""
interval: 2s
threshold: 2
stepWeight: 25
maxWeight: 50
judge: sequential
webhooks:
- name: load-test
  url: {rig.api}/loadtester/
  timeout: 5s
  metadata: {{cmd: "hey -z 1m -q 20 -c 2 -host web-canary http://127.0.0.1:{rig.port}/status/500"}}
"""
    rig.commit(workload("6.0.0"), canary(rig.port, spec), message="6.0.0")
    try:
        await rig.start()
        await rig.wait(Phase.INITIALIZED)
        traffic = httpx.AsyncClient(timeout=5)
        stop = asyncio.Event()

        async def users() -> None:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    await traffic.get(rig.service + "/")
                await asyncio.sleep(0.02)

        load = asyncio.create_task(users())
        try:
            tick = rig.status().tick
            rig.commit(workload("6.0.1"), canary(rig.port, spec), message="6.0.1 with 500s")
            st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=60)
        finally:
            stop.set()
            await load
            await traffic.aclose()
        assert "sequential judge: the canary is worse than the primary" in st.message
        assert st.failed_checks == 0  # rolled back on the evidence, not on a threshold of failed checks
    finally:
        await rig.stop()
