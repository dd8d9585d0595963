"""One tick of one canary: read, observe, step (pure), apply, persist in one transaction, notify."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, parse_object
from rheostat.model.metric_template import MetricTemplate
from rheostat.plugins.platforms.base import Group, Platform
from rheostat.plugins.routers.base import Router, Routes, ServiceRoute
from rheostat.rollout.analysis import Checker, RunWindow
from rheostat.rollout.backends import Backends, Unavailable, embedded
from rheostat.rollout.strategy import next_step
from rheostat.rollout.types import (
    RUNNING,
    ActionKind,
    CanaryStatus,
    Check,
    CheckOutcome,
    Decision,
    Event,
    Manual,
    NeedCheck,
    Observations,
    Outcome,
    Phase,
)
from rheostat.rollout.webhooks import event_payload
from rheostat.store.port import State
from rheostat.util.durations import parse_duration

log = logging.getLogger(__name__)
CANARY = "Canary"
KEEP_ROWS = 10_000  # history rows and events kept per canary
PRUNE_EVERY = 100  # ticks
AlertSink = Callable[[Canary, Event, CanaryStatus], Coroutine[Any, Any, None]]


class TickError(Exception):
    """A tick could not finish; nothing of it was recorded as done, and the next tick tries again."""


def target_of(canary: Canary) -> ObjectKey:
    """What the platform acts on: a Workload's key, or for a flag target the flag's key (unique in a store)."""
    if canary.spec.flag is not None:
        return ObjectKey(canary.spec.flag.key)
    return object_key(canary.metadata.namespace, canary.spec.targetRef.name)


def checksum(status: CanaryStatus) -> str:
    return hashlib.sha256(status.last_applied_spec.encode()).hexdigest()[:16]


def run_window(status: CanaryStatus, obs: Observations) -> RunWindow:
    """The run being judged. A run whose canary is first seen ready in this tick starts now (as the step
    records it); the id changes with every run, even of the same revision, so no evidence carries over."""
    started = status.run_started
    if started <= 0 and obs.canary.ready:
        started = obs.now
    return RunWindow(run_id(status, started), started, obs.now)


def run_ended(before: CanaryStatus, after: CanaryStatus) -> bool:
    """A run came to rest, or another revision's run replaced it."""
    if before.phase not in RUNNING:
        return False
    return after.phase not in RUNNING or after.last_applied_spec != before.last_applied_spec


def run_id(status: CanaryStatus, started: float | None = None) -> str:
    return f"{checksum(status)}@{status.run_started if started is None else started:.3f}"


@dataclass(frozen=True)
class TickResult:
    decision: Decision
    observations: Observations


