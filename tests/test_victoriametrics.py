"""The `prometheus` provider against VictoriaMetrics (Debian's `victoria-metrics`), a second server that speaks
Prometheus' query API: values, the sequential judge's raw counts, and Flagger's documented Prometheus template,
on samples the tests push through VictoriaMetrics' import API. And where it answers unlike Prometheus.

One server for the module, on 127.0.0.1 with temporary storage and its default query settings (what users
run). Samples are pushed with timestamps at least 35 s old: VictoriaMetrics hides the last 30 s from queries
(`-search.latencyOffset`), which one test shows. Without the binary these tests skip, except under CI=true
where they fail: CI installs it (`apt-get install -y victoria-metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import yaml

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.model.metric_template import MetricTemplate
from rheostat.plugins.metrics.base import GroupCounts, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.prometheus import PrometheusProvider
from rheostat.plugins.metrics.sources import SourceContext, kind_of
from rheostat.rollout.analysis import render_query
from tests import processes
from tests.answering import Answer, AnswerServer, answering
from tests.servers import free_port
from tests.test_prometheus import Prometheus

pytestmark = pytest.mark.e2e


@dataclass
class Victoria(Prometheus):
    pause_s: float = 0.25  # a new series takes a few seconds to reach VictoriaMetrics' index

    def push(self, samples: list[tuple[str, float, float]]) -> None:
        """(series, value, seconds ago) in Prometheus' text format with timestamps, then made searchable."""
        now = time.time()
        text = "".join(f"{series} {value} {int((now - ago) * 1000)}\n" for series, value, ago in samples)
        r = httpx.post(f"{self.url}/api/v1/import/prometheus", content=text.encode(), timeout=10)
        assert r.status_code == 204, r.text
        assert httpx.get(f"{self.url}/internal/force_flush", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victoria]:
    binary = processes.binary("victoria-metrics", "victoria-metrics")
    tmp = tmp_path_factory.mktemp("victoria-metrics")
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", tmp / "victoria-metrics.log"
    argv = [
        binary,
        f"-storageDataPath={tmp / 'data'}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=1d",
        "-loggerLevel=ERROR",
    ]
    ready = processes.answers(f"{url}/health", lambda r: r.text.strip() == "OK")
    with processes.started(argv, log, ready, name="VictoriaMetrics") as process:
        yield Victoria(url, process, log)


def counter(
    series: str, per_second: float, *, start_ago: float = 150, end_ago: float = 35
) -> list[tuple[str, float, float]]:
    """A counter rising at a steady rate, a sample every 5 s: any rate() over it is exactly `per_second`."""
    samples: list[tuple[str, float, float]] = []
    ago = start_ago
    while ago >= end_ago:
        samples.append((series, per_second * (start_ago - ago), ago))
        ago -= 5
    return samples


async def test_values_no_data_and_errors_as_victoriametrics_answers_them(vm: Victoria) -> None:
    vm.push([('app_requests_total{code="200"}', 120, 60), ('app_requests_total{code="500"}', 3, 60)])
    assert await vm.wait_for('sum(app_requests_total{code="200"})') == 120
    p = PrometheusProvider(vm.url)
    assert await p.is_online()
    assert await p.value("sum(app_requests_total)") == 123
    assert len(await p.vector("app_requests_total")) == 2
    with pytest.raises(
        ProviderError, match=r'2 series \({__name__="app_requests_total", code="200"}, .*aggregate'
    ):
        await p.value("app_requests_total")
    # Unlike Prometheus, a scalar comes back as a vector of one series without labels: the same number.
    assert await p.value("scalar(vector(2.5))") == 2.5
    assert await p.value("2.5") == 2.5
    # Unlike Prometheus, VictoriaMetrics drops NaN from answers: 0/0 is no series (NoData), where Prometheus
    # answers NaN (an error). Both are a failed check, neither a value.
    with pytest.raises(NoData, match="no series"):
        await p.value("vector(0) / vector(0)")
    with pytest.raises(ProviderError, match=r"returned \+Inf, not a number"):
        await p.value("vector(1) / 0")
    with pytest.raises(NoData, match="no series"):
        await p.value('sum(app_requests_total{code="404"})')
    with pytest.raises(ProviderError, match=r"HTTP 422: 422: .*unparsed data.*query: sum\(rate\(oops"):
        await p.value("sum(rate(oops[1m))))")


async def test_the_last_30_seconds_are_hidden_and_an_old_series_goes_stale(vm: Victoria) -> None:
    """VictoriaMetrics answers from samples at least 30 s old (its -search.latencyOffset): a check sees the
    number as it was then, never a half-written one; and, as Prometheus, nothing older than 5 minutes."""
    vm.push([("deploy_gauge", 1, 60), ("deploy_gauge", 2, 1), ("gone_total", 7, 400), ("kept_total", 9, 200)])
    p = PrometheusProvider(vm.url)
    assert await vm.wait_for("kept_total") == 9
    assert await p.value("deploy_gauge") == 1  # the sample of a second ago is not visible yet
    with pytest.raises(NoData):
        await p.value("gone_total")  # 400 s old: past the 5-minute look-back, as in Prometheus
    assert await p.value("last_over_time(gone_total[10m])") == 7


