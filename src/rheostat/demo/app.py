"""The sample app: stdlib only, so it starts in well under a second.

`/` answers JSON with its version; `ERROR_RATE` (0..1) makes that share of `/` requests answer 500 and
`LATENCY_MS` adds latency to every app request, to make a bad version on purpose. Health and metrics
endpoints are never slowed or failed, so probes and scrapes see the process, not the injected fault.

With `OFREP_URL` set, `/checkout?user=<id>` evaluates the boolean flag `FLAG_KEY` (default `new-checkout`)
for that user with the stock OpenFeature client and OFREP provider, and counts requests, errors and
durations per variant (`feature_flag_*{flag, variant}` on `/metrics`, the convention flag rollouts read).
`FLAG_ERROR_VARIANT` with `FLAG_ERROR_RATE` (0..1) makes that variant's code path fail, to make a bad
feature on purpose.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Settings:
    port: int
    version: str
    error_rate: float = 0.0
    latency_s: float = 0.0
    ofrep_url: str = ""
    flag_key: str = "new-checkout"
    flag_error_variant: str = ""
    flag_error_rate: float = 0.0


class FlagCounts:
    """Per-variant outcomes of the flagged code path, in the Prometheus text format."""

    def __init__(self, flag: str) -> None:
        self.flag = flag
        self._lock = threading.Lock()
        self._requests: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._buckets: dict[str, list[int]] = {}

    def observe(self, variant: str, failed: bool, seconds: float) -> None:
        with self._lock:
            self._requests[variant] = self._requests.get(variant, 0) + 1
            self._errors[variant] = self._errors.get(variant, 0) + int(failed)
            counts = self._buckets.setdefault(variant, [0] * len(BUCKETS))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1

    def render(self) -> str:
        with self._lock:
            out = ["# TYPE feature_flag_requests_total counter"]
            labels = {v: f'flag="{self.flag}",variant="{v}"' for v in sorted(self._requests)}
            out += [
                f"feature_flag_requests_total{{{labels[v]}}} {n}" for v, n in sorted(self._requests.items())
            ]
            out.append("# TYPE feature_flag_request_errors_total counter")
            out += [
                f"feature_flag_request_errors_total{{{labels[v]}}} {n}"
                for v, n in sorted(self._errors.items())
            ]
            out.append("# TYPE feature_flag_request_duration_seconds histogram")
            for v, counts in sorted(self._buckets.items()):
                for bound, n in zip(BUCKETS, counts, strict=True):
                    out.append(
                        f'feature_flag_request_duration_seconds_bucket{{{labels[v]},le="{bound}"}} {n}'
                    )
                out.append(
                    f'feature_flag_request_duration_seconds_bucket{{{labels[v]},le="+Inf"}} {self._requests[v]}'
                )
                out.append(f"feature_flag_request_duration_seconds_count{{{labels[v]}}} {self._requests[v]}")
        return "\n".join(out) + "\n"


class FlagClient:
    """The stock OpenFeature SDK with its OFREP provider, pointed at rheostat's OFREP endpoint."""

    def __init__(self, url: str) -> None:
        from openfeature import api  # imported only when flags are used: the plain app starts faster
        from openfeature.contrib.provider.ofrep import OFREPProvider

        api.set_provider(OFREPProvider(url), "demo")
        self.client = api.get_client("demo")

    def variant(self, key: str, user: str) -> tuple[bool, str]:
        from openfeature.evaluation_context import EvaluationContext

        details = self.client.get_boolean_details(key, False, EvaluationContext(user))
        return details.value, details.variant or ("on" if details.value else "off")


