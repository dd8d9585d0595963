"""Graphite as a metrics provider: MetricTemplates with `provider.type: graphite`.

As Flagger (pkg/metrics/providers/graphite.go): the template's query is the query string of Graphite's render
API (`target=...&from=-10min`), sent as `GET <address>/render?<query>&format=json` with runs of whitespace
made one space and any `format` replaced by `json`; nothing else is added, so Graphite's own default window
(`from=-24h`) applies unless the query says otherwise. The value is the last datapoint that is not null, 5 s
timeout for the whole exchange. Basic auth from a secret with `username` and `password`. No series, or only
null datapoints, is "no values".

Unlike Flagger: several series are an error (Flagger takes the last value of whichever series Graphite listed
last), a query without `target=` is an error that says so (Flagger: "no values"), an infinite value is an
error, and `headers` are sent (Flagger's Graphite provider ignores them). Credentials are sent, never logged,
never part of an error message.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Unpack
from urllib.parse import parse_qsl, urlencode

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import Reply
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.http_query import (
    HttpApi,
    HttpOptions,
    address_problems,
    finite,
    json_value,
    needs_text,
    number,
    parsed,
    refuse_errors,
    shown,
    succeeds,
    template_options,
)
from rheostat.plugins.metrics.sources import Problem, SourceContext

ONLINE_QUERY = "target=test"  # Flagger's: any answer but an error means online
_SPACE = re.compile(r"\s+")
Series = tuple[str, list[float | None]]  # (target name, datapoint values in time order)


def interval(seconds: float) -> str:
    """A window as Graphite 1.1 reads it: whole seconds. Graphite refuses Go's `m` and `ms` units
    (`summarize(x, '1m')` is "Invalid offset unit 'm'"), and `min` would round a 90 s window."""
    return f"{max(1, round(seconds))}s"


def render_params(query: str) -> list[tuple[str, str]]:
    """The render API's parameters for a template's query, as Flagger sends them: whitespace runs made one
    space (a YAML block's newlines), the pairs decoded, `format=json`, sorted by name (Go's Encode)."""
    text = _SPACE.sub(" ", query).strip()
    pairs = [(k.strip(), v) for k, v in parse_qsl(text, keep_blank_values=True) if k.strip() != "format"]
    return sorted([*pairs, ("format", "json")], key=lambda kv: kv[0])  # stable: targets keep their order


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    @classmethod
    def from_secret(cls, data: Mapping[str, str] | None) -> Credentials | None:
        """Flagger's keys, both required when a secret is named; sent only when neither is empty."""
        if data is None:
            return None
        for key in ("username", "password"):
            if key not in data:
                raise ValueError(f"the secret has no `{key}` (Graphite's basic auth needs both)")
        if not data["username"] or not data["password"]:
            return None
        return cls(data["username"], data["password"])

    def __repr__(self) -> str:  # never shows the credentials
        return "Credentials(basic)"


