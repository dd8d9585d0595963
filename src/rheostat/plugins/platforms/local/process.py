"""One supervised replica: launch, probe readiness, restart with back-off, stop without leftovers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rheostat.model.base import ObjectKey
from rheostat.model.workload import ProcessTemplate
from rheostat.plugins.platforms.base import Group
from rheostat.plugins.platforms.local import procfs
from rheostat.plugins.platforms.local.ports import PortPool
from rheostat.plugins.platforms.local.probe import probe
from rheostat.plugins.platforms.local.status import ReplicaStatus
from rheostat.plugins.platforms.local.tasks import TaskSet

log = logging.getLogger(__name__)

PASS_ENV = ("PATH", "HOME", "LANG", "PYTHONPATH")  # all a replica inherits; the template adds the rest
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 10.0
BACKOFF_RESET_S = 10.0  # ready this long before exiting: the next crash starts the back-off afresh
CRASH_LOOP = 5  # exits in a row without ever becoming ready: give up hope (but keep trying)
FAILURE_THRESHOLD = 3  # failed probes in a row before a ready replica is taken out
EXIT_POLL_S = 0.05
STARTUP_PROBE_S = 0.1  # probe faster than periodSeconds until first ready: rollouts wait on it
LOG_CAP_BYTES = 1 << 20
LOG_CHECK_S = 5.0
STOP_GRACE_S = 5.0
MARKER_ENV = "RHEOSTAT_DATA_PLANE"  # in every replica's environment: its log folder under the data dir


class LaunchError(Exception):
    """The process could not be started at all; retrying the same template will not help."""


@dataclass(frozen=True)
class ReplicaContext:
    """What a replica needs from the platform that owns it."""

    key: ObjectKey
    group: Group
    log_dir: Path
    ports: PortPool
    tasks: TaskSet
    clock: Callable[[], float]
    on_event: Callable[[ObjectKey, str, str], None]
    on_change: Callable[[], None]  # readiness changed: the group re-plans and the router may need news
    on_launch: Callable[[], None]  # a new pid: persist it


async def wait_exit(proc: subprocess.Popen[bytes], within_s: float | None) -> int | None:
    """Wait for the process to end without blocking the loop; its exit code, or None on timeout."""
    if proc.poll() is not None:
        return proc.returncode
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd (old kernel): a thread waits instead
        with contextlib.suppress(subprocess.TimeoutExpired):
            return await asyncio.to_thread(proc.wait, within_s)
        return None
    exited: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await asyncio.wait_for(exited, within_s)
    except TimeoutError:
        return None
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    return proc.wait()  # already exited: this only reaps it


class _Child:
    """A replica this controller started: its exit code is ours to read."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    async def wait(self, within_s: float | None) -> None:
        await wait_exit(self.proc, within_s)


