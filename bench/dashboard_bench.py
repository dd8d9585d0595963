"""Benchmark: the dashboard's API with 200 canaries progressing.

The real API app (`create_app`: routes, token middleware, change stream) is served by uvicorn on 127.0.0.1,
over the in-memory fakes of bench/engine_ticks.py instead of Envoy and processes: `Ctl` carries the
attributes the app reads. In the server's thread and event loop, a ticker runs real engine ticks on every
canary, all the time (SQLite writes of status, events and history, as in production), so each request
competes with that work.

Measured from another thread (its own client, its own loop):
- `GET /api/v1/canaries` (all 200, with status): latency p50/p99 over 200 sequential requests, back to back
  (few canaries change between two lists, so the API's rendered-item cache mostly hits), and over 20
  requests spaced 0.5 to 1.5 s apart (a third to a half of the canaries ticked in between), and the very first
  list (nothing cached);
- a state change written to the store (an event row, committed) until a client of `/api/v1/stream` reads
  it: median and max over 20 changes, spaced at random so they do not line up with the stream's poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.engine_ticks import canary
from rheostat.flags.store import FlagStore
from rheostat.gitops.gate import PolicyGate
from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.reactor.alerts import Secrets
from rheostat.reactor.controller import Controller
from rheostat.reactor.settings import Settings
from rheostat.rollout.analysis import Checker
from rheostat.rollout.engine import CANARY, Engine
from rheostat.rollout.types import Phase
from rheostat.rollout.webhooks import HookCaller
from rheostat.server.api import create_app
from rheostat.store import Store

T = TypeVar("T")
N = 200
MARK = "BenchMark"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Ctl:
    """What `create_app` reads of a Controller, over the in-memory fakes."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.settings = Settings(repo=tmp / "repo", data_dir=tmp / "data", listen_port=port)
        self.store = Store(tmp / "state.db")
        self.platform = MemoryPlatform()
        self.hooks = HookCaller()
        metrics = MemoryMetrics({"request-success-rate": 100.0, "request-duration": 50.0})
        checker = Checker(self.hooks, {"builtin": metrics}, lambda a, b: None)
        self.engine = Engine(self.store, MemoryRouter(), self.platform, checker)
        self.flags = FlagStore()
        self.gate = PolicyGate(self.store)
        self.secrets = Secrets(tmp / "secrets")

        async def reconcile_once(*_: Any, **__: Any) -> None:
            return None

        self.gitops = SimpleNamespace(reconcile_once=reconcile_once)  # no GitOps here; /metrics times it
        self.scheduler = SimpleNamespace(kick=lambda key: None)

    def canaries(self) -> list[Canary]:  # as Controller.canaries
        out = []
        for stored in self.store.list_objects(CANARY):
            c = self.engine.canary(ObjectKey(stored.key))
            if c is not None:
                out.append(c)
        return out

    def request_reconcile(self) -> None:
        return None


