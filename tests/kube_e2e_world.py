"""What tests/test_kube_e2e.py runs `rheostat run --kubeconfig` against: the kmock API server recording every
status the controller writes with the routing objects of that moment, the mesh's metrics in a real
Prometheus, a webhook receiver standing for Flagger's load tester, and the controller as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import attrs
import httpx
import yaml

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, KubeAPI, Obj, WatchType
from tests.kubeapi import Key, KubeServer
from tests.servers import free_port, serving
from tests.test_prometheus import prometheus

ROUTING = (
    kinds.VIRTUAL_SERVICE,
    kinds.HTTPROUTE,
    kinds.HTTPROUTE_V1BETA1,
    kinds.TRAFFIC_SPLIT_V1ALPHA2,
    kinds.TRAFFIC_SPLIT_V1ALPHA3,
    kinds.INGRESS,
)
RHEOSTAT = shutil.which("rheostat", path=os.path.dirname(sys.executable))


# -- the API server ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A Canary status as the controller wrote it, and the routing objects of its namespace at that instant."""

    status: Obj
    routing: dict[tuple[str, str], Obj]  # (kind, name) -> object

    def route(self, kind: str, name: str = "podinfo") -> Obj | None:
        return self.routing.get((kind, name))


@attrs.define(kw_only=True)
class RecordingServer(KubeServer):
    """The test's API server: each Canary status written is kept with the routing objects of that instant (the
    router writes before the status, so they belong together), and every routing object ever committed."""

    snapshots: dict[str, list[Snapshot]] = attrs.field(factory=dict, init=False)  # by namespace
    route_writes: list[tuple[WatchType, Obj]] = attrs.field(factory=list, init=False)

    def _commit(self, kind: Kind, key: Key, obj: Obj, event: WatchType) -> Obj:
        out = super()._commit(kind, key, obj, event)
        ns = obj["metadata"].get("namespace", "")
        if kind == kinds.CANARY and event != "DELETED" and obj.get("status"):
            seen = self.snapshots.setdefault(ns, [])
            if not seen or seen[-1].status != obj["status"]:
                seen.append(Snapshot(copy.deepcopy(obj["status"]), self.routing(ns)))
        if kind in ROUTING:
            self.route_writes.append((event, copy.deepcopy(obj)))
        return out

    def routing(self, ns: str) -> dict[tuple[str, str], Obj]:
        out = {}
        for kind in ROUTING:
            prefix = f"{kind.api_version}/{kind.plural}"
            for (k, n, name), obj in self.store.items():
                if k == prefix and n == ns:
                    out[(kind.kind, name)] = copy.deepcopy(obj)
        return out

    # What kubectl does, without HTTP (the test shares the server's event loop)

    def edit(self, kind: Kind, ns: str, name: str, change: Callable[[Obj], None]) -> Obj:
        key = self._key(kind, ns, name)
        old = self.store[key]
        new = copy.deepcopy(old)
        change(new)
        return self._write(kind, key, old, new, "kubectl")

    def remove(self, kind: Kind, ns: str, name: str) -> None:
        key = self._key(kind, ns, name)
        self._commit(kind, key, copy.deepcopy(self.store[key]), "DELETED")

    def status_of(self, ns: str, name: str = "podinfo") -> Obj:
        obj = self.object(kinds.CANARY, ns, name)
        return (obj or {}).get("status") or {}


class StoreView:
    """Enough of the KubeAPI for tests/kubelet.py (it only lists), read straight from the server's store."""

    def __init__(self, server: KubeServer) -> None:
        self.server = server

    async def list(self, kind: Kind, namespace: str | None = None, labels: Any = None) -> list[Obj]:
        prefix = f"{kind.api_version}/{kind.plural}"
        return [copy.deepcopy(o) for k, o in list(self.server.store.items()) if k[0] == prefix]

    def api(self) -> KubeAPI:
        return cast(KubeAPI, self)


def kubeconfig_for(server: KubeServer, path: Path) -> Path:
    url = str(server.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": url}}],
                "users": [{"name": "kmock", "user": {"token": "test"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


# -- Prometheus -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def fast_prometheus(tmp: Path, target: str) -> Iterator[str]:
    """A real Prometheus scraping `target` (host:port, /metrics) every 250 ms: a 1 s window has samples."""
    with prometheus(tmp, {"mesh": (target, "/metrics")}, scrape_interval="250ms") as prom:
        yield prom.url


# -- webhooks (Flagger's load tester cannot resolve here) ------------------------------------------------------


@dataclass
class Hooks:
    """Answers every webhook 200 and keeps what was sent; a gate named in `closed` answers 403 (closed)."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    closed: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self, namespace: str) -> list[str]:
        with self.lock:
            return [c["name"] for c in self.calls if c.get("namespace") == namespace]

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(body or b"{}")
                except ValueError:
                    payload = {}
                name = self.path.strip("/")
                with hooks.lock:
                    hooks.calls.append({**payload, "name": name})
                code = 403 if name in hooks.closed else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler), "kube-e2e-hooks") as server:
            yield f"http://127.0.0.1:{server.server_address[1]}"


# -- `rheostat run` ---------------------------------------------------------------------------------------


@dataclass
class Controller:
    """`rheostat run --kubeconfig` as a subprocess, its output in files. Waiting never blocks the event loop:
    the API server it talks to runs in the test's loop."""

    kubeconfig: Path
    data: Path
    logs: Path
    metrics_server: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()  # more options of `rheostat run`

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data / "token").read_text().strip()

    def stderr(self) -> str:
        return (self.logs / "run.err").read_text(errors="replace")

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert RHEOSTAT is not None, f"the `rheostat` console script is not installed beside {sys.executable}"
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "run.out", "wb") as out, open(self.logs / "run.err", "wb") as err:
            return subprocess.Popen(
                [
                    RHEOSTAT,
                    "run",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--metrics-server",
                    self.metrics_server,
                    "--data-dir",
                    str(self.data),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    *self.args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "COLUMNS": "200"},
            )

    async def start(self) -> None:
        self.proc = self._spawn()
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"`rheostat run` exited with {self.proc.returncode}: {self.stderr()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        await http.get(f"{self.api}/healthz")
                    ).status_code == 200 and "serving" in self.stderr():
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"`rheostat run` did not serve within 60s: {self.stderr()}")

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL; reaped either way."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
        return proc.returncode

    async def kill(self) -> None:
        """SIGKILL: the process ends at once, without a word to anyone (its Lease is not released)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 10)

    def command(self, *args: str) -> list[str]:
        assert RHEOSTAT is not None
        return [RHEOSTAT, *args]

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The `rheostat` command against this controller, token from its data dir."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(*args, "--server", self.api),
            *(["--data-dir", str(self.data)] if args[0] not in ("get",) else []),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "COLUMNS": "200"},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return subprocess.CompletedProcess(list(args), proc.returncode, out.decode(), err.decode())

    async def get(self, path: str) -> Any:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{self.api}{path}")
            resp.raise_for_status()
            return resp.json() if path.startswith("/api/") else resp.text


@contextlib.asynccontextmanager
async def running(controller: Controller) -> AsyncIterator[Controller]:
    try:
        await controller.start()
        yield controller
    finally:
        code = await controller.stop()
    assert code == 0, f"`rheostat run` exited with {code} on SIGTERM: {controller.stderr()[-3000:]}"
