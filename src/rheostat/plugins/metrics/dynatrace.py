"""Dynatrace as a metrics provider: MetricTemplates with `provider.type: dynatrace` (metric selectors).

As Flagger (pkg/metrics/providers/dynatrace.go): the Metrics API v2, `GET <address>/api/v2/metrics/query`
(https://docs.dynatrace.com/docs/dynatrace-api/environment-api/metric-v2/get-data-points) with
`metricSelector` = the query, `resolution=Inf` (one value per series), `from` = now - 10 x the interval and
`to` = now (Unix milliseconds); the secret's `dynatrace_token` sent as `Authorization: Api-Token <token>`;
the address is the environment's (https://<env>.live.dynatrace.com, or https://<domain>/e/<env> for
Managed) and has no default. No result, no series or no value is "no values". `is_online` lists one metric
(`GET /api/v2/metrics?pageSize=1`) as Flagger does.

Unlike Flagger: several series (or metrics, or a `nextPageKey` saying more series follow) are an error
(Flagger takes the last series of the first metric), and a null value is no data (Go reads it as 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Unpack

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.http_query import (
    HttpApi,
    HttpOptions,
    api_problems,
    judged,
    needs_text,
    secret_values,
    short,
    succeeds,
)
from rheostat.plugins.metrics.sources import Problem, SourceContext

QUERY_PATH = "/api/v2/metrics/query"
LIST_PATH = "/api/v2/metrics"
TOKEN = "dynatrace_token"
KEYS = f"`{TOKEN}`"
FROM_INTERVALS = 10  # as Flagger: ten intervals, folded into one value by resolution=Inf


def _error_text(body: dict[str, Any]) -> str | None:
    """Dynatrace's ErrorEnvelope: `{"error": {"code": 400, "message": "...", "constraintViolations": [...]}}`."""
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    parts = [short(error["message"], 200)] if isinstance(error.get("message"), str) else []
    violations = error.get("constraintViolations")
    if isinstance(violations, list):
        parts += [short(v.get("message"), 200) for v in violations[:3] if isinstance(v, dict)]
    return "; ".join(parts) or None


class DynatraceProvider:
    def __init__(
        self,
        token: str,
        address: str,
        *,
        clock: Callable[[], float] = time.time,
        **http: Unpack[HttpOptions],
    ) -> None:
        self.api = HttpApi("Dynatrace", address, keys=KEYS, error_text=_error_text, secrets=(token,), **http)
        self._headers = {"Authorization": f"Api-Token {token}", "Accept": "application/json"}
        self.clock = clock

    def __repr__(self) -> str:  # never shows the token
        return f"DynatraceProvider({self.api.address!r})"

    async def query(self, q: MetricQuery) -> float:
        text = needs_text(q, "a Dynatrace template needs one").strip()
        return await self.api.redacted(self.value(text, q.window_s))

    async def is_online(self) -> bool:
        """Flagger's check: the token may list the environment's metrics."""
        return await succeeds(
            self.api.json("GET", LIST_PATH, "", params={"pageSize": "1"}, headers=self._headers)
        )

    async def value(self, text: str, window_s: float) -> float:
        now_ms = int(self.clock()) * 1000  # whole seconds, as Flagger
        params = {
            "metricSelector": text,
            "resolution": "Inf",
            "from": str(now_ms - int(FROM_INTERVALS * window_s * 1000)),
            "to": str(now_ms),
        }
        body = await self.api.json("GET", QUERY_PATH, text, params=params, headers=self._headers)
        results = body.get("result")
        if not isinstance(results, list):
            raise ProviderError(f"Dynatrace answered without a `result` list; query: {text}")
        if not results:
            raise NoData(f"the query returned no metric; query: {text}")
        if len(results) > 1:
            raise ProviderError(
                f"the query selected {len(results)} metrics, not one value; select one; query: {text}"
            )
        series = results[0].get("data") if isinstance(results[0], dict) else None
        if not isinstance(series, list):
            raise ProviderError(f"Dynatrace answered a metric without a `data` list; query: {text}")
        if not series:
            raise NoData(f"the query returned no series; query: {text}")
        total = body.get("totalCount")
        more = body.get("nextPageKey") is not None or (isinstance(total, int) and total > len(series))
        if len(series) > 1 or more:
            count = total if isinstance(total, int) and total > len(series) else len(series)
            listed = ", ".join(_dimensions(s) for s in series[:3])
            raise ProviderError(
                f"the query returned {count} series ({listed}{', ...' if count > 3 else ''}), not one value; "
                f"aggregate it (:splitBy() with no dimension, or filter one entity); query: {text}"
            )
        values = series[0].get("values") if isinstance(series[0], dict) else None
        if not isinstance(values, list):
            raise ProviderError(f"Dynatrace answered a series without a `values` list; query: {text}")
        if not values or values[0] is None:
            raise NoData(f"the series has no value in the window; query: {text}")
        return judged(values[0], text, "Dynatrace")


def _dimensions(series: Any) -> str:
    dims = series.get("dimensionMap") if isinstance(series, dict) else None
    if isinstance(dims, dict) and dims:
        return "{" + ", ".join(f"{short(k, 40)}={short(v, 40)}" for k, v in list(dims.items())[:4]) + "}"
    return "{}"


class DynatraceKind:
    """`provider.type: dynatrace`: the environment's address and a secret with its API token."""

    name = "dynatrace"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        required = "must be set to the environment's URL, e.g. https://abc12345.live.dynatrace.com"
        return api_problems(spec, KEYS, required=required)

    def make(self, ctx: SourceContext) -> MetricProvider:
        if not ctx.spec.address:
            raise ValueError("provider.address is not set: Dynatrace needs the environment's URL")
        (token,) = secret_values(ctx, TOKEN)
        return DynatraceProvider(token, ctx.spec.address, client=ctx.client)


KIND = DynatraceKind()
