"""The webhook contract against a real HTTP server: 200-202 succeed, others fail, a hang or a trickle is cut
at the hook's timeout, a huge answer fails the hook; alert delivery is bounded the same way."""

from __future__ import annotations

import asyncio
import json
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rheostat.model.canary import Webhook
from rheostat.plugins.notifiers.base import Alert, Severity
from rheostat.plugins.notifiers.chat import SlackNotifier
from rheostat.plugins.notifiers.delivery import DeliveryError, NotifierSettings, post_json
from rheostat.rollout.webhooks import HookCaller
from tests.answering import Answer, AnswerServer, answering
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


# -- answers that misbehave: trickled, huge; and headers added per URL (a real HTTP server) ---------------


@pytest.fixture
def answers() -> Iterator[AnswerServer]:
    yield from answering()


async def test_a_trickling_answer_is_cut_at_the_hooks_timeout_for_the_whole_request(
    answers: AnswerServer,
) -> None:
    """Headers at once, then one byte at a time: each read is quick, the whole answer is not."""
    answers.answer = Answer(200, b"x" * 600, trickle=1, pause_s=0.1)
    caller = HookCaller()
    try:
        res = await caller.call(Webhook(name="slow", url=f"{answers.url}/", timeout="500ms"), {})
    finally:
        await caller.aclose()
    assert not res.ok and res.message == "webhook slow timed out after 500ms"
    assert not answers.served.done.is_set()  # still trickling when the hook was failed


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_huge_answer_fails_the_hook_in_bounded_memory(answers: AnswerServer, chunked: bool) -> None:
    answers.answer = Answer(200, b"y" * (1024 * 1024), repeat=200, chunked=chunked)  # 200 MiB
    caller = HookCaller()
    tracemalloc.start()
    try:
        res = await caller.call(Webhook(name="big", url=f"{answers.url}/", timeout="30s", retries=2), {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await caller.aclose()
    assert not res.ok and "larger than 1 MiB; stopped reading" in res.message
    assert peak < 20 * 1024 * 1024
    assert len(answers.served.requests) == 1  # an answer, not a fault to retry
    assert await asyncio.to_thread(answers.served.done.wait, 30)
    assert answers.served.cut and answers.served.sent < 100 * 1024 * 1024


async def test_headers_for_a_url_are_sent_and_never_shown(answers: AnswerServer) -> None:
    token = "tok-" + "s3cr3t" * 4
    answers.answer = Answer(403, b"refused")
    own = f"{answers.url}/loadtester/"
    caller = HookCaller(headers_for=lambda url: {"Authorization": f"Bearer {token}"} if url == own else {})
    try:
        res = await caller.call(Webhook(name="gate", url=own), {"name": "x"})
        other = await caller.call(Webhook(name="other", url=f"{answers.url}/elsewhere"), {"name": "x"})
    finally:
        await caller.aclose()
    (_, sent), (_, elsewhere) = answers.served.requests
    assert sent["authorization"] == f"Bearer {token}" and "authorization" not in elsewhere
    assert not res.ok and token not in res.message and token not in repr(res) and token not in repr(other)


async def test_alert_delivery_is_bounded_too(answers: AnswerServer) -> None:
    settings = NotifierSettings(address=f"{answers.url}/hooks/T000/B000/secret-path", timeout=0.5)
    answers.answer = Answer(200, b"ok" * 300, trickle=1, pause_s=0.1)
    with pytest.raises(DeliveryError, match=r"timed out after 0.5s") as timed_out:
        await post_json(settings, settings.address, b"{}", what="slack")
    assert "secret-path" not in str(timed_out.value)
    answers.answer = Answer(200, b"z" * (1024 * 1024), repeat=50, chunked=True)
    big = NotifierSettings(address=settings.address, timeout=30)
    with pytest.raises(DeliveryError, match=r"larger than 1 MiB; stopped reading"):
        await post_json(big, big.address, b"{}", what="slack")
    answers.answer = Answer(200, b'{"ok": false, "error": "channel_not_found"}')
    slack = SlackNotifier(NotifierSettings(address=settings.address, token="xoxb-t", timeout=5))
    with pytest.raises(DeliveryError, match="refused the message: channel_not_found"):
        await slack.post(Alert("web", "default", "Failed", "rolled back", Severity.ERROR))
