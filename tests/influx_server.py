"""A real InfluxDB 1.x (Debian's `influxd`) on 127.0.0.1 for a test module, with authentication on.

Its config puts everything under a temporary directory: free loopback ports for the HTTP API and the RPC
bind address, meta/data/wal dirs, no usage reporting, no self-monitoring database, no continuous queries.
The first user (an admin) is created over HTTP, which InfluxDB allows while it has no users. Without the
binary the tests skip, except under CI=true where they fail: CI installs it (`apt-get install -y influxdb`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests import processes
from tests.processes import Server
from tests.servers import free_port

USER, PASSWORD, DATABASE = "rheostat", "influx-test-password", "metrics"


@dataclass
class Influx(Server):
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
    binary = processes.binary("influxd", "influxdb")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "influxdb.conf"
    config.write_text(_config(tmp, port, free_port()))
    url, log = f"http://127.0.0.1:{port}", tmp / "influxd.log"
    ready = processes.answers(f"{url}/ping", lambda r: r.status_code == 204)
    with processes.started([binary, "run", "-config", str(config)], log, ready, name="influxd") as process:
        server = Influx(url, process, log)
        statement = f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        r = httpx.post(f"{url}/query", data={"q": statement}, timeout=10)
        assert r.status_code == 200 and '"error"' not in r.text, r.text
        server.run(f"CREATE DATABASE {DATABASE}")
        yield server
