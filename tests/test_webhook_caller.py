"""The webhook contract against a real HTTP server: 200-202 succeed, others fail, a hang is cut."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rheostat.model.canary import Webhook
from rheostat.rollout.webhooks import HookCaller
from tests.servers import serving


class _Handler(BaseHTTPRequestHandler):
    bodies: list[dict[str, object]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        _Handler.bodies.append(json.loads(self.rfile.read(length)))
        code = int(self.path.strip("/").split("/")[0])
        if code == 999:
            threading.Event().wait(3)
            code = 200
        self.send_response(code)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"nope")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    with serving(srv, "hook-target"):
        yield f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.mark.parametrize(
    ("code", "ok"), [(200, True), (201, True), (202, True), (203, False), (403, False), (500, False)]
)
async def test_status_codes(server: str, code: int, ok: bool) -> None:
    caller = HookCaller()
    try:
        res = await caller.call(Webhook(name="h", url=f"{server}/{code}"), {"name": "x"})
    finally:
        await caller.aclose()
    assert res.ok is ok and res.status == code
    if not ok:
        assert f"returned {code}" in res.message and "nope" in res.message


async def test_hanging_webhook_is_cut_at_its_timeout(server: str) -> None:
    caller = HookCaller()
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        res = await caller.call(Webhook(name="slow", url=f"{server}/999", timeout="500ms"), {})
    finally:
        await caller.aclose()
    assert not res.ok and "timed out" in res.message
    assert loop.time() - start < 2.5


async def test_retries_on_server_errors(server: str) -> None:
    _Handler.bodies.clear()
    caller = HookCaller()
    try:
        res = await caller.call(Webhook(name="r", url=f"{server}/500", retries=2), {"n": 1})
    finally:
        await caller.aclose()
    assert not res.ok and len(_Handler.bodies) == 3


async def test_refused_connection_is_a_failure_not_a_crash() -> None:
    caller = HookCaller()
    try:
        res = await caller.call(Webhook(name="gone", url="http://127.0.0.1:9/", timeout="1s"), {})
    finally:
        await caller.aclose()
    assert not res.ok and "failed" in res.message
