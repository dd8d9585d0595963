"""One supervised asyncio task per canary, ticking at its analysis interval, and a watcher beside it.

The watcher feeds the sequential judge's evidence at every scrape while a run is in progress, and ticks the
canary at once when the verdict turns to "fail" (roll back now) or, while promotion waits for evidence (at
every step with `promoteEarly`), to "pass". It runs only while its canary is judged sequentially and a run is
in progress (started and stopped after each tick): a canary at rest, or judged by thresholds, costs nothing
between its ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from rheostat.model.base import ObjectKey
from rheostat.rollout.engine import CANARY, Engine, run_id
from rheostat.rollout.strategy import kicks_at_once
from rheostat.rollout.types import Phase, Verdict
from rheostat.util.errors import describe_error
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        sync_interval_s: float = 1.0,
        on_tick: Callable[[ObjectKey], Awaitable[None]] | None = None,
        watch_interval_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.sync_interval_s = sync_interval_s
        self.watch_interval_s = watch_interval_s
        self.on_tick = on_tick
        self._tasks: dict[ObjectKey, asyncio.Task[None]] = {}
        self._watchers: dict[ObjectKey, asyncio.Task[None]] = {}
        self._wake: dict[ObjectKey, asyncio.Event] = {}

    def sync(self) -> None:
        """Start a task for every canary in the store, stop those of canaries that are gone."""
        keys = {ObjectKey(k) for k in self.engine.store.keys(CANARY)}
        for key in keys - self._tasks.keys():
            self._wake[key] = asyncio.Event()
            self._tasks[key] = supervised(self._loop(key), name=f"canary:{key}")
        for key in self._tasks.keys() - keys:
            self._tasks.pop(key).cancel()
            self._wake.pop(key, None)
            watcher = self._watchers.pop(key, None)
            if watcher is not None:
                watcher.cancel()

    def kick(self, key: ObjectKey | None = None) -> None:
        """Tick now rather than at the end of the interval (a new revision, a manual request)."""
        for k, ev in self._wake.items():
            if key is None or k == key:
                ev.set()

    async def run(self) -> None:
        try:
            while True:
                self.sync()
                await asyncio.sleep(self.sync_interval_s)
        finally:
            await self.stop()

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._watchers.values()]
        self._tasks.clear()
        self._watchers.clear()
        await cancel_all(tasks)

    async def _loop(self, key: ObjectKey) -> None:
        wake = self._wake[key]
        unrecorded: list[str] = []  # failures that could not be written as events (e.g. the disk is full)
        loop = asyncio.get_running_loop()
        while True:
            wake.clear()
            interval = 10.0
            started = loop.time()
            try:
                canary = self.engine.canary(key)
                if canary is not None:
                    interval = canary.spec.the_analysis.interval_s
                await self.engine.tick(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one canary's fault is an event on it, never the end of the others
                detail = describe_error(exc)[:500]
                if (
                    not unrecorded
                ):  # told as its TickFailed event (`rheostat run` prints it); the traceback at -v
                    log.info(
                        "tick of %s failed: %s",
                        key,
                        detail,
                        exc_info=exc,
                        extra={"kind": CANARY, "object": key},
                    )
                unrecorded.append(detail)
            if unrecorded:
                unrecorded = self._record_failures(key, unrecorded)
            with contextlib.suppress(Exception):  # a store fault was recorded above; the watcher can wait
                self._follow_evidence(key)
            if self.on_tick is not None:
                try:
                    await self.on_tick(key)
                except Exception:
                    log.exception("after the tick of %s", key)
            # One tick per interval, as a ticker would: the tick's own time (queries, writes) is not added.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=max(0.0, interval - (loop.time() - started)))

    def _follow_evidence(self, key: ObjectKey) -> None:
        """Start the evidence watcher when a sequentially judged run is in progress; stop it otherwise."""
        monitor = self.engine.checker.sequential
        canary = self.engine.canary(key)
        running = (
            monitor is not None
            and canary is not None
            and canary.spec.the_analysis.judge == "sequential"
            and self.engine.status(key).phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
        )
        watcher = self._watchers.get(key)
        if running and (watcher is None or watcher.done()):
            self._watchers[key] = supervised(self._watch(key), name=f"evidence:{key}")
        elif not running and watcher is not None:
            self._watchers.pop(key).cancel()
            if monitor is not None:
                monitor.forget(key)

    def _record_failures(self, key: ObjectKey, failures: list[str]) -> list[str]:
        """Write the failed ticks as one event; when even that fails, keep them for the next try."""
        message = (
            failures[0] if len(failures) == 1 else f"{len(failures)} ticks failed; the last: {failures[-1]}"
        )
        try:
            with self.engine.store.transaction():
                self.engine.store.add_event(CANARY, key, "TickFailed", message, warning=True)
        except Exception as exc:
            if len(failures) == 1:
                log.error("cannot record the failed tick of %s (%s); retrying every interval", key, exc)
            return failures[-100:]
        return []

    async def _watch(self, key: ObjectKey) -> None:
        monitor = self.engine.checker.sequential
        assert monitor is not None
        last: Verdict | None = None
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                canary = self.engine.canary(key)
                status = self.engine.status(key)
                if (
                    canary is None
                    or canary.spec.the_analysis.judge != "sequential"
                    or status.phase not in (Phase.PROGRESSING, Phase.WAITING_PROMOTION)
                    or status.run_started <= 0  # the canary is not serving this run yet
                ):
                    monitor.forget(key)
                    last = None
                    continue
                verdict = (await monitor.observe(canary, run_id(status))).verdict
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the tick reports a failing source as a failed check; here, just wait
                log.debug("evidence of %s not updated: %s", key, exc)
                continue
            if verdict is not last and kicks_at_once(canary, status, verdict):
                self.kick(key)
            last = verdict