class _Adopted:
    """A replica a previous controller started: not our child, so it is watched through /proc."""

    def __init__(self, pid: int, ticks: int | None) -> None:
        self.pid = pid
        self.ticks = ticks

    def running(self) -> bool:
        return procfs.same_process(self.pid, self.ticks)

    def exit_code(self) -> int | None:
        return None  # only a parent learns it

    async def wait(self, within_s: float | None) -> None:
        await procfs.wait_gone(self.pid, self.ticks, within_s)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited (code unknown: a previous controller started it)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class Replica:
    def __init__(self, ctx: ReplicaContext, index: int, template: ProcessTemplate, port: int) -> None:
        self.ctx = ctx
        self.index = index
        self.template = template
        self.revision = template.revision()
        self.port = port
        self.pid: int | None = None
        self.start_ticks: int | None = None
        self.ready = False
        self.ever_ready = False
        self.fatal = False
        self.retiring = False
        self.restarts = 0
        self.message = "starting"
        self._proc: _Child | _Adopted | None = None
        self._task: asyncio.Task[None] | None = None
        self._log_offset = 0
        self._last_pid: int | None = None  # for messages after the process is gone

    @property
    def name(self) -> str:
        return f"{self.ctx.group}-{self.index}"

    @property
    def log_path(self) -> Path:
        return self.ctx.log_dir / f"{self.name}.log"

    def start(self) -> None:
        self._task = self.ctx.tasks.spawn(self._supervise(), name=f"replica {self.ctx.key} {self.name}")

    async def adopt(self, pid: int, ticks: int | None) -> None:
        """Supervise a process a previous controller left running; ready at once if its probe passes now."""
        self._proc = _Adopted(pid, ticks)
        self.pid = self._last_pid = pid
        self.start_ticks = ticks
        # It was serving a moment ago: one slow probe while the new controller starts up (CPU-bound) must
        # not take it out of Envoy's endpoints, so it gets the same failure threshold as a ready replica.
        for _ in range(FAILURE_THRESHOLD):
            self.ever_ready = await probe(self.port, self.template.readinessProbe)
            if self.ever_ready:
                break
            await asyncio.sleep(STARTUP_PROBE_S)
        message = "" if self.ever_ready else f"{self.name} adopted (pid {pid}), waiting for readiness"
        self._set(ready=self.ever_ready, message=message)
        self.start()

    async def detach(self) -> None:
        """Stop supervising and leave the process running, for the next controller to adopt."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if isinstance(self._proc, _Child):
            # Given up on purpose: Popen must not warn that it "is still running" when collected.
            self._proc.proc.returncode = 0
            self._proc = _Adopted(self._proc.pid, self.start_ticks)

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            index=self.index,
            pid=self.pid,
            port=self.port,
            revision=self.revision,
            ready=self.ready,
            restarts=self.restarts,
            retiring=self.retiring,
            message=self.message,
        )

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the replica's session, SIGKILL it after `grace_s`; returns once it is gone."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        proc = self._proc
        if proc is not None:
            if proc.running():
                procfs.signal_session(proc.pid, signal.SIGTERM)
                await proc.wait(grace_s)
            # Also reaches children the replica left behind in its session.
            procfs.signal_session(proc.pid, signal.SIGKILL)
            await proc.wait(None)
            self._proc = None
        self._set(ready=False, message="stopped")
        self.pid = None
        self.ctx.ports.release(self.port)

    # -- supervision ---------------------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = BACKOFF_MIN_S
        unready_exits = 0
        while True:
            try:
                if self._proc is None:  # else adopted: already running
                    self._launch()
            except LaunchError as exc:
                if not self.fatal or self.message != str(exc):
                    self._emit("ProcessFailed", str(exc))
                self._set(ready=False, fatal=True, message=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            code, ready_for = await self._watch()
            if self._last_pid is not None:  # what it forked dies with it, adopted or not
                procfs.signal_session(self._last_pid, signal.SIGKILL)
            self._proc = None
            self.pid = None
            self.revision = self.template.revision()  # an adopted older one comes back as what it now runs
            if ready_for >= BACKOFF_RESET_S:
                backoff = BACKOFF_MIN_S
            unready_exits = 0 if ready_for > 0 else unready_exits + 1
            self.restarts += 1
            exit_ = f"pid {self._last_pid} {_describe_exit(code)}"
            what = f"{self.name} ({exit_})"
            self._emit("ProcessRestarted", f"{what}; restart {self.restarts} in {backoff:.1f}s")
            if unready_exits >= CRASH_LOOP:
                output = self._output_since_launch()
                self._set(
                    ready=False,
                    fatal=True,
                    message=f"{self.name} is crash-looping: {unready_exits} exits without becoming ready"
                    f" (last: {exit_}); last output:\n{output}",
                )
            else:
                self._set(ready=False, message=f"{what}; restarting in {backoff:.1f}s")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            self.port = self.ctx.ports.renew(self.port)

    async def _watch(self) -> tuple[int | None, float]:
        """Probe until the process exits; its exit code (None if unknown) and how long it was ready."""
        proc = self._proc
        assert proc is not None
        loop = asyncio.get_running_loop()
        next_probe = next_log_check = loop.time()
        failures = 0
        ready_since: float | None = loop.time() if self.ready else None  # adopted and ready
        was_ready_for = 0.0
        period = self.template.readinessProbe.periodSeconds if self.template.readinessProbe else 0.5
        while proc.running():
            now = loop.time()
            if now >= next_probe:
                ok = await probe(self.port, self.template.readinessProbe)
                now = loop.time()
                if ok:
                    failures = 0
                    if ready_since is None:
                        ready_since = now
                    if not self.ready:
                        self.ever_ready = True
                        self._set(ready=True, fatal=False, message="")
                else:
                    failures += 1
                    if self.ready and failures >= FAILURE_THRESHOLD:
                        was_ready_for += now - (ready_since or now)
                        ready_since = None
                        self._set(
                            ready=False, message=f"{self.name}: readiness probe failed {failures} times"
                        )
                next_probe = now + (period if self.ever_ready else min(period, STARTUP_PROBE_S))
            if now >= next_log_check:
                self._cap_log()
                next_log_check = now + LOG_CHECK_S
            await asyncio.sleep(EXIT_POLL_S)
        if ready_since is not None:
            was_ready_for += loop.time() - ready_since
        if isinstance(proc, _Child):
            await proc.wait(None)  # reap it
        return proc.exit_code(), was_ready_for

    def _launch(self) -> None:
        argv, env, cwd = self._command()
        self._cap_log()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.ctx.clock()))
            out.write(
                f"--- rheostat {stamp}: starting {self.name} revision {self.revision} on port {self.port}:"
                f" {' '.join(argv)}\n".encode()
            )
            out.flush()
            self._log_offset = out.tell()
            try:
                # Its own session and nothing tying it to us: the replica outlives a controller crash or
                # restart and is adopted by the next one. It writes its own copy of the log file.
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise LaunchError(f"{self.name}: command {argv[0]!r} not found") from exc
            except PermissionError as exc:
                raise LaunchError(f"{self.name}: command {argv[0]!r} is not executable") from exc
            except OSError as exc:
                raise LaunchError(f"{self.name}: cannot run {argv[0]!r}: {exc}") from exc
        self._proc = _Child(proc)
        self.pid = self._last_pid = proc.pid
        self.start_ticks = procfs.start_ticks(proc.pid)
        if not self.fatal:  # a crash loop keeps its diagnosis (and last output) until the process is ready
            self._set(ready=False, message=f"{self.name} started (pid {proc.pid}), waiting for readiness")
        self.ctx.on_launch()

    def _command(self) -> tuple[list[str], dict[str, str], str | None]:
        port = str(self.port)
        argv = [part.replace("{port}", port) for part in self.template.command]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the controller's interpreter, so `python -m pkg` sees the same venv
        env = {name: os.environ[name] for name in PASS_ENV if name in os.environ}
        env.update({name: value.replace("{port}", port) for name, value in self.template.env.items()})
        env["PORT"] = port
        env[MARKER_ENV] = str(self.ctx.log_dir.absolute())
        cwd = self.template.workingDir
        if cwd is not None and not os.path.isdir(cwd):
            raise LaunchError(f"{self.name}: workingDir {cwd!r} is not a directory")
        exe = argv[0]
        if "/" not in exe:
            found = shutil.which(exe, path=env.get("PATH", os.defpath))
            if found is None:
                raise LaunchError(f"{self.name}: command {exe!r} not found on PATH")
        else:
            path = os.path.join(cwd or ".", exe)
            if not os.path.exists(path):
                raise LaunchError(f"{self.name}: command {exe!r} not found")
            if os.path.isdir(path) or not os.access(path, os.X_OK):
                raise LaunchError(f"{self.name}: command {exe!r} is not executable")
        return argv, env, cwd

    # -- helpers -----------------------------------------------------------------------------------------

    def _set(self, *, ready: bool, message: str, fatal: bool | None = None) -> None:
        changed = ready != self.ready or (fatal is not None and fatal != self.fatal)
        self.ready = ready
        self.message = message
        if fatal is not None:
            self.fatal = fatal
        if changed:
            self.ctx.on_change()

    def _emit(self, reason: str, message: str) -> None:
        log.info("%s %s: %s", self.ctx.key, reason, message)
        try:
            self.ctx.on_event(self.ctx.key, reason, message)
        except Exception:
            log.exception("on_event handler failed for %s %s", self.ctx.key, reason)

    def _output_since_launch(self, lines: int = 10) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(self._log_offset, f.seek(0, os.SEEK_END) - 4096))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _cap_log(self) -> None:
        """Copy-and-truncate past the cap: the child writes with O_APPEND, so it carries on at the new end."""
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > LOG_CAP_BYTES:
                shutil.copyfile(self.log_path, self.log_path.with_suffix(".log.1"))
                os.truncate(self.log_path, 0)
                self._log_offset = 0
