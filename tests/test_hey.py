"""The hey-compatible load generator: command-line parsing, and real load against a local HTTP server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import cast

import pytest

from rheostat.server import hey
from rheostat.server.hey import HeySpec, parse_hey, run_hey
from tests.servers import free_port, serving


class Target(ThreadingHTTPServer):
    """Answers every request with `status` and remembers (method, headers, body)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 200
        self.seen: list[tuple[str, dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        server = cast(Target, self.server)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.seen.append((self.command, dict(self.headers), body))
        self.send_response(server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[Target]:
    with serving(Target(), "hey-target") as server:
        yield server


closed_port = free_port


def test_parses_flaggers_load_test_command() -> None:
    spec = parse_hey("hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/")

    assert spec == HeySpec(url="http://podinfo-canary.test:9898/", duration=60.0, rate=10.0, concurrency=2)


def test_parses_headers_method_body_and_switches() -> None:
    spec = parse_hey(
        "hey -z 30s -q 5 -c 1 -m post -H 'Cookie: canary=always' -H 'X-Trace: a:b' "
        "-d '{\"a\": 1}' -T application/json -t 3 -host app.example.com -disable-keepalive "
        "http://podinfo-canary.test:9898/"
    )

    assert spec.method == "POST"
    assert spec.headers == (("Cookie", "canary=always"), ("X-Trace", "a:b"))
    assert spec.body == b'{"a": 1}'
    assert spec.content_type == "application/json"
    assert spec.timeout == 3.0
    assert spec.host == "app.example.com"
    assert spec.disable_keepalive is True


def test_defaults_follow_hey() -> None:
    spec = parse_hey("/usr/local/bin/hey http://svc/")

    assert (spec.requests, spec.concurrency, spec.duration, spec.rate) == (200, 50, None, 0.0)
    assert (spec.method, spec.content_type, spec.timeout) == ("GET", "text/html", 20.0)


def test_accepts_go_flag_spellings() -> None:
    spec = parse_hey("hey --n=10 -c=2 -disable-keepalive=false http://svc/")

    assert (spec.requests, spec.concurrency, spec.disable_keepalive) == (10, 2, False)


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        ("hey -k http://svc/", "unknown hey flag -k"),
        ("hey -z 1m -q 10 -c 2", "missing the URL"),
        ("hey http://svc/ -n 10", "after the URL"),
        ("hey -n 1 -c 2 http://svc/", "-n (1) cannot be less than -c (2)"),
        ("hey -z soon http://svc/", "-z"),
        ("hey -c 0 http://svc/", "-c must be greater than zero"),
        ("hey -q -1 http://svc/", "-q must not be negative"),
        ("hey -H nocolon http://svc/", "-H expects"),
        ("hey -h2 http://svc/", "-h2"),
        ("hey -n", "-n needs a value"),
        ("hey svc:9898", "must start with http"),
        ("curl http://svc/", "not a hey command"),
    ],
)
def test_rejects_bad_commands_naming_the_problem(cmd: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_hey(cmd)


async def test_sends_exactly_n_requests(target: Target) -> None:
    result = await run_hey(parse_hey(f"hey -n 37 -c 5 {target.url}"))

    assert len(target.seen) == 37
    assert result.requests == 37
    assert result.status_codes == {200: 37}
    assert result.errors == {}
    assert 0 < result.p50 <= result.p90 <= result.p99 <= result.slowest
    assert result.rps > 0


async def test_rate_limit_is_per_worker(target: Target) -> None:
    result = await run_hey(parse_hey(f"hey -z 2s -q 10 -c 2 {target.url}"))

    # 2 workers x 10 per second x 2 seconds
    assert 30 <= len(target.seen) <= 50
    assert result.requests == len(target.seen)
    assert 1.9 < result.elapsed < 3.0


async def test_sends_method_headers_and_body(target: Target) -> None:
    cmd = (
        f"hey -n 2 -c 1 -m POST -H 'Cookie: canary=always' -d hello -T text/plain -host app.example.com "
        f"{target.url}"
    )
    await run_hey(parse_hey(cmd))

    method, headers, body = target.seen[0]
    assert (method, body) == ("POST", b"hello")
    assert headers["Cookie"] == "canary=always"
    assert headers["Content-Type"] == "text/plain"
    assert headers["Host"] == "app.example.com"


async def test_counts_status_codes(target: Target) -> None:
    target.status = 503

    result = await run_hey(parse_hey(f"hey -n 4 -c 2 {target.url}"))

    assert result.status_codes == {503: 4}


async def test_counts_connection_errors() -> None:
    result = await run_hey(parse_hey(f"hey -n 3 -c 1 http://127.0.0.1:{closed_port()}/"))

    assert result.requests == 3
    assert result.status_codes == {}
    assert sum(result.errors.values()) == 3
    assert result.p99 == 0.0
    assert "errors ConnectError 3" in result.summary()


async def test_stop_event_ends_a_timed_run_early(target: Target) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)

    result = await run_hey(parse_hey(f"hey -z 1m -q 20 -c 2 {target.url}"), stop=stop)

    assert result.elapsed < 2
    assert 0 < result.requests < 30


async def test_percentiles_come_from_a_bounded_sample(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hey, "_SAMPLES", 5)

    result = await run_hey(parse_hey(f"hey -n 30 -c 3 {target.url}"))

    assert result.requests == 30
    assert 0 < result.fastest <= result.p50 <= result.p99 <= result.slowest
    assert result.fastest <= result.average <= result.slowest
