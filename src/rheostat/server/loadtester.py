"""A load tester that speaks flagger-loadtester's HTTP contract, so Flagger canaries call it unchanged.

`POST /` takes Flagger's webhook payload. `metadata.type: cmd` (the default) queues the command and answers
202; the same command for the same canary is not started twice while it runs. `hey ...` commands run on the
built-in generator. Everything else starts a real process, so it is refused (403) unless `allow_exec=True`.
The gate endpoints keep their state in memory, keyed by `name.namespace`, closed by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shlex
import signal
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from rheostat.server.hey import HeySpec, parse_hey, run_hey
from rheostat.util.errors import json_type

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3600.0  # flagger-loadtester's -timeout default, per task
_BLOCKING = {"bash": ["bash", "-c"], "helm": ["helm"], "helmv3": ["helmv3"], "kubectl": ["kubectl"]}
_OUTPUT_LIMIT = 4096  # bytes of command output kept for an error reply


class ExecDisabled(PermissionError):
    """A task would start a process, and this load tester was not allowed to."""


@dataclass(frozen=True)
class TaskRecord:
    canary: str  # name.namespace
    cmd: str
    outcome: str  # "succeeded", "failed", "timed out" or "cancelled"
    detail: str


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class LoadTester:
    """Runs load-test tasks: async `cmd` tasks deduplicated per canary, and blocking ones on request."""

    def __init__(self, *, allow_exec: bool = False, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.allow_exec = allow_exec
        self.timeout = timeout
        self.history: deque[TaskRecord] = deque(maxlen=100)
        self._tasks: dict[tuple[str, str], asyncio.Task[str]] = {}

    def running(self) -> list[tuple[str, str]]:
        """(canary, cmd) of every task still running."""
        return [key for key, task in self._tasks.items() if not task.done()]

    def start(self, canary: str, cmd: str, *, log_output: bool = False) -> bool:
        """Queue a `cmd` task; False when the same one is already running. Raises ValueError, ExecDisabled."""
        key = (canary, cmd)
        if key in self._tasks and not self._tasks[key].done():
            return False
        words = cmd.split(maxsplit=1)
        if words and words[0].rsplit("/", 1)[-1] == "hey":
            spec = parse_hey(cmd)  # a bad command fails the webhook now, not silently later
            work: Callable[[], Awaitable[str]] = functools.partial(_hey, spec)
        else:
            self._check_exec("cmd")
            work = functools.partial(_shell, ["sh", "-c", cmd], log_output=log_output)
        task = asyncio.create_task(self._timed(work), name=f"loadtester {canary}: {cmd}")
        self._tasks[key] = task
        task.add_done_callback(lambda done: self._finished(key, done))
        return True

    async def run_blocking(self, kind: str, cmd: str) -> CommandResult:
        """Run a `bash`, `helm`, `helmv3` or `kubectl` task and wait; raises ExecDisabled, TimeoutError."""
        if kind not in _BLOCKING:
            supported = ", ".join(["cmd", *sorted(_BLOCKING)])
            raise ValueError(f"unsupported task type {kind!r}; supported: {supported}")
        self._check_exec(kind)
        argv = [*_BLOCKING[kind], cmd] if kind == "bash" else [*_BLOCKING[kind], *_split(cmd)]
        async with asyncio.timeout(self.timeout):
            return await run_command(argv)

    def stop(self, canary: str) -> int:
        """Cancel the `cmd` tasks of a canary (`name.namespace`) whose run ended; how many were running.

        A load test started for one run must not go on hitting the next run's canary (a bad release's
        `hey` to an erroring path would be counted against the good release after it)."""
        tasks = [task for (who, _), task in self._tasks.items() if who == canary and not task.done()]
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def wait_idle(self) -> None:
        """Wait until every queued task has finished."""
        while pending := [task for task in self._tasks.values() if not task.done()]:
            await asyncio.wait(pending)

    async def close(self) -> None:
        """Cancel every task and wait for them to finish."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _check_exec(self, kind: str) -> None:
        if not self.allow_exec:
            raise ExecDisabled(
                f"running {kind} tasks is disabled: this load tester only runs built-in `hey` commands. "
                "Start it with allow_exec=True (loadtester_app(allow_exec=True)) to run other commands."
            )

    async def _timed(self, work: Callable[[], Awaitable[str]]) -> str:
        # The coroutine is made here, inside the task, so a task cancelled before it starts leaves nothing
        # unawaited.
        async with asyncio.timeout(self.timeout):
            return await work()

    def _finished(self, key: tuple[str, str], task: asyncio.Task[str]) -> None:
        """Record how a task ended; an unexpected error is logged, since nobody awaits these tasks."""
        if self._tasks.get(key) is task:
            del self._tasks[key]
        canary, cmd = key
        if task.cancelled():
            outcome, detail = "cancelled", ""
        elif isinstance(error := task.exception(), TimeoutError):
            outcome, detail = "timed out", f"after {self.timeout:g}s"
        elif error is not None:
            outcome, detail = "failed", str(error)
            log.error("load test task for %s failed: %s", canary, cmd, exc_info=error)
        else:
            outcome, detail = "succeeded", task.result()
        self.history.append(TaskRecord(canary, cmd, outcome, detail))
        log.info("load test task for %s %s: %s %s", canary, outcome, cmd, detail)