class Engine:
    def __init__(
        self,
        store: State,
        router: Router | None,
        platform: Platform | None,
        checker: Checker,
        *,
        alerts: AlertSink | None = None,
        clock: Callable[[], float] = time.time,
        flags: tuple[Router, Platform] | None = None,
        backends: Backends | None = None,
    ) -> None:
        self.store = store
        # Which router and platform each Canary uses (spec.provider, targetRef.kind). Without `backends`: the
        # embedded default, `router` for Workloads and `flags` (a router/platform pair) for flag targets.
        if backends is None:
            if router is None or platform is None:
                raise ValueError("an Engine needs backends, or a router and a platform")
            backends = embedded(router, platform, flags)
        self.backends = backends
        self.checker = checker
        self.alerts = alerts
        self.clock = clock
        self.counters: dict[tuple[str, str], int] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._parsed: dict[str, tuple[str, Canary]] = {}  # key -> (stored text, parsed): Canary is frozen
        self._asked: dict[ObjectKey, asyncio.Event] = {}  # set by a manual request during that canary's tick
        # Called when a run ends or gives way to another (its load tests must stop: see server/loadtester.py).
        self.on_run_end: Callable[[Canary], None] | None = None

    # -- reading ---------------------------------------------------------------------------------------

    def canary(self, key: ObjectKey) -> Canary | None:
        """The Canary as stored now (re-read every tick); parsed once per stored version."""
        row = self.store.get_object_text(CANARY, key)
        if row is None:
            self._parsed.pop(key, None)
            return None
        text, source = row
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == text:
            return cached[1]
        obj = parse_object(json.loads(text), source or "store")
        if not isinstance(obj, Canary):
            raise ManifestError(source, key, [])
        self._parsed[key] = (text, obj)
        return obj

    def template(self, namespace: str, name: str) -> MetricTemplate | None:
        stored = self.store.get_object("MetricTemplate", f"{namespace}/{name}")
        if stored is None:
            return None
        obj = parse_object(stored.body, stored.source or "store")
        return obj if isinstance(obj, MetricTemplate) else None

    def status(self, key: ObjectKey) -> CanaryStatus:
        raw = self.store.get_status(key)
        return CanaryStatus() if raw is None else CanaryStatus.from_json(raw)

    def manual(self, key: ObjectKey) -> Manual:
        raw = self.store.get_manual(key)
        return Manual(**{k: bool(v) for k, v in raw.items() if k in Manual.__dataclass_fields__})

    # -- the tick --------------------------------------------------------------------------------------

    def parts(self, canary: Canary) -> tuple[Router, Platform]:
        """The router (`spec.provider`) and platform (`targetRef.kind`) of a Canary."""
        try:
            return self.backends.parts(canary)
        except Unavailable as exc:
            raise TickError(f"Canary {canary.metadata.key}: {exc}") from None

    async def service_route(self, canary: Canary) -> ServiceRoute:
        target = target_of(canary)
        _, platform = self.parts(canary)
        service = canary.spec.service
        affinity = canary.spec.the_analysis.sessionAffinity
        return ServiceRoute(
            key=canary.metadata.key,
            port=service.port if service is not None else 0,
            primary=await platform.endpoints(target, Group.PRIMARY),
            canary=await platform.endpoints(target, Group.CANARY),
            timeout_s=parse_duration(service.timeout) if service is not None and service.timeout else None,
            retries=service.retries if service is not None else None,
            target=target,
            service=service,
            primary_cookie=affinity.primaryCookieName if affinity is not None else None,
            revert_on_deletion=canary.spec.revertOnDeletion,
            ingress=canary.spec.ingressRef.name if canary.spec.ingressRef is not None else None,
        )

    async def observe(self, canary: Canary, status: CanaryStatus) -> Observations:
        target = target_of(canary)
        router, platform = self.parts(canary)
        await platform.bind(canary)
        await platform.ensure_primary(target)
        await router.reconcile(await self.service_route(canary))
        return Observations(
            now=self.clock(),
            revision=await platform.revision(target),
            primary_revision=await platform.primary_revision(target),
            primary=await platform.is_ready(target, Group.PRIMARY),
            canary=await platform.is_ready(target, Group.CANARY),
            routes=await router.get_routes(canary.metadata.key),
            manual=self.manual(canary.metadata.key),
        )

    async def tick(self, key: ObjectKey) -> TickResult | None:
        asked = self._asked[key] = asyncio.Event()
        canary = self.canary(key)
        if canary is None or canary.spec.suspend or self.manual(key).paused:
            return None
        status = self.status(key)
        obs = await self.observe(canary, status)
        step = next_step(canary, status, obs)
        interrupted: asyncio.Event | None = asked
        for _ in range(len(Check) + 1):
            if not isinstance(step, NeedCheck):
                break
            outcome = await self._check(canary, step.check, status, obs, interrupted)
            if outcome is None:  # a manual request came in while checking: it is served now, not later
                interrupted = None  # once per tick, so a stream of requests cannot starve it
                obs = replace(obs, manual=self.manual(key))
                if obs.manual.paused:
                    return None
            else:
                obs = obs.with_check(step.check, outcome)
            step = next_step(canary, status, obs)
        if isinstance(step, NeedCheck):
            raise TickError(f"the step kept asking for checks ({step.check})")
        await self.apply(canary, step)
        try:
            self.record(canary, step, obs)
        except Exception:
            await self.hold_safe_routes(canary, step, obs)
            raise
        self.notify(canary, step)
        if self.on_run_end is not None and run_ended(status, step.status):
            self.on_run_end(canary)
        return TickResult(step, obs)

    async def _check(
        self,
        canary: Canary,
        check: Check,
        status: CanaryStatus,
        obs: Observations,
        asked: asyncio.Event | None,
    ) -> CheckOutcome | None:
        """The outcome of one group of checks, or None if `asked` was set first (the check is cancelled)."""
        work = asyncio.ensure_future(
            self.checker.run(canary, check, status.phase.value, checksum(status), run_window(status, obs))
        )
        if asked is None:
            return await work
        waiter = asyncio.ensure_future(asked.wait())
        try:
            await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if work.done():
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return None

    async def hold_safe_routes(self, canary: Canary, d: Decision, obs: Observations) -> None:
        """The tick could not be recorded (e.g. the disk is full): never keep more canary traffic than the
        recorded state had, so a decision that is not on disk cannot expose users to more of the canary."""
        if d.routes is None or d.routes.canary <= obs.routes.canary:
            return
        router, _ = self.parts(canary)
        try:
            await router.set_routes(canary.metadata.key, obs.routes)
        except Exception:
            log.exception("could not set the routes of %s back", canary.metadata.key)

    async def apply(self, canary: Canary, d: Decision) -> None:
        target = target_of(canary)
        router, platform = self.parts(canary)
        if d.routes is not None:
            await router.set_routes(canary.metadata.key, d.routes)
        for action in d.actions:
            if action is ActionKind.SCALE_UP:
                await platform.scale(target, Group.CANARY, None)
            elif action is ActionKind.SCALE_DOWN:
                await platform.scale(target, Group.CANARY, 0)
            elif action is ActionKind.PROMOTE:
                await platform.promote(target, d.status.last_applied_spec)
            elif action is ActionKind.POST_ROLLOUT:
                self.spawn(self._post_rollout(canary, d.status))

    async def _post_rollout(self, canary: Canary, status: CanaryStatus) -> None:
        out = await self.checker.run_hooks(canary, "post-rollout", status.phase.value, checksum(status))
        if not out.ok:
            with self.store.transaction():
                self.store.add_event(CANARY, canary.metadata.key, "PostRolloutFailed", out.message, True)

    def record(self, canary: Canary, d: Decision, obs: Observations) -> None:
        key = canary.metadata.key
        now = obs.now
        analysis = obs.checks.get(Check.ANALYSIS)
        routes = d.routes or obs.routes
        with self.store.transaction():
            self.store.put_status(key, d.status.to_json())
            for e in d.events:
                self.store.add_event(CANARY, key, e.reason, e.message, e.warning, ts=now)
            if d.clear_manual:
                current = self.store.get_manual(key)
                self.store.put_manual(key, {k: v for k, v in current.items() if k not in d.clear_manual})
            if d.events or d.routes is not None or analysis is not None or d.outcome is not None:
                metrics = analysis.metrics if analysis else ()
                self.store.add_history(key, history_row(d.status, routes, metrics), now)
            if d.status.tick % PRUNE_EVERY == 0:
                self.store.prune(CANARY, key, KEEP_ROWS)
        if d.outcome is not None:
            k = (key, d.outcome.value)
            self.counters[k] = self.counters.get(k, 0) + 1

    def notify(self, canary: Canary, d: Decision) -> None:
        hooks = [h for h in canary.spec.the_analysis.webhooks if h.kind == "event"]
        for e in d.events:
            for hook in hooks:
                body = event_payload(
                    canary, d.status.phase.value, checksum(d.status), hook, e.message, e.warning
                )
                self.spawn(self._event_hook(hook, body))
            if e.alert is not None and self.alerts is not None:
                self.spawn(self.alerts(canary, e, d.status))

    async def _event_hook(self, hook: Any, body: dict[str, Any]) -> None:
        await self.checker.hooks.call(hook, body)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Fire-and-forget work (alerts, event hooks) that must never block or break a tick."""
        task = asyncio.get_running_loop().create_task(_quietly(coro), name="rheostat-side-effect")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for side effects in flight; used at shutdown and by tests."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- manual requests -------------------------------------------------------------------------------

    def request(self, key: ObjectKey, **changes: bool) -> Manual:
        with self.store.transaction():
            current = self.store.get_manual(key)
            current.update(changes)
            self.store.put_manual(key, current)
            what = ", ".join(f"{k}={v}" for k, v in changes.items())
            self.store.add_event(CANARY, key, "ManualRequest", f"requested by hand: {what}")
        asked = self._asked.get(key)
        if asked is not None:
            asked.set()
        return self.manual(key)

    async def close(self) -> None:
        await self.drain()


async def _quietly(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except Exception:  # a failing notifier or event hook never stops a rollout
        log.warning("side effect failed", exc_info=True)


def history_row(status: CanaryStatus, routes: Routes, metrics: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "tick": status.tick,
        "phase": status.phase.value,
        "primaryWeight": routes.primary,
        "canaryWeight": routes.canary,
        "mirror": routes.mirror,
        "failedChecks": status.failed_checks,
        "iterations": status.iterations,
        "message": status.message,
        "metrics": [
            {
                "name": m.name,
                "value": m.value,
                "primaryValue": m.primary,
                "min": m.min,
                "max": m.max,
                "ok": m.ok,
                "message": m.message,
            }
            for m in metrics
        ],
    }


__all__ = ["CANARY", "Engine", "Outcome", "Phase", "TickError", "TickResult", "target_of"]
