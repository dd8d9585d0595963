"""A real InfluxDB 1.x (Debian's `influxd`) on 127.0.0.1 for a test module, with authentication on.

Its config puts everything under a temporary directory: free loopback ports for the HTTP API and the RPC
bind address, meta/data/wal dirs, no usage reporting, no self-monitoring database, no continuous queries.
The first user (an admin) is created over HTTP, which InfluxDB allows while it has no users. Without the
binary the tests skip, except under CI=true where they fail: CI installs it (`apt-get install -y influxdb`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

USER, PASSWORD, DATABASE = "rheostat", "influx-test-password", "metrics"


def influxd_binary() -> str:
    found = shutil.which("influxd")
    if found is None:
        reason = "the influxd binary is not installed (apt-get install -y influxdb)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must install it")
        pytest.skip(reason)
    return found


@dataclass
class Influx:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def run(self, statement: str) -> None:
        """An InfluxQL statement that changes something (POST, as InfluxDB asks)."""
        r = httpx.post(f"{self.url}/query", data={"q": statement}, auth=(USER, PASSWORD), timeout=10)
        assert r.status_code == 200 and '"error"' not in r.text, r.text

    def write(self, lines: str, *, db: str = DATABASE) -> None:
        """Points in line protocol, over HTTP `/write`."""
        r = httpx.post(
            f"{self.url}/write",
            params={"db": db, "precision": "ms"},
            content=lines.encode(),
            auth=(USER, PASSWORD),
            timeout=10,
        )
        assert r.status_code == 204, r.text


def _config(tmp: Path, http_port: int, rpc_port: int) -> str:
    return f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{tmp / "meta"}"
[data]
  dir = "{tmp / "data"}"
  wal-dir = "{tmp / "wal"}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[http]
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = true
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
"""


@contextlib.contextmanager
def influxdb(tmp: Path) -> Iterator[Influx]:
    """Start influxd with a user and an empty database `metrics`; stop it at the end."""
    binary = influxd_binary()
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "influxdb.conf"
    config.write_text(_config(tmp, port, free_port()))
    log = tmp / "influxd.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "run", "-config", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ping", timeout=1).status_code == 204:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"influxd did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        server = Influx(url, process, log)
        statement = f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        r = httpx.post(f"{url}/query", data={"q": statement}, timeout=10)
        assert r.status_code == 200 and '"error"' not in r.text, r.text
        server.run(f"CREATE DATABASE {DATABASE}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
