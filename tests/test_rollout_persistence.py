"""State lives in SQLite: a crash at any point resumes where it stood; nothing promoted twice."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.platforms.base import Group
from rheostat.plugins.routers.base import Routes
from rheostat.rollout.engine import Engine
from rheostat.rollout.scheduler import Scheduler
from rheostat.rollout.types import Phase
from rheostat.store import Store
from tests.harness import Harness, canary_yaml

ANALYSIS = """
interval: 10s
threshold: 2
stepWeight: 25
maxWeight: 50
metrics: [{name: request-success-rate, thresholdRange: {min: 99}}]
"""


class Crash(Exception):
    pass


class Fuse:
    """Blows at the n-th mutating call it sees, once."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.count = 0

    def hit(self) -> None:
        self.count += 1
        if self.count == self.at:
            raise Crash(f"crash at operation {self.at}")


def wire(h: Harness, fuse: Fuse) -> None:
    """Put the fuse in front of every write the engine makes: routes, scaling, promotion, the commit."""
    router, platform, store = h.router, h.platform, h.store
    set_routes, scale, promote, put_status = (
        router.set_routes,
        platform.scale,
        platform.promote,
        store.put_status,
    )

    async def set_routes_(key: ObjectKey, routes: Routes) -> None:
        fuse.hit()
        await set_routes(key, routes)

    async def scale_(target: ObjectKey, group: Group, n: int | None) -> None:
        fuse.hit()
        await scale(target, group, n)

    async def promote_(target: ObjectKey, revision: str) -> None:
        fuse.hit()
        await promote(target, revision)

    def put_status_(key: str, body: dict[str, Any]) -> None:
        fuse.hit()
        put_status(key, body)

    router.set_routes = set_routes_  # type: ignore[method-assign]
    platform.scale = scale_  # type: ignore[method-assign,assignment]
    platform.promote = promote_  # type: ignore[method-assign]
    store.put_status = put_status_  # type: ignore[method-assign]


async def drive(h: Harness, ticks: int) -> None:
    """Tick; on a crash, start a new engine on the same database file, as a restarted process would."""
    for _ in range(ticks):
        try:
            await h.tick()
        except Crash:
            h.engine = Engine(h.store, h.router, h.platform, h.checker, clock=h.clock.now)
        if h.state().phase in (Phase.SUCCEEDED, Phase.FAILED):
            return


@pytest.mark.parametrize("at", range(1, 16))
async def test_crash_anywhere_in_a_good_run_promotes_exactly_once(tmp_path: Path, at: int) -> None:
    h = Harness(canary_yaml(ANALYSIS), store=Store(tmp_path / "state.db"))
    await h.initialized()
    wire(h, Fuse(at))
    await drive(h, 20)
    assert h.state().phase is Phase.SUCCEEDED
    assert h.platform.workloads[h.target].promotions == 1
    assert h.weights == (100, 0)
    assert h.platform.workloads[h.target].scale[Group.CANARY] == 0
    h.store.close()


@pytest.mark.parametrize("at", range(1, 10))
async def test_crash_anywhere_in_a_bad_run_leaves_no_traffic_on_the_canary(tmp_path: Path, at: int) -> None:
    h = Harness(canary_yaml(ANALYSIS), store=Store(tmp_path / "state.db"))
    await h.initialized()
    h.metrics.values["request-success-rate"] = 50.0
    wire(h, Fuse(at))
    await drive(h, 20)
    assert h.state().phase is Phase.FAILED
    assert h.weights == (100, 0)
    assert h.platform.workloads[h.target].promotions == 0
    assert h.platform.workloads[h.target].scale[Group.CANARY] == 0
    h.store.close()


async def test_status_events_and_history_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    h = Harness(canary_yaml(ANALYSIS), store=Store(db))
    await h.initialized()
    await h.run(3)
    before = h.state()
    h.store.close()
    reopened = Store(db)
    h2 = Harness(canary_yaml(ANALYSIS), store=reopened)
    assert h2.state() == before
    assert [e.reason for e in reopened.events(key=h.key)][:2] == ["Initialized", "NewRevision"]
    assert [r.body["canaryWeight"] for r in reopened.history(h.key)] == [0, 0, 25, 50]
    reopened.close()


async def test_one_canary_crashing_never_stops_the_others() -> None:
    good = Harness(canary_yaml(ANALYSIS.replace("10s", "100ms")))
    base = canary_yaml(ANALYSIS.replace("10s", "100ms"))
    spec = base.spec.model_copy(
        update={"targetRef": base.spec.targetRef.model_copy(update={"name": "ghost"})}
    )
    other = base.model_copy(
        update={"metadata": base.metadata.model_copy(update={"name": "broken"}), "spec": spec}
    )
    # "broken" targets a workload the platform does not have: every tick of it raises.
    with good.store.transaction():
        good.store.put_object(
            "Canary", other.metadata.key, other.model_dump(mode="json", exclude_none=True), "t"
        )
    good.engine.clock = time.time  # the scheduler ticks in real time, so metric windows grow
    sched = Scheduler(good.engine, sync_interval_s=0.05)
    task = asyncio.create_task(sched.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if good.state().phase is Phase.INITIALIZED:
                break
        good.platform.set_revision(good.target, "rev-2")
        sched.kick()
        for _ in range(200):
            await asyncio.sleep(0.02)
            if good.state().phase is Phase.SUCCEEDED:
                break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert good.state().phase is Phase.SUCCEEDED
    failures = [e for e in good.store.events(key=other.metadata.key) if e.reason == "TickFailed"]
    assert failures and "not found" in failures[0].message
