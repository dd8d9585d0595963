"""InfluxDB as a metrics provider: MetricTemplates with `provider.type: influxdb`, in Flux or in InfluxQL.

A Flux query goes where Flagger sends it (pkg/metrics/providers/influxdb.go, through InfluxDB's Go client):
`POST <address>/api/v2/query?org=<org>` with `Authorization: Token <token>` and a JSON body asking for
annotated CSV; the answer's `_value` is the number. A query that starts with `SELECT` or `SHOW` is InfluxQL
(InfluxDB 1.x, or 2.x's 1.x-compatible API): `GET <address>/query?q=...`, its JSON `results` read field by
field. The address's own query parameters (`?db=telegraf&rp=autogen`) go with every query: that is how
InfluxQL names its database, as InfluxDB's HTTP API does, without a field Flagger's spec lacks.

Credentials come from the template's secret: `token` (and `org`, as Flagger), or `username` and `password`
(HTTP basic, InfluxDB 1.x). They are sent, never logged, and never part of an error message.

As the Prometheus provider, and unlike Flagger: an answer with no rows, or a null value, is NoData; several
rows, NaN and infinities are errors (a check judged on them would be judged on nothing, or on whichever row
came first); Flux's integers (`count()`) are numbers, not "invalid response". One deadline bounds the whole
exchange (Flagger's 15 s).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import BodyTooLarge, MiB, Reply, request
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.prometheus import tls_context
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 15.0  # Flagger's, for the influxdb provider
MAX_BODY = 10 * MiB
# What Flagger's client asks for: CSV with the three annotation rows, a header row, commas.
FLUX_DIALECT = {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": True}
NUMERIC = {"double", "long", "unsignedLong"}
# InfluxQL's comments (`-- ...` lines, `/* ... */`) may come before the statement.
_INFLUXQL = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*(?:select|show)\b(?!\s*=)", re.I | re.S)


def is_influxql(text: str) -> bool:
    """InfluxQL starts with SELECT or SHOW; no Flux program does (but `select = ...`, a Flux variable)."""
    return _INFLUXQL.match(text) is not None


@dataclass(frozen=True)
class Credentials:
    token: str | None = None
    org: str | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_secret(cls, data: Mapping[str, str] | None) -> Credentials:
        """Flagger's keys: `token` and `org`; or `username` and `password` for InfluxDB 1.x."""
        if not data:
            return cls()
        org = data.get("org") or None
        if data.get("token"):
            return cls(token=data["token"], org=org)
        if data.get("username") and data.get("password"):
            return cls(username=data["username"], password=data["password"], org=org)
        raise ValueError("the secret has neither `token` nor `username` and `password`")

    def __repr__(self) -> str:  # never shows the credentials
        kind = "token" if self.token else ("basic" if self.username else "none")
        return f"Credentials({kind}, org={self.org!r})"


