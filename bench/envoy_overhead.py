"""What one Envoy hop costs, and how fast a new split is live.

Runs a Python backend (a subprocess), drives it directly and through an EnvoyRouter listener with the
same keep-alive load for a fixed time each, then times set_routes() until Envoy confirms the new split.
Loopback only. `python bench/envoy_overhead.py` prints a markdown table; main() returns the figures.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.envoy_backend

from tests.envoy_backend import Backend, KeepAliveClient
from tests.servers import free_port as _free_port

from rheostat.model.base import ObjectKey
from rheostat.plugins.routers.base import Routes, ServiceRoute, Upstream
from rheostat.plugins.routers.envoy import EnvoyRouter

KEY = ObjectKey("bench/app")


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _load(port: int, duration_s: float, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors
        client = KeepAliveClient(port)
        try:
            while (started := time.perf_counter()) < deadline:
                try:
                    status, _ = await client.get("/")
                except OSError:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                errors += status != 200
        finally:
            await client.aclose()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
    }


async def _propagation(router: EnvoyRouter, port: int, changes: int) -> dict[str, float]:
    """set_routes() returns once Envoy reports the new version; check each flip with a request too."""
    timings: list[float] = []
    client = KeepAliveClient(port)
    try:
        for i in range(changes):
            to_canary = i % 2 == 0
            routes = Routes(primary=0, canary=100) if to_canary else Routes(primary=100, canary=0)
            started = time.perf_counter()
            await router.set_routes(KEY, routes)
            timings.append((time.perf_counter() - started) * 1000)
            _, body = await client.get("/")
            if body != (b"canary" if to_canary else b"primary"):
                raise RuntimeError(f"change {i} not live after set_routes returned: got {body!r}")
    finally:
        await client.aclose()
    return {"median_ms": statistics.median(timings), "max_ms": max(timings), "changes": changes}


async def run(duration_s: float = 10.0, concurrency: int = 8, changes: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rheostat-bench-") as tmp:
        router = EnvoyRouter(Path(tmp))
        await router.start()
        try:
            async with Backend("primary") as primary, Backend("canary") as canary:
                port = _free_port()
                await router.reconcile(
                    ServiceRoute(
                        KEY,
                        port,
                        (Upstream("127.0.0.1", primary.port),),
                        (Upstream("127.0.0.1", canary.port),),
                    )
                )
                await _load(primary.port, 1.0, concurrency)  # warm up both paths
                await _load(port, 1.0, concurrency)
                direct = await _load(primary.port, duration_s, concurrency)
                envoy = await _load(port, duration_s, concurrency)
                # One request at a time: the latency a hop adds, without the load generator queueing.
                direct1 = await _load(primary.port, duration_s / 2, 1)
                envoy1 = await _load(port, duration_s / 2, 1)
                propagation = await _propagation(router, port, changes)
        finally:
            await router.stop()
    ratio = {k: envoy[k] / direct[k] for k in ("rps", "p50_ms", "p99_ms")}
    return {
        "direct": direct,
        "envoy": envoy,
        "ratio": ratio,
        "set_routes": propagation,
        "direct_c1": direct1,
        "envoy_c1": envoy1,
        "added_p50_ms_c1": envoy1["p50_ms"] - direct1["p50_ms"],
    }


def render(result: dict[str, Any]) -> str:
    d, e, r, p = result["direct"], result["envoy"], result["ratio"], result["set_routes"]
    lines = [
        "| path | requests | errors | req/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|",
        f"| direct | {d['requests']} | {d['errors']} | {d['rps']:,.0f} | {d['p50_ms']:.3f} | {d['p99_ms']:.3f} |",
        f"| via Envoy | {e['requests']} | {e['errors']} | {e['rps']:,.0f} | {e['p50_ms']:.3f} | {e['p99_ms']:.3f} |",
        f"| Envoy / direct | | | {r['rps']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |",
        "",
        "| one request at a time | requests | p50 ms | p99 ms |",
        "|---|---|---|---|",
        f"| direct | {result['direct_c1']['requests']} | {result['direct_c1']['p50_ms']:.3f} | "
        f"{result['direct_c1']['p99_ms']:.3f} |",
        f"| via Envoy | {result['envoy_c1']['requests']} | {result['envoy_c1']['p50_ms']:.3f} | "
        f"{result['envoy_c1']['p99_ms']:.3f} |",
        f"| added by the hop (p50) | | {result['added_p50_ms_c1']:.3f} | |",
        "",
        "| set_routes() until Envoy confirms | median ms | max ms |",
        "|---|---|---|",
        f"| {p['changes']} changes | {p['median_ms']:.2f} | {p['max_ms']:.2f} |",
    ]
    return "\n".join(lines)


def main() -> dict[str, Any]:
    result = asyncio.run(run())
    print(render(result))
    return result


if __name__ == "__main__":
    main()