async def test_the_sequential_judges_counts_from_victoriametrics(vm: Victoria) -> None:
    def envoy(
        group: str, completed: int, errors: int, buckets: dict[str, int]
    ) -> list[tuple[str, float, float]]:
        c = f'envoy_cluster_name="e2e-web-{group}"'
        out: list[tuple[str, float, float]] = [(f"envoy_cluster_upstream_rq_completed{{{c}}}", completed, 40)]
        out += [
            (f'envoy_cluster_upstream_rq_xx{{{c},envoy_response_code_class="2"}}', completed - errors, 40)
        ]
        out += [(f'envoy_cluster_upstream_rq_xx{{{c},envoy_response_code_class="5"}}', errors, 40)]
        out += [
            (f'envoy_cluster_upstream_rq_time_bucket{{{c},le="{le}"}}', n, 40) for le, n in buckets.items()
        ]
        return out

    vm.push(
        envoy("primary", 400, 4, {"5": 300, "25": 390, "+Inf": 400})
        + envoy("canary", 100, 10, {"5": 50, "25": 90, "+Inf": 100})
    )
    p = PrometheusProvider(vm.url)
    await vm.wait_for('sum(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="e2e-web-canary"})')
    counts = await p.counts(ObjectKey("e2e/web"))
    inf = float("inf")
    assert counts.primary == GroupCounts(400, 4, (5.0, 25.0, inf), (300, 390, 400))
    assert counts.canary == GroupCounts(100, 10, (5.0, 25.0, inf), (50, 90, 100))
    assert (await p.counts(ObjectKey("e2e/other"))).canary == GroupCounts()


PROMETHEUS_TEMPLATE = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: istio-system
spec:
  provider:
    type: prometheus
    address: {address}
  query: |
    100 - sum(
        rate(
            istio_requests_total{{
              reporter="destination",
              destination_workload_namespace="{{{{ namespace }}}}",
              destination_workload="{{{{ target }}}}",
              response_code!="404"
            }}[{{{{ interval }}}}]
        )
    )
    /
    sum(
        rate(
            istio_requests_total{{
              reporter="destination",
              destination_workload_namespace="{{{{ namespace }}}}",
              destination_workload="{{{{ target }}}}"
            }}[{{{{ interval }}}}]
        )
    ) * 100
"""

CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1m
    threshold: 5
    stepWeight: 10
    metrics:
    - name: "404s percentage"
      templateRef: {name: not-found-percentage, namespace: istio-system}
      thresholdRange: {max: 5}
      interval: 1m
"""


async def test_flaggers_documented_prometheus_template_on_victoriametrics(vm: Victoria) -> None:
    labels = 'reporter="destination",destination_workload_namespace="test",destination_workload="podinfo"'
    vm.push(
        counter(f'istio_requests_total{{{labels},response_code="200"}}', 9)
        + counter(f'istio_requests_total{{{labels},response_code="404"}}', 1)
        + counter(
            'istio_requests_total{reporter="destination",destination_workload="other",response_code="404"}',
            50,
        )
    )
    template = MetricTemplate.model_validate(yaml.safe_load(PROMETHEUS_TEMPLATE.format(address=vm.url)))
    assert kind_of("prometheus").problems(template.spec.provider) == []
    c = Canary.model_validate(yaml.safe_load(CANARY))
    metric = c.spec.the_analysis.metrics[0]
    text = render_query(template.spec.query, c, metric)
    await vm.wait_for(f"sum(istio_requests_total{{{labels}}})")
    async with httpx.AsyncClient() as client:
        provider = kind_of("prometheus").make(
            SourceContext(template.spec.provider, "istio-system", None, client)
        )
        value = await provider.query(MetricQuery(ObjectKey("test/podinfo"), metric.name, 60.0, text))
    assert value == pytest.approx(10.0)  # 1 request in 10 is a 404: fails `max: 5`


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    yield from answering()


async def test_a_partial_answer_of_a_victoriametrics_cluster_is_an_error(server: AnswerServer) -> None:
    """vmselect answers `isPartial: true` when some vmstorage nodes did not answer (unless run with
    -search.denyPartialResponse): the numbers may lack the errors those nodes hold, so no verdict on them."""
    partial = b'{"status":"success","isPartial":true,"data":{"resultType":"vector","result":[{"metric":{},"value":[1,"99.9"]}]}}'
    server.answer = Answer(200, partial)
    p = PrometheusProvider(server.url)
    with pytest.raises(ProviderError, match=r"partial answer \(isPartial.*query: up"):
        await p.value("up")
    with pytest.raises(ProviderError, match="partial answer"):
        await p.counts(ObjectKey("e2e/web"))
    server.answer = Answer(200, partial.replace(b"true", b"false"))
    assert await p.value("up") == 99.9
