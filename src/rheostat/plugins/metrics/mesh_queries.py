"""The builtin checks and the sequential judge's counts in PromQL per mesh provider, as Flagger measures them.

What is measured is Flagger's (pkg/metrics/observers): for each provider the same metric names and label
selectors, "success" is the same matcher (`response_code!~"5.*"`, Linkerd's `classification!="failure"`,
...), the duration is the p99 of the same histogram in milliseconds (NGINX: the mean, as Flagger). The
canary side selects Flagger's `{{ target }}` (the targetRef's workload); the primary side the same with
`<target>-primary` (NGINX: the requests the controller did not send to the canary backend).

How it is asked differs where Flagger's form misreads a canary: `ok / all` has no `ok` series at all for a
canary that only fails (no values, exactly when it is worst), and reads 0/0 = NaN over a quiet window. The
builtin checks ask `1 - bad / all` with no `bad` series read as 0 and `all > 0`: the same number whenever
Flagger's form has one, 0% for a canary that only fails, and no data (not NaN) without traffic.
`flagger_query` gives Flagger's own text, for comparison and for MetricTemplates.

`envoy` is the embedded Envoy: its queries stay those of `prometheus.py` (clusters named by the Canary).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.plugins.metrics.base import Counts, GroupCounts, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.prometheus import (
    DURATION,
    SIDES,
    SUCCESS_RATE,
    PrometheusProvider,
    _bound,
    both_sides,
    read_sides,
    window,
)

QUANTILE = 0.99  # Flagger's request-duration
ENVOY = "envoy"


@dataclass(frozen=True)
class MeshTarget:
    """Whose traffic a Canary's builtin checks measure: its provider, namespace, targetRef and ingressRef."""

    provider: str  # the Canary's `spec.provider` (or the controller's default)
    namespace: str
    target: str  # `targetRef.name`
    ingress: str = ""  # `ingressRef.name` (NGINX); empty: the target's name, as Flagger's `{{ ingress }}`


ProviderOf = Callable[[ObjectKey], MeshTarget]


def mesh_target(canary: Canary, default_provider: str) -> MeshTarget:
    """A Canary's MeshTarget; `default_provider` if `spec.provider` is unset (Flagger's -mesh-provider)."""
    spec = canary.spec
    return MeshTarget(
        spec.provider or default_provider,
        canary.metadata.namespace,
        spec.targetRef.name,
        spec.ingressRef.name if spec.ingressRef else "",
    )


@dataclass(frozen=True)
class Mesh:
    """What a provider's proxies export, read as Flagger's observer reads it."""

    name: str
    requests: str  # counter of responses
    ok: str  # Flagger's "not a failure" matcher
    bad: str  # its complement
    latency: str  # histogram (`_bucket`, `_sum`, `_count`)
    to_ms: float  # the histogram's unit, in milliseconds
    matchers: Callable[[MeshTarget, str], list[str]]  # the label matchers of one side
    ok_at: int | None = None  # where Flagger puts `ok` among the matchers (None: last)
    mean: bool = False  # the duration is the mean (Flagger's NGINX), not the p99

    def selector(self, t: MeshTarget, side: str, *extra: str) -> str:
        return ",".join([*self.matchers(t, side), *extra])


def _workload(t: MeshTarget, side: str) -> str:
    return t.target if side == "canary" else f"{t.target}-primary"


