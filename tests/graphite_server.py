"""A real Graphite on loopback for tests: Debian's carbon-cache (receives `path value timestamp` lines on TCP)
and graphite-web (the render API), with a temporary config, whisper storage and sqlite database.

graphite-web is a Django app; Debian runs it under Apache. Here Django's own server runs it (`python3 -m django
runserver --noreload`) with the system Python that has the `graphite` package, our settings module found
through GRAPHITE_SETTINGS_MODULE and PYTHONPATH, and migrations into a temporary sqlite file. Both processes
are started together and both are ended by the context manager. Measured on 2 cores: ready in about 3 s.

Without the packages it skips, except under CI=true where it fails: CI installs graphite-carbon and
graphite-web (Makefile, system-deps).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.processes import missing, stop
from tests.servers import free_port

STARTUP_S = 60.0  # on a busy 2-core CI machine
LOG = ["--logfile=-", "start"]  # carbon-cache: log to stdout (a file of the test), run in the foreground


def binaries() -> tuple[str, str]:
    """carbon-cache, and the Python that runs graphite-web (graphite-manage's interpreter)."""
    carbon, manage = shutil.which("carbon-cache"), shutil.which("graphite-manage")
    if carbon is None or manage is None:
        missing(
            "Graphite is not installed (carbon-cache and graphite-manage; apt-get install -y graphite-carbon graphite-web)"
        )
    first = Path(manage).read_text(errors="replace").splitlines()[0]
    python = first.removeprefix("#!").strip().split()[0] if first.startswith("#!") else "/usr/bin/python3"
    return carbon, python


@dataclass
class Graphite:
    url: str  # graphite-web, e.g. http://127.0.0.1:port (render API at /render)
    line_port: int  # carbon's plaintext receiver
    logs: Path

    def send(self, points: Iterable[tuple[str, float, float]]) -> None:
        """(path, value, unix time) lines over carbon's plaintext TCP protocol."""
        text = "".join(f"{path} {value} {int(at)}\n" for path, value, at in points)
        with socket.create_connection(("127.0.0.1", self.line_port), timeout=5) as sock:
            sock.sendall(text.encode())

    def render(self, **params: str) -> Any:
        """The render API's JSON, straight (for the test's own checks)."""
        query = urllib.parse.urlencode({**params, "format": "json"})
        with urllib.request.urlopen(f"{self.url}/render?{query}", timeout=10) as reply:
            return json.load(reply)

    def wait_for(self, target: str, count: int = 1, timeout: float = 20.0) -> None:
        """Until `target` has at least `count` non-null datapoints in the last hour: carbon creates a metric's
        whisper file in its writer thread, and graphite-web finds metrics by their files."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            series = self.render(target=target, **{"from": "-1h"})
            seen = sum(1 for s in series for v, _ in s["datapoints"] if v is not None)
            if seen >= count:
                return
            time.sleep(0.1)
        raise AssertionError(f"{target}: {seen} of {count} datapoints after {timeout}s; {self.tail()}")

    def tail(self) -> str:
        return "; ".join(
            f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in sorted(self.logs.glob("*.log"))
        )


def _configure(root: Path, line_port: int, pickle_port: int, query_port: int) -> Path:
    conf, storage, web = root / "carbon", root / "storage", root / "web"
    for d in (conf, storage / "whisper", storage / "log" / "webapp", web):
        d.mkdir(parents=True, exist_ok=True)
    (conf / "carbon.conf").write_text(
        f"""[cache]
STORAGE_DIR = {storage}/
LOCAL_DATA_DIR = {storage}/whisper/
CONF_DIR = {conf}/
LOG_DIR = {storage}/log/
PID_DIR = {storage}/
DATABASE = whisper
ENABLE_LOGROTATION = False
MAX_CACHE_SIZE = inf
MAX_UPDATES_PER_SECOND = 10000
MAX_CREATES_PER_MINUTE = inf
LINE_RECEIVER_INTERFACE = 127.0.0.1
LINE_RECEIVER_PORT = {line_port}
ENABLE_UDP_LISTENER = False
PICKLE_RECEIVER_INTERFACE = 127.0.0.1
PICKLE_RECEIVER_PORT = {pickle_port}
CACHE_QUERY_INTERFACE = 127.0.0.1
CACHE_QUERY_PORT = {query_port}
ENABLE_MANHOLE = False
ENABLE_AMQP = False
"""
    )
    # one point a second for two hours: tests write and read at 1 s
    (conf / "storage-schemas.conf").write_text("[all]\npattern = .*\nretentions = 1s:2h\n")
    (web / "rheostat_graphite_settings.py").write_text(
        f"""SECRET_KEY = "rheostat-test-only"
STORAGE_DIR = {str(storage)!r}
WHISPER_DIR = {str(storage / "whisper")!r}
LOG_DIR = {str(storage / "log" / "webapp")!r}
INDEX_FILE = {str(storage / "index")!r}
CONF_DIR = {str(web)!r}
CARBONLINK_HOSTS = ["127.0.0.1:{query_port}"]
DATABASES = {{"default": {{"NAME": {str(storage / "graphite.db")!r}, "ENGINE": "django.db.backends.sqlite3"}}}}
DEFAULT_XFILES_FACTOR = 0
"""
    )
    return conf / "carbon.conf"


@contextlib.contextmanager
def graphite(root: Path) -> Iterator[Graphite]:
    """carbon-cache and graphite-web on free 127.0.0.1 ports under `root`, ready; both ended at the end."""
    carbon, python = binaries()
    line_port, pickle_port, query_port, web_port = (free_port() for _ in range(4))
    config = _configure(root, line_port, pickle_port, query_port)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env |= {
        "PYTHONPATH": str(root / "web"),
        "GRAPHITE_SETTINGS_MODULE": "rheostat_graphite_settings",
        "DJANGO_SETTINGS_MODULE": "graphite.settings",
        "PYTHONWARNINGS": "ignore",
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with (logs / "carbon.log").open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [carbon, f"--config={config}", f"--pidfile={root / 'carbon.pid'}", "--nodaemon", *LOG],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        with (logs / "migrate.log").open("wb") as out:
            migrate = subprocess.Popen(
                [python, "-m", "django", "migrate", "--run-syncdb", "-v0"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        processes.append(migrate)
        with (logs / "web.log").open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [python, "-m", "django", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        server = Graphite(f"http://127.0.0.1:{web_port}", line_port, logs)
        _wait_ready(server, processes, migrate)
        yield server
    finally:
        for process in reversed(processes):
            stop(process)


def _wait_ready(
    server: Graphite, processes: list[subprocess.Popen[bytes]], migrate: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + STARTUP_S
    carbon_up = web_up = False
    while not (carbon_up and web_up and migrate.poll() is not None):
        for p in processes:
            if p is not migrate and p.poll() is not None:
                raise AssertionError(f"Graphite exited ({p.args!r}: {p.returncode}); {server.tail()}")
        if migrate.poll() not in (None, 0):
            raise AssertionError(f"graphite-web's migrations failed; {server.tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"Graphite was not ready in {STARTUP_S:g}s; {server.tail()}")
        if not carbon_up:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.line_port), 1):
                carbon_up = True
        if not web_up:
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                web_up = server.render(target="test") == []
        time.sleep(0.05)
