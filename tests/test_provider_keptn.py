"""The Keptn provider on the cluster port: over MemoryKube, and end to end over LightkubeAPI against the kmock
API server (tests/kubeapi.py), with the test playing Keptn's metrics operator (it sets KeptnMetric values and
gives Analyses their verdicts)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import Kind, KubeAPI, Obj
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.errors import Retry
from rheostat.plugins.kube.kinds import KEPTN_ANALYSIS, KEPTN_METRIC
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.keptn import KeptnProvider, KeptnQuery, parse
from tests import kubeapi
from tests.answers.replay import rendered
from tests.kubeapi import KubeServer

kube_server = kubeapi.kube_server  # the fixtures, made visible here
kubeconfig = kubeapi.kubeconfig

# Flagger's documented template (docs/gitbook/usage/metrics.md, "Keptn"), as a user pastes it.
DOCUMENTED = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: response-time
  namespace: istio-system
spec:
  provider:
    type: keptn
  query: keptnmetric/my-namespace/response-time/2m/reporter=destination
"""
# ... and the KeptnMetric it reads, as documented there.
KEPTN_METRIC_OBJ: Obj = {
    "apiVersion": "metrics.keptn.sh/v1beta1",
    "kind": "KeptnMetric",
    "metadata": {"name": "response-time", "namespace": "my-namespace"},
    "spec": {
        "fetchIntervalSeconds": 10,
        "provider": {"name": "my-prometheus-keptn-provider"},
        "query": "histogram_quantile(0.8, sum by(le) (rate(http_server_request_latency_seconds_bucket"
        "{status_code='200', job='simple-go-backend'}[5m[])))",
    },
}
ANALYSIS_QUERY = "analysis/my-namespace/podinfo-slo/5m/workload=podinfo;namespace=test"


@dataclass
class Cluster:
    api: KubeAPI
    add: Callable[[Obj], Obj]
    set_status: Callable[[Kind, str, str, Obj], None]
    uninstall: Callable[[Kind], None]
    fail: Callable[..., None]
    objects: Callable[[Kind], list[Obj]]


@pytest.fixture(params=["memory", "lightkube"])
async def cluster(
    request: pytest.FixtureRequest, kube_server: KubeServer, kubeconfig: Path
) -> AsyncIterator[Cluster]:
    if request.param == "memory":
        mem = MemoryKube()
        yield Cluster(
            mem,
            mem.add,
            mem.set_status,
            mem.missing.add,
            mem.fail,
            lambda k: [o for (av, kd, _, _), o in mem.objects.items() if (av, kd) == (k.api_version, k.kind)],
        )
        return

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    api = LightkubeAPI.from_kubeconfig(str(kubeconfig), None, retry=Retry(sleep=sleep))
    server = kube_server
    try:
        yield Cluster(
            api,
            server.add,
            server.set_status,
            server.uninstall,
            server.fail,
            lambda k: [o for (res, _, _), o in server.store.items() if res == f"{k.api_version}/{k.plural}"],
        )
    finally:
        await api.close()


@contextlib.asynccontextmanager
async def keptn_operator(cluster: Cluster, verdict: dict[str, Any] | None) -> AsyncIterator[list[Obj]]:
    """Play Keptn: every new Analysis gets `verdict` as its status (None: never any). Yields those seen."""
    seen: list[Obj] = []

    async def run() -> None:
        done: set[str] = set()
        while True:
            for obj in cluster.objects(KEPTN_ANALYSIS):
                name = obj["metadata"]["name"]
                if name not in done:
                    done.add(name)
                    seen.append(obj)
                    cluster.set_status(
                        KEPTN_ANALYSIS, obj["metadata"]["namespace"], name, {"state": "Progressing"}
                    )
                    if verdict is not None:
                        await asyncio.sleep(0.05)
                        cluster.set_status(KEPTN_ANALYSIS, obj["metadata"]["namespace"], name, verdict)
            await asyncio.sleep(0.01)

    task = asyncio.create_task(run(), name="keptn-operator")
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def provider(cluster: Cluster, **kw: float) -> KeptnProvider:
    return KeptnProvider(cluster.api, poll_s=0.02, **kw)


async def test_the_documented_template_reads_the_keptn_metrics_value(cluster: Cluster) -> None:
    template, query, window = rendered(DOCUMENTED)
    kind = sources.kind_of("keptn")
    assert kind.problems(template.spec.provider) == []
    cluster.add(KEPTN_METRIC_OBJ)
    cluster.set_status(
        KEPTN_METRIC, "my-namespace", "response-time", {"value": "0.274", "rawValue": "MC4yNzQ="}
    )
    async with httpx.AsyncClient() as client:
        made = kind.make(
            sources.SourceContext(template.spec.provider, "istio-system", None, client, kube=cluster.api)
        )
        assert await made.is_online()
        assert (
            await made.query(MetricQuery(ObjectKey("test/podinfo"), "response time", window, query)) == 0.274
        )