ISTIO = Mesh(
    "istio",
    requests="istio_requests_total",
    ok='response_code!~"5.*"',
    bad='response_code=~"5.*"',
    latency="istio_request_duration_milliseconds",
    to_ms=1.0,
    matchers=lambda t, side: [
        'reporter="destination"',
        f'destination_workload_namespace="{t.namespace}"',
        f'destination_workload=~"{_workload(t, side)}"',
    ],
)
LINKERD = Mesh(
    "linkerd",
    requests="response_total",
    ok='classification!="failure"',
    bad='classification="failure"',
    latency="response_latency_ms",
    to_ms=1.0,
    matchers=lambda t, side: [
        f'namespace="{t.namespace}"',
        f'deployment=~"{_workload(t, side)}"',
        'direction="inbound"',
    ],
    ok_at=2,
)
# Flagger's `kubernetes` and `gatewayapi:*`: the app's own histogram, by pod name (`<target>-<rs>-<pod>`;
# the primary's pods are `<target>-primary-<rs>-<pod>`, which the canary's pattern does not match).
HTTP = Mesh(
    "kubernetes",
    requests="http_request_duration_seconds_count",
    ok='status!~"5.*"',
    bad='status=~"5.*"',
    latency="http_request_duration_seconds",
    to_ms=1000.0,
    matchers=lambda t, side: [
        f'kubernetes_namespace="{t.namespace}"',
        f'kubernetes_pod_name=~"{_workload(t, side)}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"',
    ],
)
# ingress-nginx labels a request the canary backend served with `canary="<upstream>"`, under the main
# ingress's name (Flagger's `ingress="{{ ingress }}", canary!=""`).
NGINX = Mesh(
    "nginx",
    requests="nginx_ingress_controller_requests",
    ok='status!~"5.*"',
    bad='status=~"5.*"',
    latency="nginx_ingress_controller_response_duration_seconds",
    to_ms=1000.0,
    matchers=lambda t, side: [
        f'namespace="{t.namespace}"',
        f'ingress="{t.ingress or t.target}"',
        'canary!=""' if side == "canary" else 'canary=""',
    ],
    mean=True,
)
# The provider names, and the family each reads. `smi:*`: Flagger picks Istio's queries unless its global
# mesh is Linkerd; Rheostat's SMI router is Linkerd's TrafficSplit, so Linkerd's.
PROVIDERS: dict[str, Mesh | None] = {
    "istio": ISTIO,
    "linkerd": LINKERD,
    "smi": LINKERD,
    "kubernetes": HTTP,
    "gatewayapi": HTTP,
    "nginx": NGINX,
    ENVOY: None,  # prometheus.py's queries
}


def supported() -> str:
    return ", ".join(sorted({*PROVIDERS, "smi:*", "gatewayapi:*"} - {"smi", "gatewayapi"}))


def mesh_of(provider: str) -> Mesh | None:
    """The family of a provider name (`smi:v1alpha3` -> smi); None for the embedded Envoy; else ValueError."""
    base = provider.split(":", 1)[0] if provider.startswith(("smi:", "gatewayapi:")) else provider
    if base not in PROVIDERS:
        raise ValueError(
            f"builtin metrics are not supported for provider {provider!r}; supported: {supported()}"
        )
    return PROVIDERS[base]


# -- the queries ---------------------------------------------------------------------------------------


def success_rate(mesh: Mesh, t: MeshTarget, side: str, window_s: float) -> str:
    """Percent of responses that are not failures, over the window; no requests is no data."""
    w = window(window_s)
    bad = f"sum(rate({mesh.requests}{{{mesh.selector(t, side, mesh.bad)}}}[{w}]))"
    total = f"sum(rate({mesh.requests}{{{mesh.selector(t, side)}}}[{w}]))"
    return f"100 * (1 - (({bad}) or on() vector(0)) / ({total} > 0))"


def duration(mesh: Mesh, t: MeshTarget, side: str, window_s: float) -> str:
    """Milliseconds: the p99 of the histogram (NGINX: the mean), kept only where the window has requests."""
    w, sel, h = window(window_s), mesh.selector(t, side), mesh.latency
    total = mesh.selector(t, side, 'le="+Inf"')
    scale = "" if mesh.to_ms == 1 else f" * {mesh.to_ms:g}"
    if mesh.mean:
        return f"sum(rate({h}_sum{{{sel}}}[{w}])) / (sum(rate({h}_count{{{sel}}}[{w}])) > 0){scale}"
    return (
        f"histogram_quantile({QUANTILE}, sum(rate({h}_bucket{{{sel}}}[{w}])) by (le)){scale}"
        f" and on() (sum(rate({h}_bucket{{{total}}}[{w}])) > 0)"
    )


def counts_query(mesh: Mesh, t: MeshTarget) -> str:
    """Both sides' cumulative requests, failures and latency buckets in one instant query (one moment).

    Each part is tagged `rheostat_count="<side>/<part>"`; a part with no series is absent (read as 0)."""
    parts = []
    for side in SIDES:
        for part, expr in (
            ("requests", f"sum({mesh.requests}{{{mesh.selector(t, side)}}})"),
            ("errors", f"sum({mesh.requests}{{{mesh.selector(t, side, mesh.bad)}}})"),
            ("le", f"sum by (le) ({mesh.latency}_bucket{{{mesh.selector(t, side)}}})"),
        ):
            parts.append(f'label_replace({expr}, "rheostat_count", "{side}/{part}", "", "")')
    return " or ".join(parts)


