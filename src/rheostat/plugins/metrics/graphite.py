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

import contextlib
import html
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import BodyTooLarge, MiB, Reply, request
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.prometheus import tls_context
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 5.0
MAX_BODY = 10 * MiB  # a day of 1 s points is ~0.3 MiB per series; past this it is a failed check
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
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, list[str]] | None = None,
        credentials: Credentials | None = None,
        insecure_skip_verify: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        problem = address_problem(address)
        if problem:
            raise ValueError(f"Graphite address {problem}")
        self.address = address.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = [(k, v) for k, values in (headers or {}).items() for v in values]
        self.credentials = credentials
        self.insecure_skip_verify = insecure_skip_verify
        self.transport = transport
        self.client = client  # the controller's shared client, when it has one

    def __repr__(self) -> str:
        return f"GraphiteProvider({self.address!r})"

    # -- MetricProvider --------------------------------------------------------------------------------

    async def query(self, q: MetricQuery) -> float:
        if q.text is None:
            raise ProviderError(f"metric {q.name!r} has no query; Graphite has no builtin checks")
        return await self.value(q.text)

    async def is_online(self) -> bool:
        """Flagger's check: `target=test` answers a list of series, with values or without."""
        try:
            await self.fetch(ONLINE_QUERY)
        except ProviderError:
            return False
        return True

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
        if not math.isfinite(last):
            raise ProviderError(f"the query returned {last}, not a number to judge; query: {text}")
        return last

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
        url = f"{self.address}/render?{urlencode(params)}"  # quote_plus, as Go's QueryEscape
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = self.client
                if client is None:
                    client = httpx.AsyncClient(
                        timeout=self.timeout_s,
                        verify=tls_context(self.insecure_skip_verify),
                        transport=self.transport,
                    )
                    stack.push_async_callback(client.aclose)
                return await request(
                    client,
                    "GET",
                    url,
                    deadline_s=self.timeout_s,
                    cap=MAX_BODY,
                    headers=self.headers,
                    auth=auth,
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(
                f"Graphite at {self.address} did not answer within {self.timeout_s:g}s; query: {text}"
            ) from None
        except BodyTooLarge as exc:
            raise ProviderError(f"Graphite at {self.address}: {exc}; query: {text}") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise ProviderError(
                f"Graphite at {self.address} is unreachable ({network_error(exc)}); query: {text}"
            ) from None


def _series(reply: Reply, text: str) -> list[Series]:
    """`[{"target": name, "datapoints": [[value, timestamp], ...]}, ...]`, checked item by item."""
    where = f"Graphite answered HTTP {reply.status}"
    if reply.status >= 400:
        raise ProviderError(f"{where}: {_reason(reply)}; query: {text}")
    if not reply.body.strip():
        raise ProviderError(f"{where} with an empty body; query: {text}")
    try:
        body = json.loads(reply.body)
    except (ValueError, RecursionError):
        raise ProviderError(
            f"{where} with a body that is not JSON: {reply.text(80)!r}; query: {text}"
        ) from None
    if not isinstance(body, list):
        raise ProviderError(f"{where} with JSON that is not a list of series; query: {text}")
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
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if math.isnan(value) else float(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
            return None if math.isnan(number) else number
    shown = repr(value[:40]) if isinstance(value, str) else f"a {type(point).__name__}"
    raise ProviderError(f"Graphite returned a datapoint that is not [number, time] ({shown}); query: {text}")


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


def address_problem(address: str | None) -> str | None:
    """What is wrong with a template's Graphite address, or None."""
    if not address:
        return "is required"
    try:
        parts = urlsplit(address)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL, got {address[:80]!r}"
    if parts.query or parts.fragment:
        return f"must be a base URL without a query or fragment, got {address[:80]!r}"
    return None


class GraphiteKind:
    """`provider.type: graphite`: the template's own address (Graphite has no controller-wide default)."""

    name = "graphite"

    def interval(self, seconds: float) -> str:
        """`{{ interval }}` as Graphite reads it (see `interval`)."""
        return interval(seconds)

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        problem = address_problem(spec.address)
        return [("address", problem)] if problem else []

    def make(self, ctx: SourceContext) -> MetricProvider:
        problem = address_problem(ctx.spec.address)
        if problem or ctx.spec.address is None:
            raise ValueError(f"provider.address {problem}")
        return GraphiteProvider(
            ctx.spec.address,
            headers=ctx.spec.headers,
            credentials=Credentials.from_secret(ctx.secret),
            insecure_skip_verify=bool(ctx.spec.insecureSkipVerify),
            client=ctx.client,
        )


KIND = GraphiteKind()
