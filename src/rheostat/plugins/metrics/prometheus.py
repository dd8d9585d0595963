"""Prometheus as a metrics provider: MetricTemplates with `provider.type: prometheus`, inline queries, the
builtin checks written in PromQL on Envoy's metric names, and raw counts for the sequential judge.

As Flagger (pkg/metrics/providers/prometheus.go): an instant query at `<address>/api/v1/query`, 5 s timeout by
default, HTTP >= 400 is an error, an empty vector or NaN is "no values", and a vector of several series gives
the value of the last one. Credentials come from a secret with `token` (bearer) or `username` and `password`
(basic); they are sent, never logged, and never part of an error message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.base import Counts, GroupCounts, MetricQuery, NoData, ProviderError

DEFAULT_TIMEOUT_S = 5.0
SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
Series = tuple[dict[str, str], float]


def cluster(canary: ObjectKey, group: str) -> str:
    """Envoy's cluster name for a canary's group, as the envoy router names it."""
    return f"{canary.replace('/', '-')}-{group}"


def window(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def success_rate_query(canary: ObjectKey, group: str, window_s: float) -> str:
    """Percentage of non-5xx responses, from Envoy's `upstream_rq_xx` counters (the builtin check)."""
    c, w = cluster(canary, group), window(window_s)
    return (
        f'sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{c}",envoy_response_code_class!="5"}}[{w}]))'
        f' / sum(rate(envoy_cluster_upstream_rq_xx{{envoy_cluster_name="{c}"}}[{w}])) * 100'
    )


def duration_query(canary: ObjectKey, group: str, window_s: float) -> str:
    """p99 in milliseconds from Envoy's `upstream_rq_time` histogram (the builtin check)."""
    c, w = cluster(canary, group), window(window_s)
    return (
        "histogram_quantile(0.99, sum(rate("
        f'envoy_cluster_upstream_rq_time_bucket{{envoy_cluster_name="{c}"}}[{w}])) by (le))'
    )


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
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, list[str]] | None = None,
        auth: Auth | None = None,
        insecure_skip_verify: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not address.startswith(("http://", "https://")):
            raise ValueError(f"Prometheus address must be an http(s) URL, got {address!r}")
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = [(k, v) for k, values in (headers or {}).items() for v in values]
        self.auth = auth
        self.insecure_skip_verify = insecure_skip_verify
        self.transport = transport

    def __repr__(self) -> str:
        return f"PrometheusProvider({self.address!r})"

    # -- MetricProvider --------------------------------------------------------------------------------

    async def query(self, q: MetricQuery) -> float:
        if q.text is not None:
            return await self.value(q.text)
        if q.name == SUCCESS_RATE:
            return await self.value(success_rate_query(q.canary, q.group, q.window_s))
        if q.name == DURATION:
            return await self.value(duration_query(q.canary, q.group, q.window_s))
        raise ProviderError(f"metric {q.name!r} has no query and is not a builtin check")

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
        buckets = await self.vector(
            f"sum by (envoy_cluster_name, le) (envoy_cluster_upstream_rq_time_bucket{{{names}}})"
        )

        def group(name: str) -> GroupCounts:
            c = cluster(canary, name)
            hist = sorted(
                (float(labels["le"]), int(v))
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
        """One number: a scalar, or the last series of a vector. Empty or NaN is NoData."""
        result_type, result = await self._query(text)
        if result_type == "scalar":
            value = _number(result, text)
        elif result_type == "vector":
            if not result:
                raise NoData(f"the query returned no series: {text}")
            value = _number(result[-1].get("value"), text)  # several series: the last one, as Flagger
        else:
            raise ProviderError(f"the query returned a {result_type}, not a single value: {text}")
        if math.isnan(value):
            raise NoData(f"the query returned NaN: {text}")
        return value

    async def vector(self, text: str) -> list[Series]:
        result_type, result = await self._query(text)
        if result_type != "vector":
            raise ProviderError(f"the query returned a {result_type}, not a vector: {text}")
        return [(dict(s.get("metric", {})), _number(s.get("value"), text)) for s in result]

    async def _query(self, text: str) -> tuple[str, Any]:
        auth: httpx.Auth | None = None
        headers = httpx.Headers(self.headers)
        if self.auth is not None and self.auth.token:
            headers["Authorization"] = f"Bearer {self.auth.token}"
        elif self.auth is not None and self.auth.username is not None and self.auth.password is not None:
            auth = httpx.BasicAuth(self.auth.username, self.auth.password)
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout_s, verify=not self.insecure_skip_verify, transport=self.transport
            ) as client:
                response = await client.get(
                    f"{self.address}/api/v1/query", params={"query": text}, headers=headers, auth=auth
                )
        except httpx.TimeoutException:
            raise ProviderError(
                f"Prometheus at {self.address} did not answer within {self.timeout_s:g}s; query: {text}"
            ) from None
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"Prometheus at {self.address} is unreachable ({type(exc).__name__}); query: {text}"
            ) from None
        body: Any = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400 or not isinstance(body, dict) or body.get("status") != "success":
            detail = ""
            if isinstance(body, dict) and body.get("error"):
                detail = f": {body.get('errorType', 'error')}: {body['error']}"
            raise ProviderError(f"Prometheus answered HTTP {response.status_code}{detail}; query: {text}")
        data = body.get("data") or {}
        return str(data.get("resultType", "")), data.get("result")


def _number(pair: Any, text: str) -> float:
    """Prometheus' `[timestamp, "value"]`."""
    try:
        return float(pair[1])
    except (TypeError, ValueError, IndexError):
        raise ProviderError(f"Prometheus returned a value that is not a number; query: {text}") from None
