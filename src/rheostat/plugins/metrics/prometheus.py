"""Prometheus as a metrics provider: MetricTemplates with `provider.type: prometheus`, inline queries, the
builtin checks written in PromQL on Envoy's metric names, and raw counts for the sequential judge.

As Flagger (pkg/metrics/providers/prometheus.go): an instant query at `<address>/api/v1/query`, 5 s timeout by
default (for the whole exchange, body included), HTTP >= 400 is an error and an empty vector is "no values".
Unlike Flagger, NaN, +Inf, -Inf and a vector of several series are errors, not a value: a check judged on
them would be judged on nothing. Any answer that is not Prometheus' JSON envelope is an error that says what
is wrong with it. Credentials come from a secret with `token` (bearer) or `username` and `password`
(basic); they are sent, never logged, and never part of an error message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Unpack

import httpx

from rheostat.model.base import ObjectKey
from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import Reply
from rheostat.plugins.metrics.base import (
    Counts,
    GroupCounts,
    MetricProvider,
    MetricQuery,
    NoData,
    ProviderError,
)
from rheostat.plugins.metrics.http_query import (
    DEFAULT_TIMEOUT_S,
    HttpApi,
    HttpOptions,
    address_problems,
    finite,
    infinite,
    json_answer,
    number,
    short,
    shown,
    template_options,
    tls_context,
)
from rheostat.plugins.metrics.sources import Problem, SourceContext

__all__ = ["DEFAULT_TIMEOUT_S", "PrometheusProvider", "tls_context"]  # tls_context: the controller's too
SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
Series = tuple[dict[str, str], float]
SIDES = ("primary", "canary")


def cluster(canary: ObjectKey, group: str) -> str:
    """Envoy's cluster name for a canary's group, as the envoy router names it."""
    return f"{canary.replace('/', '-')}-{group}"


def window(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def success_rate_query(canary: ObjectKey, group: str, window_s: float) -> str:
    """Percentage of non-5xx responses, from Envoy's `upstream_rq_xx` counters (the builtin check).

    Computed as 100 x (1 - 5xx / all), with no 5xx series read as 0: a canary that answers only 5xx has no
    2xx series at all, and must read 0%, not "no data". `> 0` on the denominator: a window without
    requests is an empty vector (no data), not 0/0 = NaN."""
    c, w = cluster(canary, group), window(window_s)
    errors = f'sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{c}",envoy_response_code_class="5"}}[{w}]))'
    total = f'sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{c}"}}[{w}]))'
    return f"100 * (1 - (({errors}) or on() vector(0)) / ({total} > 0))"


def duration_query(canary: ObjectKey, group: str, window_s: float) -> str:
    """p99 in milliseconds from Envoy's `upstream_rq_time` histogram (the builtin check).

    Kept only where the window has samples, so no traffic is no data rather than NaN."""
    c, w = cluster(canary, group), window(window_s)
    return (
        "histogram_quantile(0.99, sum(rate("
        f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{c}"}}[{w}])) by (le))'
        f' and on() (sum(rate(envoy_cluster_upstream_rq_time_count{{envoy_cluster_name="{c}"}}[{w}])) > 0)'
    )


def both_sides(build: Callable[[str], str]) -> str:
    """One instant query of both groups, each series tagged `rheostat_side="<group>"`."""
    return " or ".join(f'label_replace({build(side)}, "rheostat_side", "{side}", "", "")' for side in SIDES)


def read_sides(series: list[Series], text: str) -> tuple[float, float | None]:
    """(canary, primary) from the answer to `both_sides`; no canary series is NoData."""
    found: dict[str, list[float]] = {side: [] for side in SIDES}
    for labels, value in series:
        found.setdefault(labels.get("rheostat_side", ""), []).append(value)
    canary, primary = found["canary"], found["primary"]
    if not canary:
        raise NoData(f"the query returned no series of the canary; query: {text}")
    if len(canary) > 1 or len(primary) > 1:
        raise ProviderError(f"the query returned several series for one group, not one value; query: {text}")
    shown = primary[0] if primary and math.isfinite(primary[0]) else None
    return finite(canary[0], text), shown


@dataclass(frozen=True)
class Auth:
    token: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_secret(cls, data: Mapping[str, str] | None) -> Auth | None:
        """Flagger's keys: `token`, or `username` and `password`."""
        if not data:
            return None
        if data.get("token"):
            return cls(token=data["token"])
        if data.get("username") and data.get("password"):
            return cls(username=data["username"], password=data["password"])
        raise ValueError("the secret has neither `token` nor `username` and `password`")

    def __repr__(self) -> str:  # never shows the credentials
        return "Auth(token)" if self.token else "Auth(basic)"


