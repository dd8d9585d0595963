"""A load generator that reads `hey` command lines, so Flagger load-test webhooks run without the binary.

Flags follow rakyll/hey: `-z` duration (wins over `-n`), `-n` total requests, `-c` workers, `-q` rate limit
per worker, and so on. Unlike hey, `-n` is an exact total, not rounded down to a multiple of `-c`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx

from rheostat.util.durations import parse_duration

_USER_AGENT = "rheostat-hey/0.1"


@dataclass(frozen=True)
class HeySpec:
    url: str
    requests: int = 200
    duration: float | None = None  # seconds; when set, `requests` is ignored
    concurrency: int = 50
    rate: float = 0.0  # requests per second per worker; 0 means no limit
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    content_type: str = "text/html"
    timeout: float = 20.0  # seconds per request; 0 means none
    host: str | None = None
    basic_auth: tuple[str, str] | None = None
    proxy: str | None = None
    disable_keepalive: bool = False
    disable_compression: bool = False
    disable_redirects: bool = False


@dataclass(frozen=True)
class HeyResult:
    requests: int
    status_codes: dict[int, int]
    errors: dict[str, int]
    elapsed: float  # seconds, wall clock of the whole run
    p50: float  # latencies in seconds over the responses (errors have none)
    p90: float
    p99: float
    fastest: float = 0.0
    slowest: float = 0.0
    average: float = 0.0
    rps: float = 0.0

    def summary(self) -> str:
        codes = ", ".join(f"[{code}] {count}" for code, count in sorted(self.status_codes.items())) or "none"
        errors = ", ".join(f"{kind} {count}" for kind, count in sorted(self.errors.items())) or "none"
        return (
            f"{self.requests} requests in {self.elapsed:.2f}s, {self.rps:.1f} req/s; "
            f"p50 {self.p50 * 1000:.1f}ms p90 {self.p90 * 1000:.1f}ms p99 {self.p99 * 1000:.1f}ms; "
            f"status {codes}; errors {errors}"
        )


_BOOL_FLAGS = {"disable-keepalive", "disable-compression", "disable-redirects"}
_VALUE_FLAGS = {"z", "n", "c", "q", "m", "H", "d", "T", "t", "host", "a", "x", "cpus"}  # -cpus has no effect
# Known to hey but meaningless or unsafe here; named in the error so the user knows why.
_UNSUPPORTED = {"D": "reading a body file", "o": "CSV output", "h2": "HTTP/2"}


def parse_hey(cmd: str) -> HeySpec:
    """Parse a `hey ...` command line; ValueError names the offending flag or value."""
    try:
        words = shlex.split(cmd)
    except ValueError as exc:
        raise ValueError(f"hey command is not valid shell syntax: {exc}") from None
    if not words or words[0].rsplit("/", 1)[-1] != "hey":
        raise ValueError(f"not a hey command: {cmd!r}")
    values: dict[str, str] = {}
    headers: list[tuple[str, str]] = []
    flags: set[str] = set()
    rest = iter(words[1:])
    url: str | None = None
    for word in rest:
        if url is not None:
            raise ValueError(f"hey: unexpected argument {word!r} after the URL (flags go before the URL)")
        if not word.startswith("-") or word in ("-", "--"):
            url = word
            continue
        name, has_value, inline = word.lstrip("-").partition("=")
        if name in _BOOL_FLAGS:
            if _parse_bool(name, inline if has_value else "true"):
                flags.add(name)
            else:
                flags.discard(name)
        elif name in _VALUE_FLAGS:
            value = inline if has_value else _next_value(rest, name)
            if name == "H":
                headers.append(_parse_header(value))
            else:
                values[name] = value
        elif name in _UNSUPPORTED:
            raise ValueError(f"hey flag -{name} ({_UNSUPPORTED[name]}) is not supported")
        else:
            raise ValueError(f"unknown hey flag -{name}")
    if url is None:
        raise ValueError("hey: missing the URL (it comes last)")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"hey: URL must start with http:// or https://, got {url!r}")
    return _build(url, values, headers, flags)


def _build(url: str, values: dict[str, str], headers: list[tuple[str, str]], flags: set[str]) -> HeySpec:
    duration = _parse_positive("z", values["z"], parse_duration) if "z" in values else None
    concurrency = int(_parse_positive("c", values.get("c", "50"), int))
    requests = int(_parse_positive("n", values.get("n", "200"), int))
    if duration is None and requests < concurrency:
        raise ValueError(f"hey: -n ({requests}) cannot be less than -c ({concurrency})")
    basic_auth = None
    if "a" in values:
        user, colon, password = values["a"].partition(":")
        if not colon:
            raise ValueError("hey flag -a expects user:password")
        basic_auth = (user, password)
    return HeySpec(
        url=url,
        requests=requests,
        duration=duration,
        concurrency=concurrency,
        rate=_parse_number("q", values.get("q", "0")),
        method=values.get("m", "GET").upper(),
        headers=tuple(headers),
        body=values["d"].encode() if "d" in values else None,
        content_type=values.get("T", "text/html"),
        timeout=_parse_number("t", values.get("t", "20")),
        host=values.get("host"),
        basic_auth=basic_auth,
        proxy=values.get("x"),
        disable_keepalive="disable-keepalive" in flags,
        disable_compression="disable-compression" in flags,
        disable_redirects="disable-redirects" in flags,
    )


def _next_value(rest: Iterator[str], name: str) -> str:
    try:
        return next(rest)
    except StopIteration:
        raise ValueError(f"hey flag -{name} needs a value") from None


def _parse_bool(name: str, text: str) -> bool:
    if text.lower() in ("1", "t", "true"):
        return True
    if text.lower() in ("0", "f", "false"):
        return False
    raise ValueError(f"hey flag -{name} expects true or false, got {text!r}")


def _parse_header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or " " in name.strip():
        raise ValueError(f"hey flag -H expects 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _parse_number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"hey flag -{name} expects a number, got {text!r}") from None
    if value < 0 or not math.isfinite(value):
        raise ValueError(f"hey flag -{name} must not be negative, got {text!r}")
    return value


def _parse_positive(name: str, text: str, kind: Callable[[str], float]) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"hey flag -{name} has a bad value {text!r}") from None
    if not value > 0:
        raise ValueError(f"hey flag -{name} must be greater than zero, got {text!r}")
    return value


_SAMPLES = 100_000  # latencies kept for percentiles; beyond this a uniform sample stands in for the rest


@dataclass
class _Tally:
    samples: list[float] = field(default_factory=list)
    codes: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: int = 0  # claimed request slots, for the exact -n count
    responses: int = 0
    total_latency: float = 0.0
    fastest: float = math.inf
    slowest: float = 0.0
    rng: random.Random = field(default_factory=random.Random)

    def observe(self, latency: float) -> None:
        # Exact min/max/mean; reservoir sampling keeps memory flat on hour-long runs.
        self.responses += 1
        self.total_latency += latency
        self.fastest = min(self.fastest, latency)
        self.slowest = max(self.slowest, latency)
        if len(self.samples) < _SAMPLES:
            self.samples.append(latency)
        elif (slot := self.rng.randrange(self.responses)) < _SAMPLES:
            self.samples[slot] = latency


async def run_hey(spec: HeySpec, *, stop: asyncio.Event | None = None) -> HeyResult:
    """Send load as `spec` says, until -z passes, -n requests are done, or `stop` is set."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    begin = loop.time()
    deadline = begin + spec.duration if spec.duration is not None else math.inf
    tally = _Tally()
    async with _client(spec) as client:
        request = _request(client, spec)
        async with asyncio.TaskGroup() as group:
            for n in range(spec.concurrency):
                worker = _worker(client, request, spec, tally, stop, deadline)
                group.create_task(worker, name=f"hey-worker-{n}")
    return _result(tally, loop.time() - begin)


