"""Keptn as a metrics provider: MetricTemplates with `provider.type: keptn`, read from the cluster's objects.

As Flagger (pkg/metrics/providers/keptn.go), the query is `<type>/<namespace>/<name>/<timeframe>/<args>`,
trimmed and lower-cased:

- `keptnmetric/<ns>/<name>`: the value of the KeptnMetric's `status.value` (the rest is ignored);
- `analysis/<ns>/<definition>/<timeframe>/<k=v;k=v>`: an Analysis of that AnalysisDefinition over the
  last `timeframe` (default 1m) with those arguments is created, and its verdict awaited (10 s at most,
  looked at every second): 1 when it passed, 0 when it failed. It is deleted afterwards.

A KeptnMetric without a value yet is no data; a missing CRD, a missing object or an Analysis without a
verdict in time is an error that says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from dataclasses import dataclass, field

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.kube.api import KubeAPI, KubeError, Obj
from rheostat.plugins.kube.kinds import KEPTN_ANALYSIS, KEPTN_METRIC
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.http_query import number, shown
from rheostat.plugins.metrics.sources import Problem, SourceContext

READ_TIMEOUT_S = 5.0
ANALYSIS_TIMEOUT_S = 10.0  # Flagger's: time for Keptn to reconcile the Analysis
POLL_S = 1.0
FORMAT = "<keptnmetric|analysis>/<namespace>/<name>/<timeframe>/<arguments>"


@dataclass(frozen=True)
class KeptnQuery:
    kind: str  # "keptnmetric" or "analysis"
    namespace: str
    name: str
    timeframe: str = "1m"
    args: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> KeptnQuery:
    """Flagger's query format; ProviderError says what is wrong with it."""
    parts = text.strip().lower().split("/")
    if len(parts) < 3 or not parts[1] or not parts[2]:
        raise ProviderError(f"the query must be {FORMAT}; got {text.strip()[:120]!r}")
    kind = {
        "keptnmetric": "keptnmetric",
        "keptnmetrics": "keptnmetric",
        "analysis": "analysis",
        "analyses": "analysis",
    }
    if parts[0] not in kind:
        raise ProviderError(f"the query's type must be keptnmetric or analysis, got {parts[0][:40]!r}")
    if kind[parts[0]] == "keptnmetric":
        return KeptnQuery("keptnmetric", parts[1], parts[2])
    timeframe = parts[3] if len(parts) > 3 and parts[3] else "1m"
    args: dict[str, str] = {}
    if len(parts) > 4:
        for pair in parts[4].split(";"):
            key, eq, value = pair.partition("=")
            if eq and key and "=" not in value:  # Flagger keeps `k=v` pairs only
                args[key] = value
    return KeptnQuery("analysis", parts[1], parts[2], timeframe, args)


class KeptnProvider:
    def __init__(
        self,
        kube: KubeAPI,
        *,
        analysis_timeout_s: float = ANALYSIS_TIMEOUT_S,
        poll_s: float = POLL_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        self.kube = kube
        self.analysis_timeout_s = analysis_timeout_s
        self.poll_s = poll_s
        self.read_timeout_s = read_timeout_s

    def __repr__(self) -> str:
        return "KeptnProvider()"

    async def query(self, q: MetricQuery) -> float:
        if q.text is None:
            raise ProviderError(f"metric {q.name!r} has no query; Keptn's is {FORMAT}")
        return await self.value(q.text)

    async def is_online(self) -> bool:
        """Keptn's metrics operator is installed: its KeptnMetric resource answers."""
        try:
            async with asyncio.timeout(self.read_timeout_s):
                await self.kube.get(KEPTN_METRIC, "default", "rheostat-online-check")
        except (KubeError, TimeoutError):
            return False
        return True

    async def value(self, text: str) -> float:
        q = parse(text)
        if q.kind == "keptnmetric":
            return await self.metric(q)
        return await self.analysis(q)

    async def metric(self, q: KeptnQuery) -> float:
        where = f"KeptnMetric {q.namespace}/{q.name}"
        try:
            async with asyncio.timeout(self.read_timeout_s):
                obj = await self.kube.get(KEPTN_METRIC, q.namespace, q.name)
        except TimeoutError:
            raise ProviderError(
                f"{where}: the cluster did not answer within {self.read_timeout_s:g}s"
            ) from None
        except KubeError as exc:
            raise ProviderError(f"{where}: {exc}") from None
        if obj is None:
            raise ProviderError(f"{where} not found")
        status = obj.get("status")
        value = status.get("value") if isinstance(status, dict) else None
        if value is None or value == "":
            raise NoData(f"{where} has no value yet")
        found = number(value, strings=True)
        if found is None:
            raise ProviderError(f"{where} has a value that is not a number ({shown(value)})")
        if not math.isfinite(found):
            raise ProviderError(f"{where} has the value {value}, not a number to judge")
        return found

    async def analysis(self, q: KeptnQuery) -> float:
        name = f"{q.name}-{uuid.uuid4().hex[:6]}"
        where = f"Keptn Analysis {q.namespace}/{name} of {q.name}"
        body: Obj = {
            "apiVersion": KEPTN_ANALYSIS.api_version,
            "kind": KEPTN_ANALYSIS.kind,
            "metadata": {
                "name": name,
                "namespace": q.namespace,
                "labels": {"app.kubernetes.io/managed-by": "rheostat"},
            },
            "spec": {
                "analysisDefinition": {"name": q.name},
                "timeframe": {"recent": q.timeframe},
                "args": dict(q.args),
            },
        }
        created = False
        try:
            async with asyncio.timeout(self.analysis_timeout_s):
                await self.kube.apply(body)
                created = True
                while True:
                    await asyncio.sleep(self.poll_s)
                    obj = await self.kube.get(KEPTN_ANALYSIS, q.namespace, name)
                    if obj is None:
                        raise ProviderError(f"{where} was deleted before its verdict")
                    verdict = _verdict(obj)
                    if verdict is not None:
                        return verdict
        except TimeoutError:
            raise ProviderError(f"{where} had no verdict within {self.analysis_timeout_s:g}s") from None
        except KubeError as exc:
            raise ProviderError(f"{where}: {exc}") from None
        finally:
            if created:
                with contextlib.suppress(KubeError, TimeoutError):
                    async with asyncio.timeout(self.read_timeout_s):
                        await self.kube.delete(KEPTN_ANALYSIS, q.namespace, name)


def _verdict(obj: Obj) -> float | None:
    """1 or 0 once the Analysis is Completed with a `pass`; None while it is not."""
    status = obj.get("status")
    if not isinstance(status, dict) or status.get("state") != "Completed":
        return None
    passed = status.get("pass")
    if not isinstance(passed, bool):
        return None  # Flagger waits for `pass` too
    return 1.0 if passed else 0.0


class KeptnKind:
    """`provider.type: keptn`: no field; the controller must run against a cluster."""

    name = "keptn"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        return []

    def make(self, ctx: SourceContext) -> MetricProvider:
        if ctx.kube is None:
            raise ValueError(
                "Keptn reads KeptnMetric and Analysis objects: it needs a cluster (rheostat run with a kubeconfig)"
            )
        return KeptnProvider(ctx.kube)


KIND = KeptnKind()