class PrometheusProvider:
    def __init__(
        self,
        address: str,
        *,
        auth: Auth | None = None,
        **http: Unpack[HttpOptions],
    ) -> None:
        secrets = (auth.token, auth.password) if auth else ()
        self.api = HttpApi("Prometheus", address, secrets=secrets, **http)
        self.auth = auth

    @property
    def address(self) -> str:
        return self.api.address

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.address!r})"

    # -- MetricProvider --------------------------------------------------------------------------------

    async def query(self, q: MetricQuery) -> float:
        if q.text is not None:
            return await self.api.redacted(self.value(q.text))
        if q.name == SUCCESS_RATE:
            return await self.value(success_rate_query(q.canary, q.group, q.window_s))
        if q.name == DURATION:
            return await self.value(duration_query(q.canary, q.group, q.window_s))
        raise ProviderError(f"metric {q.name!r} has no query and is not a builtin check")

    async def sides(self, q: MetricQuery) -> tuple[float, float | None]:
        if q.name == SUCCESS_RATE:
            text = both_sides(lambda side: success_rate_query(q.canary, side, q.window_s))
        elif q.name == DURATION:
            text = both_sides(lambda side: duration_query(q.canary, side, q.window_s))
        else:
            raise ProviderError(f"metric {q.name!r} is not a builtin check")
        return read_sides(await self.raw_vector(text), text)

    async def is_online(self) -> bool:
        """Flagger's check: `vector(1)` answers 1."""
        try:
            return await self.value("vector(1)") == 1.0
        except (ProviderError, NoData):
            return False

    async def counts(self, canary: ObjectKey) -> Counts:
        """Raw cumulative counters of both groups (for the sequential judge)."""
        names = f'envoy_cluster_name=~"{cluster(canary, "primary")}|{cluster(canary, "canary")}"'
        requests = await self.vector(
            f"sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_completed{{{names}}})"
        )
        errors = await self.vector(
            f'sum by (envoy_cluster_name) (envoy_cluster_upstream_rq_xx{{{names},envoy_response_code_class="5"}})'
        )
        buckets_query = f"sum by (envoy_cluster_name, le) (envoy_cluster_upstream_rq_time_bucket{{{names}}})"
        buckets = await self.vector(buckets_query)

        def group(name: str) -> GroupCounts:
            c = cluster(canary, name)
            hist = sorted(
                (_bound(labels["le"], text=buckets_query), int(v))
                for labels, v in buckets
                if labels.get("envoy_cluster_name") == c and "le" in labels
            )
            return GroupCounts(
                sum(int(v) for labels, v in requests if labels.get("envoy_cluster_name") == c),
                sum(int(v) for labels, v in errors if labels.get("envoy_cluster_name") == c),
                tuple(le for le, _ in hist),
                tuple(n for _, n in hist),
            )

        return Counts(group("primary"), group("canary"))

    # -- the HTTP API ----------------------------------------------------------------------------------

    async def value(self, text: str) -> float:
        """One finite number: a scalar, or a vector of exactly one series. No series is NoData."""
        result_type, result = await self._query(text)
        if result_type == "scalar":
            value = _number(result, text)
        elif result_type == "vector":
            series = _series(result, text)
            if not series:
                raise NoData(f"the query returned no series; query: {text}")
            if len(series) > 1:
                shown = ", ".join(_labels(labels) for labels, _ in series[:3])
                raise ProviderError(
                    f"the query returned {len(series)} series ({shown}{', ...' if len(series) > 3 else ''}), "
                    f"not one value; aggregate it (sum, max, ...); query: {text}"
                )
            value = series[0][1]
        else:
            raise ProviderError(
                f"the query returned a {result_type or 'result'}, not a single value; query: {text}"
            )
        return finite(value, text)

    async def raw_vector(self, text: str) -> list[Series]:
        """Every series of an instant vector, as answered (NaN included)."""
        result_type, result = await self._query(text)
        if result_type != "vector":
            raise ProviderError(
                f"the query returned a {result_type or 'result'}, not a vector; query: {text}"
            )
        return _series(result, text)

    async def vector(self, text: str) -> list[Series]:
        """Every series of an instant vector; each value finite."""
        series = await self.raw_vector(text)
        for labels, value in series:
            if not math.isfinite(value):
                raise ProviderError(
                    f"the query returned {infinite(value)} for {_labels(labels)}; query: {text}"
                )
        return series

    async def _query(self, text: str) -> tuple[str, Any]:
        """(resultType, result) of a successful answer; ProviderError for anything else."""
        auth: httpx.Auth | None = None
        headers: dict[str, str] = {}
        if self.auth is not None and self.auth.token:
            headers["Authorization"] = f"Bearer {self.auth.token}"
        elif self.auth is not None and self.auth.username is not None and self.auth.password is not None:
            auth = httpx.BasicAuth(self.auth.username, self.auth.password)
        reply = await self.api.send(
            "GET", "/api/v1/query", text, params={"query": text}, headers=headers, auth=auth
        )
        return _answer(reply, text)


