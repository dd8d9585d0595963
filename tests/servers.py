"""Small helpers for tests that run their own servers on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import BaseServer
from typing import TypeVar

S = TypeVar("S", bound=BaseServer)

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "rheostat test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "rheostat test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}


def free_port() -> int:
    """A loopback port nothing listens on (free when asked; tests use it at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def serving(server: S, name: str) -> Iterator[S]:
    """Serve in a daemon thread for the duration of the block, then shut down and close."""
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def git(repo: Path, *args: str) -> str:
    """Real git with a fixed identity, as a test's commits need."""
    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    return out.stdout.strip()