class Served:
    """The app and the ticker in a thread with its own event loop."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.port = free_port()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.ticks = 0
        self.promotions = 0
        self.ticking = threading.Event()  # cleared: the ticker idles (for the idle figure)
        self.ticking.set()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="dashboard-bench-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        if not self.ready.wait(60) or self.failed is not None:
            raise RuntimeError(f"the bench server did not start: {self.failed!r}")

    def call(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start() or after the run
            self.failed = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        with tempfile.TemporaryDirectory() as tmp:
            ctl = Ctl(Path(tmp), self.port)
            self.ctl = ctl
            keys: list[ObjectKey] = []
            with ctl.store.transaction():
                for i in range(self.n):
                    c = canary(i)
                    ctl.platform.set_revision(object_key("bench", f"app-{i}"), "rev-1")
                    ctl.store.put_object(CANARY, c.metadata.key, c.model_dump(mode="json", exclude_none=True))
                    keys.append(c.metadata.key)
            await asyncio.gather(*(ctl.engine.tick(k) for k in keys))  # initialize
            revision = {k: 1 for k in keys}
            for k in keys:
                revision[k] += 1
                ctl.platform.set_revision(object_key("bench", k.split("/")[1]), f"rev-{revision[k]}")
            app = create_app(cast(Controller, ctl), "bench-token")
            server = uvicorn.Server(
                uvicorn.Config(
                    app,
                    host="127.0.0.1",
                    port=self.port,
                    log_level="warning",
                    access_log=False,
                    lifespan="on",
                )
            )
            server.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
            serving = asyncio.create_task(server.serve(), name="bench-uvicorn")
            ticker = asyncio.create_task(self._tick(ctl, keys, revision), name="bench-ticker")
            try:
                while not server.started:
                    if serving.done():
                        raise RuntimeError("uvicorn did not start")
                    await asyncio.sleep(0.02)
                self.ready.set()
                await self._stop.wait()
            finally:
                ticker.cancel()
                await asyncio.gather(ticker, return_exceptions=True)
                app.state.streams.close()
                app.state.ofrep.close()
                server.should_exit = True
                await asyncio.gather(serving, return_exceptions=True)
                await ctl.engine.close()
                await ctl.hooks.aclose()
                ctl.store.close()

    async def _tick(self, ctl: Ctl, keys: list[ObjectKey], revision: dict[ObjectKey, int]) -> None:
        """Every canary ticked about every 2 s, spread evenly, as a scheduler at a short interval would;
        a promoted one gets a new revision at once, so all 200 stay progressing."""
        pause = 2.0 / len(keys)
        while True:
            for k in keys:
                while not self.ticking.is_set():  # noqa: ASYNC110 (a threading.Event, set from the client's thread)
                    await asyncio.sleep(0.05)
                await ctl.engine.tick(k)
                self.ticks += 1
                if ctl.engine.status(k).phase is Phase.SUCCEEDED:
                    self.promotions += 1
                    revision[k] += 1
                    ctl.platform.set_revision(object_key("bench", k.split("/")[1]), f"rev-{revision[k]}")
                await asyncio.sleep(pause)

    async def mark(self, i: int) -> float:
        """A state change: one event row, committed; the time it was committed."""
        with self.ctl.store.transaction():
            self.ctl.store.add_event(CANARY, "bench/app-0", MARK, f"mark-{i}")
        return time.perf_counter()


def list_latency(served: Served, requests: int = 200, spaced: bool = False) -> tuple[list[float], int, float]:
    """Latencies of `requests` lists, their size, and how long the first (connection) request took."""
    times: list[float] = []
    size = 0
    rnd = random.Random(11)
    with httpx.Client(base_url=served.url, timeout=10) as client:
        t0 = time.perf_counter()
        client.get("/api/v1/canaries").raise_for_status()
        first = time.perf_counter() - t0
        for _ in range(4):  # warm the connection
            client.get("/api/v1/canaries").raise_for_status()
        for _ in range(requests):
            if spaced:
                time.sleep(rnd.uniform(0.5, 1.5))
            t0 = time.perf_counter()
            r = client.get("/api/v1/canaries")
            times.append(time.perf_counter() - t0)
            r.raise_for_status()
            items = r.json()["items"]
            assert len(items) == served.n, len(items)
            size = len(r.content)
    return times, size, first


async def stream_delay(served: Served, changes: int = 20) -> list[float]:
    seen: dict[str, float] = {}
    got = asyncio.Event()

    async def read(client: httpx.AsyncClient, opened: asyncio.Event) -> None:
        async with client.stream("GET", "/api/v1/stream") as r:
            r.raise_for_status()
            opened.set()
            async for line in r.aiter_lines():
                if line.startswith("data: ") and MARK in line:
                    for i in range(changes):
                        if f'"mark-{i}"' in line and f"mark-{i}" not in seen:
                            seen[f"mark-{i}"] = time.perf_counter()
                            got.set()

    delays: list[float] = []
    rnd = random.Random(7)
    async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
        opened = asyncio.Event()
        reader = asyncio.create_task(read(client, opened))
        await asyncio.wait_for(opened.wait(), 10)
        await asyncio.sleep(1.0)  # past the first snapshot of the 200 canaries
        try:
            for i in range(changes):
                got.clear()
                written = await asyncio.wrap_future(served.call(served.mark(i)))
                while f"mark-{i}" not in seen:
                    await asyncio.wait_for(got.wait(), 10)
                    got.clear()
                delays.append(seen[f"mark-{i}"] - written)
                await asyncio.sleep(rnd.uniform(0.2, 0.8))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await reader
    return delays


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(n: int = N) -> dict[str, float]:
    served = Served(n)
    served.start()
    try:
        served.ticking.clear()
        time.sleep(0.5)
        idle, _, first = list_latency(served)
        served.ticking.set()
        ticks0, t0 = served.ticks, time.perf_counter()
        times, size, _ = list_latency(served)
        spaced, _, _ = list_latency(served, 20, spaced=True)
        delays = asyncio.run(stream_delay(served))
        ticks_per_s = (served.ticks - ticks0) / (time.perf_counter() - t0)
    finally:
        served.stop()
    if served.failed is not None:
        raise served.failed
    return {
        "canaries": n,
        "list_bytes": size,
        "idle_p50_ms": statistics.median(idle) * 1000,
        "idle_p99_ms": percentile(idle, 0.99) * 1000,
        "list_p50_ms": statistics.median(times) * 1000,
        "list_p99_ms": percentile(times, 0.99) * 1000,
        "spaced_p50_ms": statistics.median(spaced) * 1000,
        "spaced_max_ms": max(spaced) * 1000,
        "first_ms": first * 1000,
        "stream_median_ms": statistics.median(delays) * 1000,
        "stream_max_ms": max(delays) * 1000,
        "ticks_per_s": ticks_per_s,
        "promotions": served.promotions,
    }


def main() -> dict[str, float]:
    res = run()
    print(
        "| canaries progressing | engine ticks/s meanwhile | GET /api/v1/canaries p50 | p99 (target < 50 ms) "
        "| change to stream client, median | max (target < 1 s) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {res['canaries']:.0f} | {res['ticks_per_s']:.0f} | {res['list_p50_ms']:.1f} ms "
        f"| {res['list_p99_ms']:.1f} ms | {res['stream_median_ms']:.0f} ms | {res['stream_max_ms']:.0f} ms |"
    )
    print(
        f"\nThe same list with the ticker idle: p50 {res['idle_p50_ms']:.1f} ms, p99 {res['idle_p99_ms']:.1f} ms; "
        f"{res['list_bytes'] / 1024:.0f} KiB per response; {res['promotions']:.0f} promotions during the run."
    )
    print(
        f"Lists spaced 0.5 to 1.5 s apart, ticker running: p50 {res['spaced_p50_ms']:.1f} ms, "
        f"max {res['spaced_max_ms']:.1f} ms (20 lists). The first list after start (nothing cached, idle): "
        f"{res['first_ms']:.1f} ms."
    )
    return res


if __name__ == "__main__":
    main()