def _error_text(body: dict[str, Any]) -> str | None:
    """Prometheus' error envelope: `{"status": "error", "errorType": "...", "error": "..."}`."""
    if body.get("error"):
        return f"{short(body.get('errorType', 'error'), 80)}: {short(body['error'])}"
    if body.get("status") != "success":
        return f"status {short(body.get('status'), 40)!r}"
    return None


def _answer(reply: Reply, text: str) -> tuple[str, Any]:
    """The `data` of Prometheus' JSON envelope, or ProviderError saying what is wrong with the answer."""
    body = json_answer(reply, "Prometheus", text, _error_text)
    where = f"Prometheus answered HTTP {reply.status}"
    said = _error_text(body)  # an error in an answer of 200
    if said:
        raise ProviderError(f"{where}: {said}; query: {text}")
    if body.get("isPartial") is True:  # VictoriaMetrics' cluster, missing some storage nodes: an undercount
        raise ProviderError(
            f"{where} with a partial answer (isPartial: some storage nodes missing); query: {text}"
        )
    data = body.get("data")
    if not isinstance(data, dict):
        raise ProviderError(f"{where} without a `data` object; query: {text}")
    return short(data.get("resultType", ""), 40), data.get("result")


def _series(result: Any, text: str) -> list[Series]:
    """A vector's `[{"metric": {...}, "value": [t, "v"]}, ...]`, checked item by item."""
    if not isinstance(result, list):
        raise ProviderError(f"Prometheus returned a vector whose result is not a list; query: {text}")
    out: list[Series] = []
    for item in result:
        labels = item.get("metric", {}) if isinstance(item, dict) else None
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise ProviderError(f"Prometheus returned a series without string labels; query: {text}")
        out.append((dict(labels), _number(item.get("value"), text)))
    return out


def _number(pair: Any, text: str) -> float:
    """Prometheus' `[timestamp, "value"]`."""
    value = pair[1] if isinstance(pair, list) and len(pair) == 2 else None
    found = number(value, strings=True) if isinstance(value, str) else None
    if found is None:
        what = shown(value if isinstance(value, str) else pair)
        raise ProviderError(f"Prometheus returned a value that is not a number ({what}); query: {text}")
    return found


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{k[:40]}="{v[:40]}"' for k, v in sorted(labels.items())[:6]) + "}"


def _bound(le: str, *, text: str) -> float:
    """A histogram bucket's `le` label: a number or +Inf."""
    try:
        bound = float(le)
    except ValueError:
        raise ProviderError(
            f"Prometheus returned a bucket bound that is not a number ({le[:40]!r}); query: {text}"
        ) from None
    if math.isnan(bound):
        raise ProviderError(f"Prometheus returned a bucket bound that is NaN; query: {text}")
    return bound


class PrometheusKind:
    """`provider.type: prometheus`: the template's own address, else the controller's --metrics-server."""

    name = "prometheus"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        return address_problems(spec.address)

    def make(self, ctx: SourceContext) -> MetricProvider:
        address = ctx.spec.address or ctx.default_address
        if not address:
            raise ValueError("provider.address is not set and there is no metrics server")
        return PrometheusProvider(
            address,
            auth=Auth.from_secret(ctx.secret),
            **template_options(ctx),
        )


KIND = PrometheusKind()
