"""Datadog as a metrics provider: MetricTemplates with `provider.type: datadog`.

As Flagger (pkg/metrics/providers/datadog.go): `GET <address>/api/v1/query` ("Query timeseries points",
https://docs.datadoghq.com/api/latest/metrics/query-timeseries-points/) with `query`, `from` = now - 10 x
the interval and `to` = now (Unix seconds); the secret's `datadog_api_key` and `datadog_application_key` sent
as DD-API-KEY and DD-APPLICATION-KEY; the default address https://api.datadoghq.com; the value is the
first (oldest) point of the series, since the newest bucket is usually incomplete; no series or no points
is "no values". `is_online` asks `GET /api/v1/validate` (https://docs.datadoghq.com/api/latest/authentication/).

Unlike Flagger: several series are an error (Flagger takes the first, whichever that is); a null point is
skipped (Go reads it as 0, a value that passes most thresholds) and a series of null points only is no
data; an answer with `"status": "error"` is an error with Datadog's message.
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
)
from rheostat.plugins.metrics.sources import Problem, SourceContext

DEFAULT_ADDRESS = "https://api.datadoghq.com"
QUERY_PATH = "/api/v1/query"
VALIDATE_PATH = "/api/v1/validate"
API_KEY = "datadog_api_key"
APPLICATION_KEY = "datadog_application_key"
FROM_INTERVALS = 10  # Flagger asks for ten intervals and reads the oldest point
KEYS = f"`{API_KEY}` and `{APPLICATION_KEY}`"


def _error_text(body: dict[str, Any]) -> str | None:
    """Datadog's APIErrorResponse: `{"errors": ["..."]}`; a query answer may carry `error` instead."""
    errors = body.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(short(e, 200) for e in errors[:3])
    if isinstance(body.get("error"), str) and body["error"]:
        return str(body["error"])
    return None


class DatadogProvider:
    def __init__(
        self,
        api_key: str,
        application_key: str,
        address: str = DEFAULT_ADDRESS,
        *,
        clock: Callable[[], float] = time.time,
        **http: Unpack[HttpOptions],
    ) -> None:
        self.api = HttpApi(
            "Datadog", address, keys=KEYS, error_text=_error_text, secrets=(api_key, application_key), **http
        )
        self._headers = {"DD-API-KEY": api_key, "DD-APPLICATION-KEY": application_key}
        self.clock = clock

    def __repr__(self) -> str:  # never shows the keys
        return f"DatadogProvider({self.api.address!r})"

    async def query(self, q: MetricQuery) -> float:
        text = needs_text(q, "a Datadog template needs one")
        return await self.api.redacted(self.value(text, q.window_s))

    async def is_online(self) -> bool:
        """Flagger's check: the keys validate (`{"valid": true}`)."""
        try:
            body = await self.api.json(
                "GET",
                VALIDATE_PATH,
                "validate",
                params={},
                headers=self._request_headers(),
            )
        except ProviderError:
            return False
        return body.get("valid") is True

    def _request_headers(self) -> dict[str, str]:
        return {**self._headers, "Accept": "application/json"}

    async def value(self, text: str, window_s: float) -> float:
        now = int(self.clock())
        params = {"from": str(now - int(FROM_INTERVALS * window_s)), "to": str(now), "query": text}
        body = await self.api.json("GET", QUERY_PATH, text, params=params, headers=self._request_headers())
        if body.get("status") == "error":
            raise ProviderError(f"Datadog answered an error: {short(_error_text(body) or '')}; query: {text}")
        series = body.get("series")
        if not isinstance(series, list):
            raise ProviderError(f"Datadog answered without a `series` list; query: {text}")
        if not series:
            raise NoData(f"the query returned no series; query: {text}")
        if len(series) > 1:
            scopes = ", ".join(short(s.get("scope") if isinstance(s, dict) else s, 60) for s in series[:3])
            raise ProviderError(
                f"the query returned {len(series)} series ({scopes}{', ...' if len(series) > 3 else ''}), "
                f"not one value; aggregate it (sum:, avg:, ... without `by`); query: {text}"
            )
        points = series[0].get("pointlist") if isinstance(series[0], dict) else None
        if not isinstance(points, list):
            raise ProviderError(f"Datadog answered a series without a `pointlist` list; query: {text}")
        for point in points:
            if not isinstance(point, list) or len(point) != 2:
                raise ProviderError(f"Datadog answered a point that is not [time, value]; query: {text}")
            if point[1] is None:
                continue  # an empty bucket
            return judged(point[1], text, "Datadog")
        raise NoData(f"the series has no points{' but nulls' if points else ''}; query: {text}")


class DatadogKind:
    """`provider.type: datadog`: the address (default Datadog's US1 site) and a secret with both keys."""

    name = "datadog"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        return api_problems(spec, KEYS)

    def make(self, ctx: SourceContext) -> MetricProvider:
        api_key, application_key = secret_values(ctx, API_KEY, APPLICATION_KEY)
        return DatadogProvider(
            api_key,
            application_key,
            ctx.spec.address or DEFAULT_ADDRESS,
            client=ctx.client,
        )


KIND = DatadogKind()