class InfluxProvider:
    def __init__(
        self,
        address: str,
        *,
        credentials: Credentials | None = None,
        headers: Mapping[str, list[str]] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        insecure_skip_verify: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if not address.startswith(("http://", "https://")):
            raise ValueError(f"InfluxDB address must be an http(s) URL, got {address!r}")
        url = httpx.URL(address)
        self.params = list(url.params.multi_items())  # e.g. db=, rp=: sent with every query
        self.base = str(url.copy_with(query=None, fragment=None)).rstrip("/")
        # Messages name the server without what may be secret in the address (user:password@, ?p=).
        self.where = str(url.copy_with(query=None, fragment=None, userinfo=b"")).rstrip("/")
        self.credentials = credentials or Credentials()
        self.headers = [(k, v) for k, values in (headers or {}).items() for v in values]
        self.timeout_s = timeout_s
        self.insecure_skip_verify = insecure_skip_verify
        self.transport = transport
        self.client = client

    def __repr__(self) -> str:
        return f"InfluxProvider({self.where!r})"

    # -- MetricProvider --------------------------------------------------------------------------------

    async def query(self, q: MetricQuery) -> float:
        if q.text is None:
            raise ProviderError(f"metric {q.name!r} has no query (InfluxDB has no builtin checks)")
        return await self.value(q.text)

    async def is_online(self) -> bool:
        """`/ping` answers 204 on InfluxDB 1.x and 2.x."""
        try:
            reply = await self._send("GET", "/ping", "ping", params=[])
        except ProviderError:
            return False
        return reply.status in (200, 204)

    async def value(self, text: str) -> float:
        if is_influxql(text):
            reply = await self._send("GET", "/query", text, params=[*self.params, ("q", text)])
            return influxql_value(reply, text)
        params = [*self.params]
        if self.credentials.org:
            params = [(k, v) for k, v in params if k != "org"] + [("org", self.credentials.org)]
        body = {"query": text, "type": "flux", "dialect": FLUX_DIALECT}
        headers = {"Content-Type": "application/json", "Accept": "application/csv"}
        reply = await self._send("POST", "/api/v2/query", text, params=params, json=body, headers=headers)
        return flux_value(reply, text)

    # -- the HTTP API ----------------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        text: str,
        *,
        params: list[tuple[str, str]],
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        all_headers = httpx.Headers(self.headers)
        all_headers.update(headers or {})
        auth: httpx.Auth | None = None
        c = self.credentials
        if c.token:
            all_headers["Authorization"] = f"Token {c.token}"
        elif c.username is not None and c.password is not None:
            if path == "/api/v2/query":  # InfluxDB 1.8+ takes Flux's token as `username:password`
                all_headers["Authorization"] = f"Token {c.username}:{c.password}"
            else:
                auth = httpx.BasicAuth(c.username, c.password)
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
                    method,
                    f"{self.base}{path}",
                    deadline_s=self.timeout_s,
                    cap=MAX_BODY,
                    params=params,
                    headers=all_headers,
                    auth=auth,
                    **kwargs,
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(
                f"InfluxDB at {self.where} did not answer within {self.timeout_s:g}s; query: {text}"
            ) from None
        except BodyTooLarge as exc:
            raise ProviderError(f"InfluxDB at {self.where}: {exc}; query: {text}") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise ProviderError(
                f"InfluxDB at {self.where} is unreachable ({network_error(exc)}); query: {text}"
            ) from None


# -- InfluxQL: {"results": [{"statement_id": 0, "series": [{"columns": [...], "values": [[...]]}]}]} ------


def influxql_value(reply: Reply, text: str) -> float:
    where = f"InfluxDB answered HTTP {reply.status}"
    body = _json(reply, text)
    if body is None or isinstance(body.get("error"), str) or reply.status >= 400:
        raise ProviderError(f"{where}{_error_detail(body, reply)}; query: {text}")
    results = body.get("results")
    if not isinstance(results, list) or not results or not all(isinstance(r, dict) for r in results):
        raise ProviderError(f"{where} without a list of `results`; query: {text}")
    if len(results) > 1:
        raise ProviderError(f"{where} with {len(results)} statements, not one; query: {text}")
    statement: dict[str, Any] = results[0]
    if statement.get("error") is not None:
        raise ProviderError(
            f"{where}: the statement failed: {_short(statement['error'], 300)}; query: {text}"
        )
    series = statement.get("series")
    if series is None or series == []:
        raise NoData(f"the query returned no series; query: {text}")
    if not isinstance(series, list) or not all(isinstance(s, dict) for s in series):
        raise ProviderError(f"{where} with `series` that is not a list of objects; query: {text}")
    if len(series) > 1:
        tags = ", ".join(_tags(s.get("tags")) for s in series[:3])
        raise ProviderError(
            f"the query returned {len(series)} series ({tags}{', ...' if len(series) > 3 else ''}), "
            f"not one value; drop the GROUP BY; query: {text}"
        )
    columns, rows = series[0].get("columns"), series[0].get("values")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise ProviderError(f"{where} with a series without its `columns`; query: {text}")
    if rows is None or rows == []:
        raise NoData(f"the query returned no rows; query: {text}")
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == len(columns) for r in rows):
        raise ProviderError(f"{where} with `values` that do not match its columns; query: {text}")
    if len(rows) > 1:
        raise ProviderError(
            f"the query returned {len(rows)} rows, not one value; aggregate them (sum, mean, ...) "
            f"without GROUP BY time(); query: {text}"
        )
    fields = [i for i, name in enumerate(columns) if name != "time"]
    if len(fields) != 1:
        shown = ", ".join(_short(columns[i], 40) for i in fields[:4]) or "none"
        raise ProviderError(f"the query returned {len(fields)} fields ({shown}), not one; query: {text}")
    return _finite(rows[0][fields[0]], text)


