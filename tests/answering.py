"""A real HTTP server on loopback that answers what a test tells it: any body, huge, or trickled."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.servers import serving


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    repeat: int = 1  # the body is sent this many times (a huge answer costs the server nothing)
    pause_s: float = 0.0  # between pieces of `trickle` bytes: a body that trickles
    trickle: int = 0
    chunked: bool = False  # no Content-Length: the client cannot tell the size in advance


@dataclass
class Served:
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (path, headers)
    sent: int = 0  # body bytes written
    cut: bool = False  # the client hung up before the whole body was sent
    done: threading.Event = field(default_factory=threading.Event)


class AnswerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = Answer()
        self.served = Served()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: AnswerServer

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length", "0") or 0)
        if length:
            self.rfile.read(length)
        served, answer = self.server.served, self.server.answer
        served.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            if not answer.chunked:
                self.send_header("Content-Length", str(len(answer.body) * answer.repeat))
            self.end_headers()
            for _ in range(answer.repeat):
                self._write(answer)
        except (BrokenPipeError, ConnectionResetError):
            served.cut = True
        finally:
            served.done.set()
            self.close_connection = True

    def _write(self, answer: Answer) -> None:
        if not answer.trickle:
            self.wfile.write(answer.body)
            self.server.served.sent += len(answer.body)
            return
        for i in range(0, len(answer.body), answer.trickle):
            self.wfile.write(answer.body[i : i + answer.trickle])
            self.wfile.flush()
            self.server.served.sent += answer.trickle
            time.sleep(answer.pause_s)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


def answering() -> Iterator[AnswerServer]:
    """For a fixture: a server in a thread for the test, shut down after it."""
    with serving(AnswerServer(), "answer-server") as server:
        yield server
