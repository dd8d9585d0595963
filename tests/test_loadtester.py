"""The load tester answers Flagger's webhook contract: tasks, gates and rollback switches."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from rheostat.server.loadtester import LoadTester, loadtester_app
from tests.servers import serving


class Target(ThreadingHTTPServer):
    """The service under load: counts the requests it gets."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hits = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        cast(Target, self.server).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def target() -> Iterator[Target]:
    with serving(Target(), "load-target") as server:
        yield server


@contextlib.asynccontextmanager
async def asgi(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, through httpx's in-process transport."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://loadtester") as client,
    ):
        yield client


@contextlib.asynccontextmanager
async def uvicorn_server(app: Starlette) -> AsyncIterator[str]:
    """The app behind a real uvicorn on 127.0.0.1; stopped (lifespan shutdown included) on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn loadtester")
    try:
        while not server.started:
            assert not serving.done(), "uvicorn exited during startup"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


def tasks_of(app: Starlette) -> LoadTester:
    return cast(LoadTester, app.state.loadtester)


def task(cmd: str, *, name: str = "podinfo", namespace: str = "test", **metadata: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "phase": "Progressing",
        "checksum": "abc123",
        "metadata": {"cmd": cmd, **metadata},
    }


async def test_healthz() -> None:
    async with asgi(loadtester_app()) as client:
        response = await client.get("/healthz")

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "podinfo", "namespace": "test"}, "metadata is empty"),
        ({"name": "podinfo", "namespace": "test", "metadata": {}}, "metadata is empty"),
        ({"name": "podinfo", "namespace": "test", "metadata": {"type": "cmd"}}, "metadata.cmd is empty"),
        ([1, 2], "JSON object"),
    ],
)
async def test_task_without_a_command_is_a_bad_request(body: Any, message: str) -> None:
    async with asgi(loadtester_app()) as client:
        response = await client.post("/", json=body)

    assert response.status_code == 400
    assert message in response.text


async def test_hey_task_is_accepted_at_once_and_not_started_twice(target: Target) -> None:
    app = loadtester_app()
    cmd = f"hey -z 1m -q 1 -c 1 {target.url}"
    async with asgi(app) as client:
        first = await client.post("/", json=task(cmd))
        second = await client.post("/", json=task(cmd))
        other_canary = await client.post("/", json=task(cmd, name="other"))

        assert (first.status_code, first.text) == (202, "task accepted")
        assert (second.status_code, second.text) == (202, "task already running")
        assert other_canary.status_code == 202
        assert sorted(tasks_of(app).running()) == [("other.test", cmd), ("podinfo.test", cmd)]


async def test_a_run_that_ended_stops_only_its_canarys_tasks(target: Target) -> None:
    app = loadtester_app()
    cmd = f"hey -z 1m -q 5 -c 1 {target.url}"
    async with asgi(app) as client:
        await client.post("/", json=task(cmd))
        await client.post("/", json=task(cmd, name="other"))
        assert tasks_of(app).stop("podinfo.test") == 1  # what the engine asks when podinfo's run ends
        await asyncio.sleep(0.05)
        assert tasks_of(app).running() == [("other.test", cmd)]
        again = await client.post("/", json=task(cmd))  # the next run starts its own
        assert again.text == "task accepted"


async def test_shutdown_cancels_running_tasks(target: Target) -> None:
    app = loadtester_app()
    async with asgi(app) as client:
        await client.post("/", json=task(f"hey -z 1m -q 5 -c 1 {target.url}"))

    assert tasks_of(app).running() == []
    assert [record.outcome for record in tasks_of(app).history] == ["cancelled"]


async def test_a_task_that_overruns_its_timeout_is_stopped(target: Target) -> None:
    app = loadtester_app(task_timeout=0.3)
    async with asgi(app) as client:
        await client.post("/", json=task(f"hey -z 1m -q 5 -c 1 {target.url}"))
        await tasks_of(app).wait_idle()

    [record] = tasks_of(app).history
    assert (record.canary, record.outcome) == ("podinfo.test", "timed out")


async def test_bad_hey_command_is_refused_naming_the_flag() -> None:
    async with asgi(loadtester_app()) as client:
        response = await client.post("/", json=task("hey -z 1m --bogus 3 http://svc/"))

    assert response.status_code == 400
    assert "-bogus" in response.text


@pytest.mark.parametrize(
    "metadata",
    [
        {"cmd": "curl -s http://svc/"},
        {"type": "bash", "cmd": "echo hi"},
        {"type": "kubectl", "cmd": "get po"},
    ],
)
async def test_commands_other_than_hey_need_allow_exec(metadata: dict[str, str]) -> None:
    async with asgi(loadtester_app()) as client:
        response = await client.post("/", json={"name": "podinfo", "namespace": "test", "metadata": metadata})

    assert response.status_code == 403
    assert "allow_exec=True" in response.text


async def test_bash_task_blocks_and_returns_output_when_asked() -> None:
    async with asgi(loadtester_app(allow_exec=True)) as client:
        with_output = await client.post("/", json=task("echo hello", type="bash", returnCmdOutput="true"))
        without = await client.post("/", json=task("echo hello", type="bash", logCmdOutput="true"))

    assert (with_output.status_code, with_output.text) == (200, "hello\n")
    assert (without.status_code, without.text) == (200, "")


async def test_failing_bash_task_is_a_500_with_its_output() -> None:
    async with asgi(loadtester_app(allow_exec=True)) as client:
        response = await client.post("/", json=task("echo broken >&2; exit 3", type="bash"))

    assert response.status_code == 500
    assert "exit code 3" in response.text
    assert "broken" in response.text


async def test_bash_task_past_its_timeout_is_killed() -> None:
    started = time.monotonic()
    async with asgi(loadtester_app(allow_exec=True, task_timeout=0.3)) as client:
        response = await client.post("/", json=task("sleep 30", type="bash"))

    assert response.status_code == 500
    assert "timed out" in response.text
    assert time.monotonic() - started < 5


async def test_unknown_task_type_is_a_bad_request() -> None:
    async with asgi(loadtester_app(allow_exec=True)) as client:
        response = await client.post("/", json=task("run", type="ngrinder"))

    assert response.status_code == 400
    assert "unsupported task type 'ngrinder'" in response.text


async def test_cmd_task_runs_a_shell_command_in_the_background(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    app = loadtester_app(allow_exec=True)
    async with asgi(app) as client:
        response = await client.post("/", json=task(f"touch {marker}"))
        await tasks_of(app).wait_idle()

    assert response.status_code == 202
    assert marker.exists()
    assert [record.outcome for record in tasks_of(app).history] == ["succeeded"]


async def test_namespace_pattern_limits_callers() -> None:
    async with asgi(loadtester_app(namespace_pattern="test|prod")) as client:
        response = await client.post("/", json=task("hey -n 1 -c 1 http://svc/", namespace="dev"))

    assert response.status_code == 403
    assert "'dev'" in response.text


async def test_approve_and_halt_gates_are_fixed() -> None:
    async with asgi(loadtester_app()) as client:
        approve = await client.post("/gate/approve", json=task(""))
        halt = await client.post("/gate/halt", json=task(""))

    assert (approve.status_code, halt.status_code) == (200, 403)


@pytest.mark.parametrize("switch", ["gate", "rollback"])
async def test_switches_are_closed_until_opened_per_canary(switch: str) -> None:
    podinfo = {"name": "podinfo", "namespace": "test"}
    other = {"name": "other", "namespace": "test"}
    async with asgi(loadtester_app()) as client:
        closed = await client.post(f"/{switch}/check", json={**podinfo, "phase": "Progressing"})
        opened = await client.post(f"/{switch}/open", json=podinfo)
        now_open = await client.post(f"/{switch}/check", json={**podinfo, "phase": "Progressing"})
        elsewhere = await client.post(f"/{switch}/check", json=other)
        reclosed = await client.post(f"/{switch}/close", json=podinfo)
        after_close = await client.post(f"/{switch}/check", json=podinfo)

    assert closed.status_code == 403
    assert opened.status_code == 202
    assert now_open.status_code == 200
    assert elsewhere.status_code == 403
    assert reclosed.status_code == 202
    assert after_close.status_code == 403


async def test_opening_a_gate_needs_name_and_namespace() -> None:
    async with asgi(loadtester_app()) as client:
        response = await client.post("/gate/open", json={"name": "podinfo"})

    assert response.status_code == 400


async def test_hey_load_through_a_real_server(target: Target) -> None:
    app = loadtester_app()
    cmd = f"hey -z 1s -q 10 -c 2 {target.url}"
    async with uvicorn_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        first = await client.post("/", json=task(cmd))
        again = await client.post("/", json=task(cmd))
        await tasks_of(app).wait_idle()

    assert (first.status_code, again.status_code, again.text) == (202, 202, "task already running")
    # 2 workers x 10 per second x 1 second, once: the second call did not start another run
    assert 14 <= target.hits <= 26
    [record] = tasks_of(app).history
    assert record.outcome == "succeeded"
    assert "[200]" in record.detail


async def test_stopping_the_server_cancels_load(target: Target) -> None:
    app = loadtester_app()
    started = time.monotonic()
    async with uvicorn_server(app) as url, httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/", json=task(f"hey -z 1h -q 10 -c 2 {target.url}"))
        await asyncio.sleep(0.3)

    assert response.status_code == 202
    assert time.monotonic() - started < 5
    assert [record.outcome for record in tasks_of(app).history] == ["cancelled"]