def flagger_query(mesh: Mesh, metric: str, t: MeshTarget, interval: str) -> str:
    """Flagger's own query of the canary, as its Prometheus client sends it (whitespace runs made one)."""
    m = mesh.matchers(t, "canary")
    with_ok = [*m[: mesh.ok_at], mesh.ok, *m[mesh.ok_at :]] if mesh.ok_at is not None else [*m, mesh.ok]

    def rate(name: str, matchers: list[str]) -> str:
        return f"sum( rate( {name}{{ {', '.join(matchers)} }}[{interval}] ) )"

    if metric == SUCCESS_RATE:
        return f" {rate(mesh.requests, with_ok)} / {rate(mesh.requests, m)} * 100"
    if metric != DURATION:
        raise ValueError(f"{metric!r} is not a builtin check")
    if mesh.mean:
        return f" {rate(mesh.latency + '_sum', m)} / {rate(mesh.latency + '_count', m)} * 1000"
    return f" histogram_quantile( {QUANTILE}, {rate(mesh.latency + '_bucket', m)} by (le) )"


def read_counts(mesh: Mesh, series: list[tuple[dict[str, str], float]], text: str) -> Counts:
    """Counts from the answer to `counts_query`: latency bounds in ms, increasing."""

    def group(side: str) -> GroupCounts:
        values: dict[str, float] = {}
        hist: list[tuple[float, int]] = []
        for labels, value in series:
            tag = labels.get("rheostat_count", "")
            if tag == f"{side}/le" and "le" in labels:
                le = _bound(labels["le"], text=text)
                hist.append((le if math.isinf(le) else le * mesh.to_ms, int(value)))
            elif tag.startswith(f"{side}/"):
                values[tag.split("/", 1)[1]] = value
        hist.sort()
        return GroupCounts(
            int(values.get("requests", 0)),
            int(values.get("errors", 0)),
            tuple(le for le, _ in hist),
            tuple(n for _, n in hist),
        )

    return Counts(group("primary"), group("canary"))


# -- the provider --------------------------------------------------------------------------------------


class MeshMetrics:
    """The builtin checks (`builtin` MetricProvider) and the sequential judge's counts (CountSource) of
    Canaries on meshes, through one Prometheus. `provider_of` says which provider and workload a Canary
    uses; a query text (MetricTemplate, inline query) goes to Prometheus as it is."""

    def __init__(self, prometheus: PrometheusProvider, provider_of: ProviderOf) -> None:
        self.prometheus = prometheus
        self.provider_of = provider_of

    def __repr__(self) -> str:
        return f"MeshMetrics({self.prometheus!r})"

    def _target(self, canary: ObjectKey) -> tuple[Mesh | None, MeshTarget]:
        try:
            t = self.provider_of(canary)
            return mesh_of(t.provider), t
        except (LookupError, ValueError) as exc:
            raise ProviderError(f"{canary}: {exc}") from None

    async def query(self, q: MetricQuery) -> float:
        if q.text is not None or q.name not in (SUCCESS_RATE, DURATION):
            return await self.prometheus.query(q)
        mesh, t = self._target(q.canary)
        if mesh is None:
            return await self.prometheus.query(q)
        build = success_rate if q.name == SUCCESS_RATE else duration
        try:
            return await self.prometheus.value(build(mesh, t, q.group, q.window_s))
        except NoData as exc:
            raise NoData(
                f"{t.provider}: no requests of the {q.group} of {t.namespace}/{t.target}: {exc}"
            ) from None

    async def sides(self, q: MetricQuery) -> tuple[float, float | None]:
        mesh, t = self._target(q.canary)
        if mesh is None:
            return await self.prometheus.sides(q)
        build = success_rate if q.name == SUCCESS_RATE else duration
        if q.name not in (SUCCESS_RATE, DURATION):
            raise ProviderError(f"metric {q.name!r} is not a builtin check")
        text = both_sides(lambda side: build(mesh, t, side, q.window_s))
        try:
            return read_sides(await self.prometheus.raw_vector(text), text)
        except NoData as exc:
            raise NoData(
                f"{t.provider}: no requests of the canary of {t.namespace}/{t.target}: {exc}"
            ) from None

    async def is_online(self) -> bool:
        return await self.prometheus.is_online()

    async def counts(self, canary: ObjectKey) -> Counts:
        mesh, t = self._target(canary)
        if mesh is None:
            return await self.prometheus.counts(canary)
        text = counts_query(mesh, t)
        return read_counts(mesh, await self.prometheus.vector(text), text)