async def _hey(spec: HeySpec) -> str:
    return (await run_hey(spec)).summary()


async def _shell(argv: list[str], *, log_output: bool) -> str:
    result = await run_command(argv)
    if log_output:
        log.info("output of %s:\n%s%s", argv[-1], result.stdout, result.stderr)
    if result.returncode != 0:
        raise RuntimeError(_failure(result))
    return f"exit code {result.returncode}"


async def run_command(argv: list[str]) -> CommandResult:
    """Run a process to completion; on cancellation its whole process group is killed."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # own process group, so children of `sh -c` die with it
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.communicate()  # reap it and close the pipes
        raise
    return CommandResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))


def _split(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError as exc:
        raise ValueError(f"command is not valid shell syntax: {exc}") from None


def _failure(result: CommandResult) -> str:
    output = (result.stdout + result.stderr)[-_OUTPUT_LIMIT:].strip()
    return f"command failed with exit code {result.returncode}: {output}"


class Gates:
    """Manual gates and rollback switches, keyed by name.namespace; closed until opened."""

    def __init__(self) -> None:
        self.open_gates: set[str] = set()
        self.open_rollbacks: set[str] = set()


def loadtester_app(
    *,
    allow_exec: bool = False,
    task_timeout: float = DEFAULT_TIMEOUT,
    namespace_pattern: str | None = None,
) -> Starlette:
    """The load tester as an ASGI app; `app.state.loadtester` is its LoadTester, `app.state.gates` its Gates.

    `namespace_pattern` (a regex, like flagger-loadtester's -namespace-regexp) limits which canary namespaces
    may start tasks.
    """
    tester = LoadTester(allow_exec=allow_exec, timeout=task_timeout)
    gates = Gates()
    allowed = re.compile(namespace_pattern) if namespace_pattern is not None else None

    async def task(request: Request) -> Response:
        payload = await _json_object(request)
        if payload is None:
            return PlainTextResponse("request body must be a JSON object", status_code=400)
        canary = _canary_key(payload)
        metadata = payload.get("metadata")
        if not isinstance(metadata, dict) or not metadata:
            return PlainTextResponse("metadata is empty; expected metadata.cmd", status_code=400)
        namespace = str(payload.get("namespace", ""))
        if allowed is not None and not allowed.fullmatch(namespace):
            return PlainTextResponse(f"namespace {namespace!r} is not allowed", status_code=403)
        kind = str(metadata.get("type") or "cmd")
        cmd = str(metadata.get("cmd") or "")
        if not cmd:
            return PlainTextResponse("metadata.cmd is empty", status_code=400)
        try:
            if kind == "cmd":
                started = tester.start(canary, cmd, log_output=_flag(metadata, "logCmdOutput"))
                text = "task accepted" if started else "task already running"
                return PlainTextResponse(text, status_code=202)
            result = await tester.run_blocking(kind, cmd)
        except ExecDisabled as exc:
            return PlainTextResponse(str(exc), status_code=403)
        except ValueError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        except TimeoutError:
            return PlainTextResponse(f"{kind} task timed out after {task_timeout:g}s", status_code=500)
        if _flag(metadata, "logCmdOutput"):
            log.info("output of %s task for %s:\n%s%s", kind, canary, result.stdout, result.stderr)
        if result.returncode != 0:
            return PlainTextResponse(_failure(result), status_code=500)
        return PlainTextResponse(result.stdout if _flag(metadata, "returnCmdOutput") else "", status_code=200)

    async def approve(_: Request) -> Response:
        return PlainTextResponse("Approved", status_code=200)

    async def halt(_: Request) -> Response:
        return PlainTextResponse("Forbidden", status_code=403)

    def check(switches: set[str], what: str) -> Route:
        async def endpoint(request: Request) -> Response:
            key = _canary_key(await _json_object(request) or {})
            if key in switches:
                return PlainTextResponse(f"{what} open", status_code=200)
            return PlainTextResponse(f"{what} closed", status_code=403)

        return Route(f"/{what}/check", endpoint, methods=["POST", "GET"])

    def toggle(switches: set[str], what: str, opening: bool) -> Route:
        async def endpoint(request: Request) -> Response:
            payload = await _json_object(request)
            if not payload or not payload.get("name") or not payload.get("namespace"):
                return PlainTextResponse("expected a JSON body with name and namespace", status_code=400)
            key = _canary_key(payload)
            if opening:
                switches.add(key)
            else:
                switches.discard(key)
            state = "opened" if opening else "closed"
            log.info("%s %s for %s", what, state, key)
            return PlainTextResponse(f"{what} {state}", status_code=202)

        return Route(f"/{what}/{'open' if opening else 'close'}", endpoint, methods=["POST"])

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("OK")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await tester.close()

    routes = [
        Route("/", task, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/gate/approve", approve, methods=["POST", "GET"]),
        Route("/gate/halt", halt, methods=["POST", "GET"]),
        check(gates.open_gates, "gate"),
        toggle(gates.open_gates, "gate", opening=True),
        toggle(gates.open_gates, "gate", opening=False),
        check(gates.open_rollbacks, "rollback"),
        toggle(gates.open_rollbacks, "rollback", opening=True),
        toggle(gates.open_rollbacks, "rollback", opening=False),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        max_body_size=1 << 20,
        exception_handlers={BadPayload: _bad_payload},
    )
    app.state.loadtester = tester
    app.state.gates = gates
    return app


class BadPayload(ValueError):
    """The body is not a JSON object; answered 400 with the reason."""


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object, None when it is empty; raises BadPayload."""
    body = await request.body()
    if not body.strip():
        return None
    try:
        payload = orjson.loads(body)  # refuses nesting past 1024 levels, where json.loads would recurse
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"request body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BadPayload(f"request body must be a JSON object, got {json_type(payload)}")
    return payload


async def _bad_payload(_: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=400)


def _canary_key(payload: Mapping[str, Any]) -> str:
    return f"{payload.get('name', '')}.{payload.get('namespace', '')}"


def _flag(metadata: Mapping[str, Any], name: str) -> bool:
    # Flagger metadata is a map of strings: "true"; accept a YAML boolean too.
    value = metadata.get(name)
    return value is True or (isinstance(value, str) and value.lower() == "true")
