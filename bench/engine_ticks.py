"""Benchmark: 1,000 canaries progressing at once on the in-memory fakes, one process.

Reports ticks per second and CPU per canary-tick, and what 1,000 canaries at a 10 s interval cost in
share of one core. Each tick is a real engine tick: re-read spec and status from SQLite (a file, WAL),
observe the fakes, step, apply, write status, events and history in one transaction.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.load import parse_object
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.rollout.analysis import Checker
from rheostat.rollout.engine import CANARY, Engine
from rheostat.rollout.webhooks import HookCaller
from rheostat.store import Store


def canary(i: int) -> Canary:
    doc = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": f"app-{i}", "namespace": "bench"},
        "spec": {
            "targetRef": {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": f"app-{i}"},
            "service": {"port": 10000 + i},
            "analysis": {
                "interval": "10s",
                "threshold": 5,
                "stepWeight": 2,
                "maxWeight": 50,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}},
                    {"name": "request-duration", "thresholdRange": {"max": 500}},
                ],
            },
        },
    }
    obj = parse_object(doc)
    assert isinstance(obj, Canary)
    return obj


async def run(n: int = 1000, rounds: int = 10) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "state.db")
        platform = MemoryPlatform()
        metrics = MemoryMetrics({"request-success-rate": 100.0, "request-duration": 50.0})
        hooks = HookCaller()
        engine = Engine(
            store, MemoryRouter(), platform, Checker(hooks, {"builtin": metrics}, lambda a, b: None)
        )
        keys: list[ObjectKey] = []
        with store.transaction():
            for i in range(n):
                c = canary(i)
                platform.set_revision(object_key("bench", f"app-{i}"), "rev-1")
                store.put_object(CANARY, c.metadata.key, c.model_dump(mode="json", exclude_none=True))
                keys.append(c.metadata.key)
        await asyncio.gather(*(engine.tick(k) for k in keys))  # initialize
        for i in range(n):
            platform.set_revision(object_key("bench", f"app-{i}"), "rev-2")
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(engine.tick(k) for k in keys))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        ticks = n * rounds
        phases = {engine.status(k).phase.value for k in keys}
        await engine.close()
        await hooks.aclose()
        store.close()
    per_tick_ms = cpu / ticks * 1000
    return {
        "canaries": n,
        "ticks": ticks,
        "ticks_per_s": ticks / wall,
        "cpu_ms_per_tick": per_tick_ms,
        "core_share_at_10s_interval": n / 10 * per_tick_ms / 1000,
        "phases": len(phases),
    }


def main() -> dict[str, float]:
    res = asyncio.run(run())
    print(
        "| canaries | canary-ticks | ticks/s (one process) | CPU per canary-tick | 1,000 canaries at 10 s |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {res['canaries']} | {res['ticks']} | {res['ticks_per_s']:.0f} | {res['cpu_ms_per_tick']:.3f} ms "
        f"| {res['core_share_at_10s_interval'] * 100:.1f}% of one core |"
    )
    return res


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
