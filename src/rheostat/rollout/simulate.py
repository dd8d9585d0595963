"""`rheostat simulate`: the engine on in-memory fakes, to see what a Canary will do before committing it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, get_args

from rheostat.model.canary import Canary, Metric, Provider, TargetRef, Webhook
from rheostat.model.metric_template import MetricTemplate, ProviderType
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.rollout.analysis import Checker
from rheostat.rollout.backends import Backends, Catalogue
from rheostat.rollout.engine import CANARY, Engine, target_of
from rheostat.rollout.judges import bounds
from rheostat.rollout.types import AT_REST, Phase
from rheostat.rollout.webhooks import HookResult
from rheostat.store import Store


def _everything(router: MemoryRouter, platform: MemoryPlatform) -> Backends:
    """Every provider and target kind on the same fakes: a simulation shows the analysis, wherever it runs."""
    kinds = frozenset(get_args(TargetRef.model_fields["kind"].annotation))
    providers = get_args(Provider)
    catalogue = Catalogue({p: kinds for p in providers}, dict.fromkeys(kinds, "nop"), "in the simulation")
    return Backends(catalogue, dict.fromkeys(providers, router), dict.fromkeys(kinds, platform))


@dataclass(frozen=True)
class Row:
    tick: int
    time_s: float
    phase: str
    primary: int
    canary: int
    mirror: bool
    failed_checks: int
    iterations: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "tick": self.tick,
            "time": self.time_s,
            "phase": self.phase,
            "primaryWeight": self.primary,
            "canaryWeight": self.canary,
            "mirror": self.mirror,
            "failedChecks": self.failed_checks,
            "iterations": self.iterations,
            "message": self.message,
        }


@dataclass(frozen=True)
class Simulation:
    rows: list[Row]
    interval_s: float
    outcome: str  # the phase the run ended in

    @property
    def time_to_end_s(self) -> float:
        return self.rows[-1].time_s if self.rows else 0.0


class _PassingHooks:
    """Every gate and hook answers 2xx, except rollback hooks, which would ask for a rollback."""

    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult:
        ok = hook.kind != "rollback"
        return HookResult(hook.name, ok, 200 if ok else 403, "" if ok else "closed")


def _value(metric: Metric, passing: bool) -> float | None:
    lo, hi = bounds(metric)
    if passing:
        return lo if lo is not None else (hi if hi is not None else 0.0)
    if lo is not None:
        return lo - 1
    return hi + 1 if hi is not None else None


def _any_template(namespace: str, name: str) -> MetricTemplate:
    """Every referenced template exists in a simulation; its values come from the simulated source."""
    return MetricTemplate.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"provider": {"type": "prometheus"}, "query": "simulated"},
        }
    )


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t


async def simulate(canary: Canary, *, ticks: int = 200, fail_from: int | None = None) -> Simulation:
    """Initialize on revision 1, then roll out revision 2 tick by tick until it settles or `ticks` run out.

    Tick 1 is the tick that notices the new revision. Metrics pass, or fail from tick `fail_from` on.
    """
    metrics_by_name = {m.name: m for m in canary.spec.the_analysis.metrics}
    current = {"tick": 0}

    def source(q: MetricQuery) -> float | None:
        passing = fail_from is None or current["tick"] < fail_from
        metric = metrics_by_name.get(q.name)
        return None if metric is None else _value(metric, passing)

    provider = MemoryMetrics(source=source)
    store = Store(":memory:")
    clock = _Clock()
    platform = MemoryPlatform(clock)
    router = MemoryRouter()
    target = target_of(canary)  # a flag Canary's target is its flag key, on the same fakes
    platform.set_revision(target, "revision-1")
    store.put_object(
        CANARY, canary.metadata.key, canary.model_dump(mode="json", exclude_none=True), "simulate"
    )
    providers: dict[str, MetricProvider] = {kind: provider for kind in get_args(ProviderType)}
    checker = Checker(_PassingHooks(), providers, _any_template)
    engine = Engine(store, router, platform, checker, clock=clock.now, backends=_everything(router, platform))
    interval = canary.spec.the_analysis.interval_s
    rows: list[Row] = []
    try:
        await engine.tick(canary.metadata.key)  # first install: initialize, no analysis
        platform.set_revision(target, "revision-2")
        for n in range(1, ticks + 1):
            current["tick"] = n
            clock.t = (n - 1) * interval
            result = await engine.tick(canary.metadata.key)
            if result is None:
                break
            st = result.decision.status
            routes = result.decision.routes or result.observations.routes
            rows.append(
                Row(
                    n,
                    clock.t,
                    st.phase.value,
                    routes.primary,
                    routes.canary,
                    routes.mirror,
                    st.failed_checks,
                    st.iterations,
                    st.message,
                )
            )
            if st.phase in AT_REST and n > 1:
                break
        await engine.close()
    finally:
        store.close()
    outcome = rows[-1].phase if rows else Phase.INITIALIZED.value
    return Simulation(rows, interval, outcome)


def shortest_promotion_s(sim: Simulation) -> float:
    """Time from the tick that notices a revision to the one that reports Succeeded, if it got there."""
    if sim.outcome != Phase.SUCCEEDED.value:
        return math.inf
    return sim.time_to_end_s
