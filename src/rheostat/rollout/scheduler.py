"""One supervised asyncio task per canary, ticking at its analysis interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable

from rheostat.model.base import ObjectKey
from rheostat.rollout.engine import CANARY, Engine
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self,
        engine: Engine,
        *,
        sync_interval_s: float = 1.0,
        on_tick: Callable[[ObjectKey], Awaitable[None]] | None = None,
    ) -> None:
        self.engine = engine
        self.sync_interval_s = sync_interval_s
        self.on_tick = on_tick
        self._tasks: dict[ObjectKey, asyncio.Task[None]] = {}
        self._wake: dict[ObjectKey, asyncio.Event] = {}

    def sync(self) -> None:
        """Start a task for every canary in the store, stop those of canaries that are gone."""
        keys = {ObjectKey(o.key) for o in self.engine.store.list_objects(CANARY)}
        for key in keys - self._tasks.keys():
            self._wake[key] = asyncio.Event()
            self._tasks[key] = supervised(self._loop(key), name=f"canary:{key}")
        for key in self._tasks.keys() - keys:
            self._tasks.pop(key).cancel()
            self._wake.pop(key, None)

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
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await cancel_all(tasks)

    async def _loop(self, key: ObjectKey) -> None:
        wake = self._wake[key]
        while True:
            wake.clear()
            interval = 10.0
            try:
                canary = self.engine.canary(key)
                if canary is not None:
                    interval = canary.spec.the_analysis.interval_s
                await self.engine.tick(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one canary's fault is an event on it, never the end of the others
                log.warning("tick of %s failed", key, exc_info=True)
                detail = "".join(traceback.format_exception_only(exc)).strip()
                with self.engine.store.transaction():
                    self.engine.store.add_event(CANARY, key, "TickFailed", detail[:500], warning=True)
            if self.on_tick is not None:
                await self.on_tick(key)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
