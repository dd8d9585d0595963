"""New Relic as a metrics provider: MetricTemplates with `provider.type: newrelic` (NRQL).

As Flagger (pkg/metrics/providers/newrelic.go): the Insights query API, `GET <address>/v1/accounts/<account
id>/query?nrql=<query> SINCE <interval in seconds> seconds ago`
(https://docs.newrelic.com/docs/apis/insights-apis/query-insights-event-data-api/), the secret's
`newrelic_query_key` sent as X-Query-Key and `newrelic_account_id` in the path, the default address
https://insights-api.newrelic.com (the EU region's is https://insights-api.eu.newrelic.com); an empty
`results` list or a null result is "no values". `is_online` runs `SELECT * FROM Metric` as Flagger does.

Unlike Flagger, which reads only a key named `result` (what an arithmetic SELECT answers) and so finds no
value in `SELECT count(*)` (`{"count": ...}`, the reference's own example), the value is the one function
of the one result, whatever its name, or the one percentile of `percentile(x, 95)`. Several functions,
several results, FACET or TIMESERIES answers are errors that say so: one number is judged.
"""

from __future__ import annotations

import math
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

DEFAULT_ADDRESS = "https://insights-api.newrelic.com"
ACCOUNT_ID = "newrelic_account_id"
QUERY_KEY = "newrelic_query_key"
KEYS = f"`{ACCOUNT_ID}` and `{QUERY_KEY}`"
MAX_NRQL_BYTES = 4000  # "The query string must be less than 4000 bytes" (the reference)
ONLINE_QUERY = "SELECT * FROM Metric"
ONLINE_WINDOW_S = 60.0


def _error_text(body: dict[str, Any]) -> str | None:
    """The Insights API's error answer: `{"error": "..."}`."""
    error = body.get("error")
    return error if isinstance(error, str) and error else None


def nrql(text: str, window_s: float) -> str:
    """The template's NRQL over the interval, as Flagger sends it (whole seconds, at least one)."""
    return f"{text.strip()} SINCE {max(1, math.floor(window_s))} seconds ago"


class NewRelicProvider:
    def __init__(
        self,
        account_id: str,
        query_key: str,
        address: str = DEFAULT_ADDRESS,
        **http: Unpack[HttpOptions],
    ) -> None:
        if not (account_id.isascii() and account_id.isdigit()):
            raise ValueError(f"the secret's `{ACCOUNT_ID}` is not a number")  # not shown: it is a secret's
        self.api = HttpApi(
            "New Relic", address, keys=KEYS, error_text=_error_text, secrets=(account_id, query_key), **http
        )
        self._path = f"/v1/accounts/{account_id}/query"
        self._headers = {"X-Query-Key": query_key, "Accept": "application/json"}

    def __repr__(self) -> str:  # never shows the key or the account
        return f"NewRelicProvider({self.api.address!r})"

    async def query(self, q: MetricQuery) -> float:
        text = nrql(needs_text(q, "a New Relic template needs one"), q.window_s)
        return await self.api.redacted(self.value(text))

    async def is_online(self) -> bool:
        """Flagger's check: the query key may run a query."""
        online = {"nrql": nrql(ONLINE_QUERY, ONLINE_WINDOW_S)}
        return await succeeds(self.api.json("GET", self._path, "", params=online, headers=self._headers))

    async def value(self, text: str) -> float:
        """The one number of a NRQL answer (`text` complete, SINCE included)."""
        if len(text.encode()) >= MAX_NRQL_BYTES:
            raise ProviderError(
                f"the NRQL is {len(text.encode())} bytes; the Insights API takes less than {MAX_NRQL_BYTES}; "
                f"query: {text[:200]}..."
            )
        body = await self.api.json("GET", self._path, text, params={"nrql": text}, headers=self._headers)
        results = body.get("results")
        if not isinstance(results, list):
            for key, clause in (("facets", "FACET"), ("timeSeries", "TIMESERIES")):
                if key in body:
                    raise ProviderError(
                        f"the query has {clause}: one value per {clause.lower()}, not one value; "
                        f"query: {text}"
                    )
            raise ProviderError(f"New Relic answered without a `results` list; query: {text}")
        if not results:
            raise NoData(f"the query returned no results; query: {text}")
        if len(results) > 1:
            raise ProviderError(f"the query returned {len(results)} results, not one value; query: {text}")
        result = results[0]
        if not isinstance(result, dict) or not result:
            raise ProviderError(f"New Relic answered a result that is not an object of values; query: {text}")
        if len(result) > 1:
            names = ", ".join(short(k, 40) for k in list(result)[:4])
            raise ProviderError(
                f"the query returned several values ({names}), not one; select one; query: {text}"
            )
        ((name, raw),) = result.items()
        if isinstance(raw, dict) and len(raw) == 1:  # percentile(x, 95): {"percentile": {"95": v}}
            (raw,) = raw.values()
        if raw is None:
            raise NoData(f"the query's {short(name, 40)} is null; query: {text}")
        return judged(raw, text, "New Relic", what=f"a {short(name, 40)}")


class NewRelicKind:
    """`provider.type: newrelic`: the Insights API's address (default the US region's) and a secret."""

    name = "newrelic"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        return api_problems(spec, KEYS)

    def make(self, ctx: SourceContext) -> MetricProvider:
        account_id, query_key = secret_values(ctx, ACCOUNT_ID, QUERY_KEY)
        return NewRelicProvider(
            account_id,
            query_key,
            ctx.spec.address or DEFAULT_ADDRESS,
            client=ctx.client,
        )


KIND = NewRelicKind()
