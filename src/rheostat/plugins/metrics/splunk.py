"""Splunk Observability (SignalFx) as a metrics provider: MetricTemplates with `provider.type: splunk`.

As Flagger (pkg/metrics/providers/splunk.go): the query is a SignalFlow program, run over the last 10
intervals and `immediate`, with the access token from the secret's `sf_token_key` (also `splunk_token`); the
check's value is the last value published, and values of more than one time series are an error. Flagger
talks SignalFlow over a WebSocket; here it is SignalFlow's HTTP API, `POST /v2/signalflow/execute` on the
stream endpoint (`https://api.<realm>.signalfx.com` becomes `https://stream.<realm>.signalfx.com`, as
Flagger does), whose answer is a server-sent-event stream read until END_OF_CHANNEL under one deadline.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import MiB
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 5.0  # Flagger's, for the whole computation
MAX_BODY = 10 * MiB
WINDOWS = 10  # Flagger runs the program over the last 10 metric intervals
TOKEN_KEYS = ("sf_token_key", "splunk_token")  # Flagger's documented key first


def endpoints(address: str) -> tuple[str, str]:
    """(stream, api) base URLs from the template's address, either one of a realm's, or any other host."""
    parts = urlsplit(address.rstrip("/"))
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    host = parts.netloc
    stream = "stream." + host[4:] if host.startswith("api.") else host
    api = "api." + host[7:] if host.startswith("stream.") else host
    return (
        urlunsplit((scheme, stream, parts.path, "", "")),
        urlunsplit((scheme, api, parts.path, "", "")),
    )


@dataclass
class Event:
    name: str = "message"
    data: list[str] = field(default_factory=list)


class EventStream:
    """The text/event-stream format (WHATWG HTML, "server-sent events"), fed bytes as they come."""

    def __init__(self) -> None:
        self._buffer = ""
        self._event = Event()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, chunk: bytes) -> Iterator[tuple[str, str]]:
        """Every complete event so far: (event name, data with its lines joined by newlines)."""
        self._buffer += self._decoder.decode(chunk)
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return
            line, end = cut
            self._buffer = self._buffer[end:]
            if not line:
                if self._event.data:
                    yield self._event.name, "\n".join(self._event.data)
                self._event = Event()
                continue
            if line.startswith(":"):
                continue  # a comment (keep-alive)
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                self._event.name = value
            elif name == "data":
                self._event.data.append(value)


def _line_end(buffer: str) -> tuple[str, int] | None:
    """The first whole line and where the next begins; a lone CR at the end may be half of a CRLF."""
    for i, ch in enumerate(buffer):
        if ch == "\n":
            return buffer[:i], i + 1
        if ch == "\r":
            if i + 1 == len(buffer):
                return None
            return buffer[:i], i + 2 if buffer[i + 1] == "\n" else i + 1
    return None


@dataclass
class Computation:
    """What a SignalFlow stream said: the published values by time series, and how it ended."""

    values: list[tuple[str, float]] = field(default_factory=list)  # (tsId, value), in order
    ended: bool = False

    def take(self, name: str, data: str, text: str) -> None:
        try:
            msg = json.loads(data)
        except (ValueError, RecursionError):
            raise ProviderError(
                f"SignalFlow sent a {_short(name, 40)} message that is not JSON: {data[:80]!r}; "
                f"query: {_line(text)}"
            ) from None
        if not isinstance(msg, dict):
            raise ProviderError(
                f"SignalFlow sent a {_short(name, 40)} message that is not an object; query: {_line(text)}"
            )
        if name == "data":
            points = msg.get("data")
            if not isinstance(points, list):
                raise ProviderError(
                    f"SignalFlow sent a data message without a data list; query: {_line(text)}"
                )
            for point in points:
                if not isinstance(point, dict) or not isinstance(point.get("tsId"), str):
                    raise ProviderError(f"SignalFlow sent a data point without a tsId; query: {_line(text)}")
                value = point.get("value")
                if value is None:
                    continue  # no value for this series at this time
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ProviderError(f"SignalFlow sent a value that is not a number; query: {_line(text)}")
                self.values.append((point["tsId"], float(value)))
        elif name == "error":
            errors = msg.get("errors")
            shown = (
                "; ".join(_error(e) for e in errors[:3])
                if isinstance(errors, list) and errors
                else _short(msg.get("message"), 300)
            )
            raise ProviderError(f"SignalFlow refused the program: {shown}; query: {_line(text)}")
        elif name == "control-message":
            event = msg.get("event")
            if event == "END_OF_CHANNEL":
                self.ended = True
            elif event == "CHANNEL_ABORT":
                info = msg.get("abortInfo")
                info = info if isinstance(info, dict) else {}
                reason = _short(info.get("sf_job_abortReason", info.get("sf_job_abortState", "")), 300)
                raise ProviderError(f"SignalFlow aborted the computation: {reason}; query: {_line(text)}")
        # metadata, message (information), event and expired-tsid messages carry no value to judge


def _error(e: Any) -> str:
    if not isinstance(e, dict):
        return "<error>"
    context = e.get("context")
    where = ""
    if isinstance(context, dict) and isinstance(context.get("line"), int):
        where = f" at line {context['line']}" + (
            f", column {context['column']}" if isinstance(context.get("column"), int) else ""
        )
    return f"{_short(e.get('code'), 80)}{where}"


class SplunkProvider:
    def __init__(
        self,
        address: str,
        token: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not address.startswith(("http://", "https://", "wss://", "ws://")):
            raise ValueError(f"Splunk address must be an http(s) URL, got {address[:80]!r}")
        self.stream_url, self.api_url = endpoints(address)
        self._token = token
        self.timeout_s = timeout_s
        self.client = client
        self.clock = clock

    def __repr__(self) -> str:
        return f"SplunkProvider({self.stream_url!r})"

    async def query(self, q: MetricQuery) -> float:
        if q.text is None:
            raise ProviderError(f"metric {q.name!r} has no query; Splunk runs SignalFlow programs only")
        return await self.value(q.text, q.window_s)

    async def is_online(self) -> bool:
        """Flagger's check: the token can list one metric (`GET /v2/metric?limit=1` on the API endpoint)."""
        try:
            async with asyncio.timeout(self.timeout_s), self._client() as client:
                r = await client.get(
                    f"{self.api_url}/v2/metric", params={"limit": "1"}, headers={"X-SF-Token": self._token}
                )
        except (TimeoutError, httpx.HTTPError, httpx.InvalidURL):
            return False
        return r.status_code == 200

    async def value(self, text: str, window_s: float) -> float:
        now_ms = int(self.clock() * 1000)
        params = {
            "start": str(now_ms - int(WINDOWS * window_s * 1000)),
            "stop": str(now_ms),
            "immediate": "true",
        }
        headers = {"Content-Type": "text/plain", "X-SF-Token": self._token}
        where = f"SignalFlow at {self.stream_url}"
        try:
            async with asyncio.timeout(self.timeout_s), self._client() as client:
                computation = await self._execute(client, params, headers, text)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(
                f"{where} did not finish within {self.timeout_s:g}s; query: {_line(text)}"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise ProviderError(
                f"{where} is unreachable ({network_error(exc)}); query: {_line(text)}"
            ) from None
        if not computation.ended:
            raise ProviderError(f"{where} ended the stream before END_OF_CHANNEL; query: {_line(text)}")
        if not computation.values:
            raise NoData(f"the program published no values; query: {_line(text)}")
        series = {ts for ts, _ in computation.values}
        if len(series) > 1:
            raise ProviderError(
                f"the program published {len(series)} time series, not one; aggregate them (sum(), mean(), ...) "
                f"or publish(enable=False) the others; query: {_line(text)}"
            )
        value = computation.values[-1][1]
        if not math.isfinite(value):
            raise ProviderError(f"the program published {value}, not a number to judge; query: {_line(text)}")
        return value

    async def _execute(
        self, client: httpx.AsyncClient, params: Mapping[str, str], headers: Mapping[str, str], text: str
    ) -> Computation:
        url = f"{self.stream_url}/v2/signalflow/execute"
        async with client.stream("POST", url, params=params, headers=headers, content=text.encode()) as r:
            if r.status_code != 200:
                _refused(r.status_code, await _head(r), text)
            events, computation, size = EventStream(), Computation(), 0
            async for chunk in r.aiter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    raise ProviderError(
                        f"SignalFlow's stream passed {MAX_BODY // MiB} MiB; stopped reading; query: {_line(text)}"
                    )
                for name, data in events.feed(chunk):
                    computation.take(name, data, text)
                    if computation.ended:
                        return computation
            return computation

    def _client(self) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
        """The shared client (left open), or one for this call."""
        if self.client is not None:
            return contextlib.nullcontext(self.client)
        return httpx.AsyncClient(timeout=self.timeout_s)


async def _head(r: httpx.Response, limit: int = 64 * 1024) -> bytes:
    body = b""
    async for chunk in r.aiter_bytes():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


def _refused(status: int, body: bytes, text: str) -> NoReturn:
    detail = ""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        answer = None
    if isinstance(answer, dict) and (answer.get("message") or answer.get("errorType")):
        kind = answer.get("errorType")
        detail = f": {_short(kind, 80) + ': ' if kind else ''}{_short(answer.get('message', ''), 300)}"
    elif body.strip():
        detail = f": {body[:80].decode('utf-8', 'replace')!r}"
    raise ProviderError(f"SignalFlow answered HTTP {status}{detail}; query: {_line(text)}")


def _short(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else f"<{type(value).__name__}>"


def _line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class SplunkKind:
    """`provider.type: splunk`: the realm's address and a secret with the access token."""

    name = "splunk"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        found: list[Problem] = []
        if not spec.address:
            found.append(
                ("address", "Splunk needs the realm's API address (https://api.<realm>.signalfx.com)")
            )
        elif not spec.address.startswith(("http://", "https://", "wss://", "ws://")):
            found.append(("address", f"must be an http(s) URL, got {spec.address[:80]!r}"))
        if spec.secretRef is None:
            found.append(("secretRef", "Splunk needs a secret with the access token in `sf_token_key`"))
        return found

    def make(self, ctx: SourceContext) -> MetricProvider:
        if not ctx.spec.address:
            raise ValueError("provider.address is not set; Splunk needs the realm's API address")
        token = next((ctx.secret[k] for k in TOKEN_KEYS if ctx.secret and ctx.secret.get(k)), None)
        if token is None:
            raise ValueError("provider.secretRef: the secret has no `sf_token_key` (the access token)")
        return SplunkProvider(ctx.spec.address, token, client=ctx.client)


KIND = SplunkKind()
