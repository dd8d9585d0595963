"""Faults around the tick: a check that hangs, a store that cannot be written. Never stuck, always said."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

from rheostat.model.canary import Webhook
from rheostat.rollout.scheduler import Scheduler
from rheostat.rollout.types import Phase
from rheostat.rollout.webhooks import HookResult
from rheostat.store import Store
from tests.harness import FakeHooks, Harness, canary_yaml

ANALYSIS = """
interval: 10s
threshold: 2
stepWeight: 25
maxWeight: 50
webhooks:
- {name: load, url: "http://load/"}
metrics:
- {name: request-success-rate, thresholdRange: {min: 99}, interval: 10s}
"""


class HangingHooks(FakeHooks):
    """The `load` hook never answers while `hang` is set (a webhook that trickles its body forever)."""

    def __init__(self) -> None:
        super().__init__()
        self.hang = False
        self.entered = asyncio.Event()
        self.cancelled = 0

    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult:
        if self.hang and hook.name == "load":
            self.entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return await super().call(hook, body)


def hanging_harness() -> tuple[Harness, HangingHooks]:
    h = Harness(canary_yaml(ANALYSIS))
    hooks = HangingHooks()
    h.hooks = hooks
    h.checker.hooks = hooks
    return h, hooks


async def test_abort_is_served_while_a_check_hangs() -> None:
    h, hooks = hanging_harness()
    await h.initialized()
    await h.run(2)
    assert h.weights == (75, 25)
    hooks.hang = True
    tick = asyncio.create_task(h.tick())
    await asyncio.wait_for(hooks.entered.wait(), 5)
    h.engine.request(h.key, rollback=True)  # what `rheostat abort` does
    await asyncio.wait_for(tick, 5)  # served now, not after the hook's timeout
    assert h.state().phase is Phase.FAILED and h.weights == (100, 0)
    assert hooks.cancelled == 1
    assert "rollback requested by hand" in h.state().message


async def test_pause_is_served_while_a_check_hangs_and_nothing_is_recorded() -> None:
    h, hooks = hanging_harness()
    await h.initialized()
    await h.run(3)
    before = h.state()
    hooks.hang = True
    tick = asyncio.create_task(h.engine.tick(h.key))
    await asyncio.wait_for(hooks.entered.wait(), 5)
    h.engine.request(h.key, paused=True)
    assert await asyncio.wait_for(tick, 5) is None
    assert h.state() == before


def fill(store: Store) -> None:
    """Make the database full, as a full disk does: SQLite answers SQLITE_FULL to every write."""
    db = store._db
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0] + 8}")
    for size in (3000, 300, 1):  # big rows fill the pages, small ones the room left inside them
        for _ in range(10_000):
            try:
                store.add_event("Filler", "x/y", "Filler", "x" * size)
            except sqlite3.OperationalError as exc:
                full = "full" in str(exc)
                break
        else:
            raise AssertionError("the store never became full")
        assert full


async def test_a_full_disk_never_kills_the_task_never_adds_canary_traffic_and_is_said(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    h = Harness(canary_yaml(ANALYSIS.replace("10s", "100ms")), store=store)
    h.engine.clock = time.time
    sched = Scheduler(h.engine, sync_interval_s=0.05)
    task = asyncio.create_task(sched.run())
    try:
        await wait_for(lambda: h.state().phase is Phase.INITIALIZED)
        h.platform.set_revision(h.target, "rev-2")
        sched.kick()
        await wait_for(lambda: h.state().canary_weight == 25)
        recorded = h.state()
        fill(store)
        await asyncio.sleep(1.0)  # several intervals: each tick fails to record
        assert h.state() == recorded  # nothing half-recorded
        assert h.weights[1] <= recorded.canary_weight  # traffic never moved on without a record
        h.platform.set_revision(h.target, "rev-3")  # a commit while the disk is full
        sched.kick()
        await asyncio.sleep(0.5)
        assert h.weights == (100, 0)  # the new, unanalysed revision gets no traffic
        assert not task.done()
        store._db.execute("PRAGMA max_page_count = 1073741823")  # space again
        await wait_for(lambda: h.state().last_applied_spec == "rev-3")
        failed = [e for e in store.events(key=h.key) if e.reason == "TickFailed"]
        assert failed and "full" in failed[-1].message and "ticks failed" in failed[-1].message
        await wait_for(lambda: h.state().phase is Phase.SUCCEEDED, within=20)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()


async def wait_for(what: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