def _json(reply: Reply, text: str) -> dict[str, Any] | None:
    """The answer's JSON object; None when it is not one and the status says why (an error page)."""
    where = f"InfluxDB answered HTTP {reply.status}"
    if not reply.body.strip():
        raise ProviderError(f"{where} with an empty body; query: {text}")
    try:
        body = json.loads(reply.body, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        if reply.status >= 400:
            return None
        raise ProviderError(
            f"{where} with a body that is not JSON: {reply.text(80)!r}; query: {text}"
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(f"{where} with JSON that is not an object; query: {text}")
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _error_detail(body: Mapping[str, Any] | None, reply: Reply) -> str:
    """InfluxDB 1.x's `{"error": ...}`, 2.x's `{"code": ..., "message": ...}`, or the start of the body."""
    if body is None:
        return (
            f" with a body that is not JSON: {reply.text(80)!r}"
            if reply.body.strip()
            else " with an empty body"
        )
    if isinstance(body.get("error"), str):
        return f": {_short(body['error'], 300)}"
    if isinstance(body.get("message"), str):
        code = f"{_short(body['code'], 40)}: " if isinstance(body.get("code"), str) else ""
        return f": {code}{_short(body['message'], 300)}"
    return ""


def _finite(value: Any, text: str) -> float:
    if value is None:
        raise NoData(f"the query returned a null value; query: {text}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = repr(value[:40]) if isinstance(value, str) else f"a {type(value).__name__}"
        raise ProviderError(f"the query returned a value that is not a number ({shown}); query: {text}")
    number = float(value)
    if not math.isfinite(number):
        raise ProviderError(f"the query returned {_show(number)}, not a number to judge; query: {text}")
    return number


# -- Flux: annotated CSV, tables separated by blank lines ----------------------------------------------


def flux_value(reply: Reply, text: str) -> float:
    """The `_value` of the one row of the answer's tables; no row is NoData."""
    where = f"InfluxDB answered HTTP {reply.status}"
    if reply.status >= 400:
        body = None
        with contextlib.suppress(ProviderError):
            body = _json(reply, text)
        detail = _error_detail(body, reply) if reply.body.strip() else " with an empty body"
        raise ProviderError(f"{where}{detail}; query: {text}")
    try:
        decoded = reply.body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProviderError(f"{where} with a body that is not UTF-8 text; query: {text}") from None
    values: list[tuple[str, str]] = []  # (datatype, cell) of each row's _value
    datatypes: list[str] = []
    defaults: list[str] = []
    header: list[str] | None = None
    try:
        for row in csv.reader(io.StringIO(decoded, newline=""), strict=True):
            if not any(row):  # a blank line ends a table; the next one brings its own annotations
                header, datatypes, defaults = None, [], []
            elif row[0].startswith("#"):
                if header is not None:  # annotations after rows: a new table without a blank line
                    header, datatypes, defaults = None, [], []
                if row[0] == "#datatype":
                    datatypes = row
                elif row[0] == "#default":
                    defaults = row
            elif header is None:
                header = row
                if row[0] != "" or ("_value" not in row and "error" not in row):
                    raise ProviderError(
                        f"{where} with a body that is not InfluxDB's annotated CSV: {reply.text(80)!r}; "
                        f"query: {text}"
                    )
            elif len(row) != len(header):
                raise ProviderError(f"{where} with a CSV row that does not match its header; query: {text}")
            elif "error" in header and "_value" not in header:
                message = row[header.index("error")]
                raise ProviderError(f"{where}: the query failed: {_short(message, 300)}; query: {text}")
            else:
                i = header.index("_value")
                cell = row[i] or (defaults[i] if i < len(defaults) else "")
                values.append((datatypes[i] if i < len(datatypes) else "", cell))
    except csv.Error:
        raise ProviderError(
            f"{where} with CSV that cannot be read: {reply.text(80)!r}; query: {text}"
        ) from None
    if not values:
        raise NoData(f"the query returned no rows; query: {text}")
    if len(values) > 1:
        raise ProviderError(
            f"the query returned {len(values)} rows, not one value; aggregate them "
            f"(|> group() |> sum(), ...); query: {text}"
        )
    datatype, cell = values[0]
    if cell == "":
        raise NoData(f"the query returned a null _value; query: {text}")
    if datatype and datatype not in NUMERIC:
        raise ProviderError(f"the query's _value is a {_short(datatype, 40)}, not a number; query: {text}")
    try:
        number = float(cell)
    except ValueError:
        raise ProviderError(
            f"the query returned a value that is not a number ({cell[:40]!r}); query: {text}"
        ) from None
    if not math.isfinite(number):
        raise ProviderError(f"the query returned {_show(number)}, not a number to judge; query: {text}")
    return number


def _short(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else f"<{type(value).__name__}>"


def _tags(tags: Any) -> str:
    if not isinstance(tags, dict):
        return "{}"
    return "{" + ", ".join(f'{_short(k, 40)}="{_short(v, 40)}"' for k, v in sorted(tags.items())[:6]) + "}"


def _show(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


class InfluxKind:
    """`provider.type: influxdb`: an address is required (Flagger refuses a template without one too)."""

    name = "influxdb"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        if not spec.address:
            return [("address", "is required: the InfluxDB server's URL, e.g. http://influxdb:8086")]
        if not spec.address.startswith(("http://", "https://")):
            return [("address", f"must be an http(s) URL, got {spec.address[:80]!r}")]
        return []

    def make(self, ctx: SourceContext) -> MetricProvider:
        if not ctx.spec.address:
            raise ValueError("provider.address is required for influxdb")
        return InfluxProvider(
            ctx.spec.address,
            credentials=Credentials.from_secret(ctx.secret),
            headers=ctx.spec.headers,
            insecure_skip_verify=bool(ctx.spec.insecureSkipVerify),
            client=ctx.client,
        )


KIND = InfluxKind()
