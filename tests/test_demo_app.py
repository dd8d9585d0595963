"""The sample app, run as a real process on a loopback port."""

from __future__ import annotations

import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.servers import free_port


@dataclass(frozen=True)
class App:
    proc: subprocess.Popen[bytes]
    port: int

    def get(self, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            if own:
                conn.close()


def launch(version: str = "v1", **env: str) -> App:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rheostat.demo.app", "--port", str(port), "--version", version],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    app = App(proc, port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if app.get("/readyz")[0] == 200:
                return app
        except OSError:
            time.sleep(0.02)
    end(app)
    raise AssertionError("the demo app did not become ready")


def end(app: App) -> bytes:
    if app.proc.poll() is None:
        app.proc.send_signal(signal.SIGTERM)
    try:
        out, _ = app.proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        app.proc.kill()
        out, _ = app.proc.communicate()
    return out


@pytest.fixture
def app() -> Iterator[App]:
    running = launch("v7")
    yield running
    end(running)


def test_root_reports_version_and_pid(app: App) -> None:
    status, body = app.get("/")
    data = json.loads(body)
    assert status == 200
    assert data["version"] == "v7"
    assert data["pid"] == app.proc.pid


def test_health_status_and_delay_endpoints(app: App) -> None:
    assert app.get("/healthz")[0] == 200
    assert app.get("/readyz")[0] == 200
    assert app.get("/status/503")[0] == 503
    assert app.get("/status/204")[0] == 204
    assert app.get("/status/nope")[0] == 400
    assert app.get("/nowhere")[0] == 404
    begun = time.monotonic()
    assert app.get("/delay/0.2")[0] == 200
    assert time.monotonic() - begun >= 0.19


def test_metrics_count_requests_by_code_and_latency(app: App) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
    try:
        for _ in range(3):
            app.get("/", conn)  # one keep-alive connection serves them all
        app.get("/status/500", conn)
        status, body = app.get("/metrics", conn)
    finally:
        conn.close()
    text = body.decode()
    assert status == 200
    assert 'http_requests_total{code="200",version="v7"} 3' in text
    assert 'http_requests_total{code="500",version="v7"} 1' in text
    assert 'http_request_duration_seconds_count{version="v7"} 4' in text
    assert 'http_request_duration_seconds_bucket{le="+Inf",version="v7"} 4' in text


def test_error_rate_fails_that_share_of_requests() -> None:
    bad = launch("v2", ERROR_RATE="0.3")
    conn = http.client.HTTPConnection("127.0.0.1", bad.port, timeout=5)
    try:
        codes = [bad.get("/", conn)[0] for _ in range(400)]
        assert bad.get("/healthz", conn)[0] == 200  # probes are not failed on purpose
    finally:
        conn.close()
        end(bad)
    share = codes.count(500) / len(codes)
    assert set(codes) == {200, 500}
    assert 0.2 <= share <= 0.4  # 400 draws at p=0.3: the standard deviation is 0.023


def test_latency_ms_slows_app_requests_only() -> None:
    slow = launch("v3", LATENCY_MS="80")
    conn = http.client.HTTPConnection("127.0.0.1", slow.port, timeout=5)
    timings = []
    try:
        for path in ["/"] * 10 + ["/healthz"] * 10:
            begun = time.monotonic()
            assert slow.get(path, conn)[0] == 200
            timings.append(time.monotonic() - begun)
    finally:
        conn.close()
        end(slow)
    assert statistics.median(timings[:10]) >= 0.075
    assert statistics.median(timings[10:]) < 0.05


def test_sigterm_stops_cleanly_and_logs_start_and_stop() -> None:
    running = launch("v1")
    running.get("/")
    out = end(running).decode()
    assert running.proc.returncode == 0
    assert "listening on 127.0.0.1" in out
    assert "stopped" in out
    assert "GET /" not in out  # no line per request


def test_checkout_needs_flags_and_a_user(app: App) -> None:
    status, body = app.get("/checkout?user=u1")
    assert status == 404 and b"OFREP_URL" in body  # started without OFREP_URL: no flagged path
    status, body = app.get("/metrics")
    assert status == 200 and b"process_start_time_seconds" in body
