"""Real servers for tests: the binary found (a skip without it, a failure under CI=true, where CI must have
installed it), started with its output in a log file, waited for until it answers, and ended by the test."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from tests.conftest import in_ci


def missing(reason: str) -> NoReturn:
    """Skip, except under CI=true where it fails: CI installs what the tests need."""
    if in_ci():
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)


def binary(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        missing(f"the {name} binary is not installed (apt-get install -y {package})")
    return found


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a process the test started: politely, then not."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(
    url: str, ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200
) -> Callable[[], bool]:
    """A readiness check: `url` answers, and the answer is `ok`."""

    def check() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return ok(httpx.get(url, timeout=1))
        return False

    return check


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@contextlib.contextmanager
def started(
    argv: list[str],
    log: Path,
    ready: Callable[[], bool],
    *,
    name: str,
    timeout_s: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`argv` running with its output in `log`, once `ready()`; ended at the end of the block."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield process
    finally:
        stop(process)