class Metrics:
    """Requests by code and a latency histogram, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_code: dict[int, int] = {}
        self._buckets = [0] * len(BUCKETS)
        self._count = 0
        self._sum = 0.0

    def observe(self, code: int, seconds: float) -> None:
        with self._lock:
            self._by_code[code] = self._by_code.get(code, 0) + 1
            self._count += 1
            self._sum += seconds
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1

    def render(self, version: str) -> str:
        with self._lock:
            lines = [
                "# HELP http_requests_total Requests answered, by status code.",
                "# TYPE http_requests_total counter",
            ]
            for code, n in sorted(self._by_code.items()):
                lines.append(f'http_requests_total{{code="{code}",version="{version}"}} {n}')
            lines += [
                "# HELP http_request_duration_seconds Time to answer a request.",
                "# TYPE http_request_duration_seconds histogram",
            ]
            for bound, n in zip(BUCKETS, self._buckets, strict=True):
                lines.append(f'http_request_duration_seconds_bucket{{le="{bound}",version="{version}"}} {n}')
            lines.append(
                f'http_request_duration_seconds_bucket{{le="+Inf",version="{version}"}} {self._count}'
            )
            lines.append(f'http_request_duration_seconds_sum{{version="{version}"}} {self._sum:.6f}')
            lines.append(f'http_request_duration_seconds_count{{version="{version}"}} {self._count}')
        return "\n".join(lines) + "\n"


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 drops connections under load (notes/envoy.md §0)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.flag_counts = FlagCounts(settings.flag_key)
        self.flags = FlagClient(settings.ofrep_url) if settings.ofrep_url else None
        self.started = time.time()
        super().__init__(("127.0.0.1", settings.port), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy upstream connections expect
    disable_nagle_algorithm = True  # avoids ~40 ms delayed-ACK stalls per keep-alive response
    server: DemoServer

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request drowns the log; start and stop are logged instead

    def do_GET(self) -> None:
        begun = time.monotonic()
        code = self._dispatch()
        if not self.path.startswith(("/metrics", "/healthz", "/readyz")):
            self.server.metrics.observe(code, time.monotonic() - begun)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.do_GET()

    def _dispatch(self) -> int:
        path = self.path.split("?", 1)[0]
        settings = self.server.settings
        if path in ("/healthz", "/readyz"):
            return self._send(200, "ok\n", "text/plain")
        if path == "/metrics":
            text = self.server.metrics.render(settings.version) + self.server.flag_counts.render()
            text += (
                f"# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {self.server.started}\n"
            )
            return self._send(200, text, "text/plain; version=0.0.4")
        if settings.latency_s:
            time.sleep(settings.latency_s)
        if path.startswith("/status/"):
            code = _int(path.removeprefix("/status/"))
            if code is None or not 100 <= code <= 599:
                return self._json(400, {"error": f"bad status code in {path}"})
            return self._json(code, {"version": settings.version, "status": code})
        if path.startswith("/delay/"):
            seconds = _float(path.removeprefix("/delay/"))
            if seconds is None or not 0 <= seconds <= 60:
                return self._json(400, {"error": f"bad delay in {path}"})
            time.sleep(seconds)
            return self._json(200, {"version": settings.version, "delay": seconds})
        if path == "/checkout":
            return self._checkout()
        if path == "/":
            if random.random() < settings.error_rate:
                return self._json(500, {"version": settings.version, "error": "injected by ERROR_RATE"})
            return self._json(
                200,
                {
                    "version": settings.version,
                    "pid": os.getpid(),
                    "port": settings.port,
                    "uptime_s": round(time.time() - self.server.started, 3),
                },
            )
        return self._json(404, {"error": f"no route for {path}"})

    def _checkout(self) -> int:
        """The flagged code path: which variant this user gets decides which code runs."""
        settings, flags = self.server.settings, self.server.flags
        if flags is None:
            return self._json(404, {"error": "no flags here: start with OFREP_URL set"})
        begun = time.monotonic()
        query = dict(p.partition("=")[::2] for p in self.path.partition("?")[2].split("&") if p)
        user = query.get("user") or self.headers.get("X-User") or ""
        if not user:
            return self._json(400, {"error": "say who the user is: ?user=<id> or X-User"})
        enabled, variant = flags.variant(settings.flag_key, user)
        failed = variant == settings.flag_error_variant and random.random() < settings.flag_error_rate
        self.server.flag_counts.observe(variant, failed, time.monotonic() - begun)
        body: dict[str, object] = {
            "version": settings.version,
            "user": user,
            "variant": variant,
            "new": enabled,
        }
        return self._json(500 if failed else 200, {**body, "error": "injected"} if failed else body)

    def _json(self, code: int, body: dict[str, object]) -> int:
        return self._send(code, json.dumps(body) + "\n", "application/json")

    def _send(self, code: int, text: str, content_type: str) -> int:
        data = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return code


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def settings_from(argv: list[str] | None, env: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m rheostat.demo.app", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default="v1")
    args = parser.parse_args(argv)
    error_rate = float(env.get("ERROR_RATE") or 0)
    latency_ms = float(env.get("LATENCY_MS") or 0)
    if not 0 <= error_rate <= 1:
        parser.error(f"ERROR_RATE must be between 0 and 1, got {error_rate}")
    if latency_ms < 0:
        parser.error(f"LATENCY_MS must not be negative, got {latency_ms}")
    flag_error_rate = float(env.get("FLAG_ERROR_RATE") or 0)
    if not 0 <= flag_error_rate <= 1:
        parser.error(f"FLAG_ERROR_RATE must be between 0 and 1, got {flag_error_rate}")
    return Settings(
        port=args.port,
        version=args.version,
        error_rate=error_rate,
        latency_s=latency_ms / 1000,
        ofrep_url=env.get("OFREP_URL", ""),
        flag_key=env.get("FLAG_KEY") or "new-checkout",
        flag_error_variant=env.get("FLAG_ERROR_VARIANT", ""),
        flag_error_rate=flag_error_rate,
    )


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} demo[{os.getpid()}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    settings = settings_from(argv, dict(os.environ))
    try:
        server = DemoServer(settings)
    except OSError as exc:
        log(f"cannot listen on 127.0.0.1:{settings.port}: {exc}")
        return 1

    def on_term(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever() to return, so it must run on another thread.
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    log(
        f"version {settings.version} listening on 127.0.0.1:{settings.port}"
        f" (error_rate={settings.error_rate}, latency_ms={settings.latency_s * 1000:g})"
    )
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