async def test_a_keptn_metric_without_a_value_yet_is_no_data(cluster: Cluster) -> None:
    cluster.add(KEPTN_METRIC_OBJ)
    with pytest.raises(NoData, match="KeptnMetric my-namespace/response-time has no value yet"):
        await provider(cluster).value("keptnmetric/my-namespace/response-time")
    cluster.set_status(KEPTN_METRIC, "my-namespace", "response-time", {"value": ""})
    with pytest.raises(NoData):
        await provider(cluster).value("keptnmetric/my-namespace/response-time")


@pytest.mark.parametrize(
    ("value", "reason"),
    [("fast", "not a number ('fast')"), ("NaN", "the value NaN, not a number"), (["1"], "a list")],
)
async def test_a_keptn_metric_value_that_is_not_a_number_is_an_error(
    cluster: Cluster, value: Any, reason: str
) -> None:
    cluster.add(KEPTN_METRIC_OBJ)
    cluster.set_status(KEPTN_METRIC, "my-namespace", "response-time", {"value": value})
    with pytest.raises(ProviderError, match=re.escape(reason)):
        await provider(cluster).value("keptnmetric/my-namespace/response-time")


async def test_a_missing_object_and_a_missing_crd_are_errors_that_say_which(cluster: Cluster) -> None:
    with pytest.raises(ProviderError, match="KeptnMetric my-namespace/response-time not found"):
        await provider(cluster).value("keptnmetric/my-namespace/response-time")
    cluster.uninstall(KEPTN_METRIC)
    with pytest.raises(ProviderError) as info:
        await provider(cluster).value("keptnmetric/my-namespace/response-time")
    assert "the KeptnMetric CRD (keptnmetrics.metrics.keptn.sh/v1beta1) is not installed" in str(info.value)
    assert not await provider(cluster).is_online()
    cluster.uninstall(KEPTN_ANALYSIS)
    with pytest.raises(
        ProviderError, match=r"the Analysis CRD \(analyses.metrics.keptn.sh/v1beta1\) is not installed"
    ):
        await provider(cluster).value(ANALYSIS_QUERY)


async def test_forbidden_is_an_error_naming_the_verb_and_resource(cluster: Cluster) -> None:
    cluster.fail(403, verb="get", kind=KEPTN_METRIC)
    with pytest.raises(ProviderError, match=r"forbidden: cannot get keptnmetrics.metrics.keptn.sh"):
        await provider(cluster).value("keptnmetric/my-namespace/response-time")


@pytest.mark.parametrize(("passed", "value"), [(True, 1.0), (False, 0.0)])
async def test_an_analysis_is_created_awaited_and_deleted(
    cluster: Cluster, passed: bool, value: float
) -> None:
    verdict = {"state": "Completed", "pass": passed, "warning": False, "raw": "{}"}
    async with keptn_operator(cluster, verdict) as seen:
        assert await provider(cluster).value(ANALYSIS_QUERY) == value
    (analysis,) = seen
    assert analysis["metadata"]["name"].startswith("podinfo-slo-")
    assert analysis["metadata"]["namespace"] == "my-namespace"
    assert analysis["spec"] == {
        "analysisDefinition": {"name": "podinfo-slo"},
        "timeframe": {"recent": "5m"},
        "args": {"workload": "podinfo", "namespace": "test"},
    }
    assert cluster.objects(KEPTN_ANALYSIS) == []  # deleted once judged


async def test_an_analysis_without_a_verdict_in_time_is_an_error_and_is_deleted(cluster: Cluster) -> None:
    async with keptn_operator(cluster, None):
        with pytest.raises(
            ProviderError,
            match=r"Keptn Analysis my-namespace/podinfo-slo-\w+ of podinfo-slo had no verdict within 0.3s",
        ):
            await provider(cluster, analysis_timeout_s=0.3).value(ANALYSIS_QUERY)
    assert cluster.objects(KEPTN_ANALYSIS) == []


def test_the_query_format_is_flaggers() -> None:
    assert parse(" KeptnMetric/My-Namespace/response-time/2m/reporter=destination\n") == KeptnQuery(
        "keptnmetric", "my-namespace", "response-time"
    )
    assert parse("keptnmetrics/ns/m") == KeptnQuery("keptnmetric", "ns", "m")
    assert parse("analyses/ns/def") == KeptnQuery("analysis", "ns", "def", "1m", {})
    assert parse("analysis/ns/def/10m/a=1;broken;b=2;c=d=e") == KeptnQuery(
        "analysis", "ns", "def", "10m", {"a": "1", "b": "2"}
    )
    for bad, reason in [
        ("keptnmetric/ns", "must be <keptnmetric|analysis>"),
        ("prometheus/ns/x", "must be keptnmetric or analysis"),
        ("keptnmetric//x", "must be"),
    ]:
        with pytest.raises(ProviderError, match=reason):
            parse(bad)


def test_the_kind_needs_a_cluster() -> None:
    (template, *_) = rendered(DOCUMENTED)
    with pytest.raises(ValueError, match="Keptn reads KeptnMetric and Analysis objects: it needs a cluster"):
        sources.kind_of("keptn").make(
            sources.SourceContext(template.spec.provider, "istio-system", None, httpx.AsyncClient())
        )