def _client(spec: HeySpec) -> httpx.AsyncClient:
    keepalive = 0 if spec.disable_keepalive else spec.concurrency
    headers = {"User-Agent": _USER_AGENT, "Content-Type": spec.content_type}
    if spec.disable_compression:
        headers["Accept-Encoding"] = "identity"
    headers.update(spec.headers)
    if spec.host:
        headers["Host"] = spec.host
    return httpx.AsyncClient(
        headers=headers,
        timeout=spec.timeout or None,
        limits=httpx.Limits(max_connections=spec.concurrency, max_keepalive_connections=keepalive),
        follow_redirects=not spec.disable_redirects,
        proxy=spec.proxy,
        auth=httpx.BasicAuth(*spec.basic_auth) if spec.basic_auth else None,
    )


def _request(client: httpx.AsyncClient, spec: HeySpec) -> Callable[[], httpx.Request]:
    # Built fresh per send: httpx requests carry per-send state.
    return lambda: client.build_request(spec.method, spec.url, content=spec.body)


async def _worker(
    client: httpx.AsyncClient,
    request: Callable[[], httpx.Request],
    spec: HeySpec,
    tally: _Tally,
    stop: asyncio.Event,
    deadline: float,
) -> None:
    loop = asyncio.get_running_loop()
    interval = 1.0 / spec.rate if spec.rate > 0 else 0.0
    next_at = loop.time() + interval  # like hey's ticker, the first request waits one interval
    while True:
        if interval and not await _sleep_until(next_at, stop, deadline):
            return
        if stop.is_set() or loop.time() >= deadline:
            return
        if spec.duration is None:
            if tally.started >= spec.requests:
                return
            tally.started += 1
        sent = time.perf_counter()
        try:
            response = await client.send(request())
            await response.aclose()
        except httpx.TimeoutException:
            tally.errors["timeout"] += 1
        except httpx.HTTPError as exc:
            tally.errors[type(exc).__name__] += 1
        else:
            tally.codes[response.status_code] += 1
            tally.observe(time.perf_counter() - sent)
        # A slow response skips missed ticks instead of bursting to catch up, as Go's ticker does.
        next_at = max(next_at + interval, loop.time())


async def _sleep_until(when: float, stop: asyncio.Event, deadline: float) -> bool:
    """Wait until `when`; False if `stop` is set or the deadline comes first."""
    loop = asyncio.get_running_loop()
    wait = min(when, deadline) - loop.time()
    if wait > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
    return not stop.is_set() and when < deadline


def _result(tally: _Tally, elapsed: float) -> HeyResult:
    latencies = sorted(tally.samples)
    total = sum(tally.codes.values()) + sum(tally.errors.values())
    return HeyResult(
        requests=total,
        status_codes=dict(tally.codes),
        errors=dict(tally.errors),
        elapsed=elapsed,
        p50=_percentile(latencies, 50),
        p90=_percentile(latencies, 90),
        p99=_percentile(latencies, 99),
        fastest=tally.fastest if tally.responses else 0.0,
        slowest=tally.slowest,
        average=tally.total_latency / tally.responses if tally.responses else 0.0,
        rps=total / elapsed if elapsed > 0 else 0.0,
    )


def _percentile(ordered: list[float], pct: int) -> float:
    """Nearest-rank percentile of an ascending list; 0 when empty."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