class GraphiteProvider:
    def __init__(
        self,
        address: str,
        *,
        credentials: Credentials | None = None,
        **http: Unpack[HttpOptions],
    ) -> None:
        for _, problem in address_problems(address, required="is required", bare=True):
            raise ValueError(f"Graphite address {problem}")
        self.api = HttpApi("Graphite", address, secrets=[credentials.password] if credentials else [], **http)
        self.credentials = credentials

    def __repr__(self) -> str:
        return f"GraphiteProvider({self.api.address!r})"

    # -- MetricProvider --------------------------------------------------------------------------------

    async def query(self, q: MetricQuery) -> float:
        return await self.api.redacted(self.value(needs_text(q, "Graphite has no builtin checks")))

    async def is_online(self) -> bool:
        """Flagger's check: `target=test` answers a list of series, with values or without."""
        return await succeeds(self.fetch(ONLINE_QUERY))

    # -- the render API --------------------------------------------------------------------------------

    async def value(self, text: str) -> float:
        """The last non-null datapoint of the one series the query returns."""
        series = await self.fetch(text)
        if not series:
            raise NoData(f"the query returned no series; query: {text}")
        if len(series) > 1:
            shown = ", ".join(repr(name) for name, _ in series[:3])
            raise ProviderError(
                f"the query returned {len(series)} series ({shown}{', ...' if len(series) > 3 else ''}), "
                f"not one value; aggregate them (sumSeries, averageSeries, ...); query: {text}"
            )
        name, points = series[0]
        last = next((v for v in reversed(points) if v is not None), None)
        if last is None:
            raise NoData(f"the series {name!r} has only null datapoints in the window; query: {text}")
        return finite(last, text)

    async def fetch(self, text: str) -> list[Series]:
        """Every series the query returns; ProviderError for anything that is not a list of series."""
        params = render_params(text)
        if not any(k == "target" for k, _ in params):
            raise ProviderError(
                f"the query has no `target=` parameter (it is the render API's query string, e.g. "
                f"target=sumSeries(a.b.*)&from=-5min); query: {text}"
            )
        return _series(await self._render(params, text), text)

    async def _render(self, params: list[tuple[str, str]], text: str) -> Reply:
        auth = None
        if self.credentials is not None:
            auth = httpx.BasicAuth(self.credentials.username, self.credentials.password)
        # quote_plus, as Go's QueryEscape
        return await self.api.send("GET", f"/render?{urlencode(params)}", text, auth=auth)


def _series(reply: Reply, text: str) -> list[Series]:
    """`[{"target": name, "datapoints": [[value, timestamp], ...]}, ...]`, checked item by item."""
    refuse_errors(reply, "Graphite", text, _reason(reply))
    body = json_value(reply, parsed(reply), "Graphite", text, kind=list, what="a list of series")
    where = f"Graphite answered HTTP {reply.status}"
    out: list[Series] = []
    for item in body:
        name = item.get("target") if isinstance(item, dict) else None
        points = item.get("datapoints") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(points, list):
            raise ProviderError(f"{where} with a series without `target` and `datapoints`; query: {text}")
        out.append((name[:120], [_value(p, text) for p in points]))
    return out


def _value(point: Any, text: str) -> float | None:
    """A datapoint `[value, timestamp]`: a number, null, or a number in a string (Flagger reads those).
    NaN is null: it is how Graphite writes a missing value when it does not write null."""
    value = point[0] if isinstance(point, list) and len(point) == 2 else ...
    if value is None:
        return None
    found = number(value, strings=True)
    if found is not None:
        return None if math.isnan(found) else found
    what = shown(value if isinstance(value, str) else point)
    raise ProviderError(f"Graphite returned a datapoint that is not [number, time] ({what}); query: {text}")


def _reason(reply: Reply) -> str:
    """What Graphite said: its 400s are one line of text; its 500 page is HTML whose traceback ends with the
    error (`ValueError: Invalid offset unit 'm'`)."""
    raw = reply.body[:65536].decode("utf-8", errors="replace")
    pre = re.search(r"<pre>(.*?)(</pre>|$)", raw, re.S)
    if pre:
        lines = [line.strip() for line in html.unescape(pre.group(1)).splitlines() if line.strip()]
        if lines:
            return lines[-1][:300]
    plain = _SPACE.sub(" ", html.unescape(re.sub(r"<[^>]*>", " ", raw))).strip()
    return plain[:300] or "an empty body"


class GraphiteKind:
    """`provider.type: graphite`: the template's own address (Graphite has no controller-wide default)."""

    name = "graphite"

    def interval(self, seconds: float) -> str:
        """`{{ interval }}` as Graphite reads it (see `interval`)."""
        return interval(seconds)

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        return address_problems(spec.address, required="is required", bare=True)

    def make(self, ctx: SourceContext) -> MetricProvider:
        for _, problem in self.problems(ctx.spec):
            raise ValueError(f"provider.address {problem}")
        assert ctx.spec.address is not None  # (problems says so)
        return GraphiteProvider(
            ctx.spec.address,
            credentials=Credentials.from_secret(ctx.secret),
            **template_options(ctx),
        )


KIND = GraphiteKind()
