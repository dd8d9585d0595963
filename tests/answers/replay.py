"""Recorded answers of SaaS metric APIs, and a loopback server that plays them and keeps every request.

Each `tests/answers/<provider>/<case>.json` is one documented case: `doc` (where the provider's public API
reference documents it), `status`, `content_type`, `headers` (optional) and `body` (JSON, or a string sent as
is). The server answers by path (`routes`, longest prefix first) or with `answer`, and records the method,
path, query, headers and body of every request for the test to compare with the reference.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from rheostat.model.canary import Canary
from rheostat.model.load import parse_text
from rheostat.model.metric_template import MetricTemplate
from rheostat.rollout.analysis import render_query
from rheostat.util.durations import parse_duration
from tests.servers import serving

HERE = Path(__file__).parent


@dataclass
class Recorded:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    pause_s: float = 0.0  # before the headers: a server that does not answer
    trickle: int = 0  # then the body in pieces of this many bytes, `pause_s` apart
    doc: str = ""


def load(provider: str, case: str, **changes: Any) -> Recorded:
    """A recorded answer, with fields a test changes (a delay, another body)."""
    data = json.loads((HERE / provider / f"{case}.json").read_text())
    body = data.get("body", "")
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    answer = Recorded(
        status=data.get("status", 200),
        body=raw,
        content_type=data.get("content_type", "application/json"),
        headers=data.get("headers", {}),
        doc=data.get("doc", ""),
    )
    for key, value in changes.items():
        setattr(answer, key, value)
    return answer


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ReplayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = Recorded()
        self.routes: dict[str, Recorded] = {}
        self.respond: Callable[[Request], Recorded | None] | None = None  # computes an answer when set
        self.requests: list[Request] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer_for(self, req: Request) -> Recorded:
        if self.respond is not None and (computed := self.respond(req)) is not None:
            return computed
        for prefix in sorted(self.routes, key=len, reverse=True):
            if req.path.startswith(prefix):
                return self.routes[prefix]
        return self.answer


class _Handler(BaseHTTPRequestHandler):
    server: ReplayServer
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        req = Request(
            self.command,
            parts.path,
            dict(parse_qsl(parts.query, keep_blank_values=True)),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        with self.server.lock:
            self.server.requests.append(req)
        answer = self.server.answer_for(req)
        try:
            if answer.pause_s and not answer.trickle:
                time.sleep(answer.pause_s)
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if not answer.trickle:
                self.wfile.write(answer.body)
                return
            for i in range(0, len(answer.body), answer.trickle):
                self.wfile.write(answer.body[i : i + answer.trickle])
                self.wfile.flush()
                time.sleep(answer.pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self.close_connection = True

    do_GET = _serve
    do_POST = _serve
    do_DELETE = _serve

    def log_message(self, format: str, *args: object) -> None:
        pass


def replaying() -> Iterator[ReplayServer]:
    """For a fixture: the server in a thread for the test, shut down after it."""
    with serving(ReplayServer(), "replay-server") as server:
        yield server


CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: {name}}}
  service: {{port: 9898}}
  analysis:
    interval: {interval}
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: {metric}
      templateRef: {{name: {template}}}
      thresholdRange: {{max: 99}}
      interval: {interval}
"""


def rendered(
    template_yaml: str, *, name: str = "podinfo", namespace: str = "test", interval: str = "1m"
) -> tuple[MetricTemplate, str, float]:
    """A MetricTemplate as a user pastes it, its query rendered for a Canary as the analysis renders it,
    and the metric's window in seconds."""
    (template,) = parse_text(template_yaml)
    assert isinstance(template, MetricTemplate)
    (canary,) = parse_text(
        CANARY.format(
            name=name, namespace=namespace, interval=interval, metric="m", template=template.metadata.name
        )
    )
    assert isinstance(canary, Canary)
    metric = canary.spec.the_analysis.metrics[0]
    window = parse_duration(metric.interval)
    return template, render_query(template.spec.query, canary, metric), window
