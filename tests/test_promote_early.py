"""`analysis.promoteEarly`: the sequential judge's anytime-valid "not worse" skips the remaining steps.

The field and its validation, the state machine tick by tick (pure, then the engine on the in-memory fakes with
hooks and gates), the watcher's rule, and the harness's targets on a few seeds (`make bench` runs 500).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench.analysis_harness import GRID, Summary, measure

from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, parse_object
from rheostat.plugins.metrics.base import Counts, GroupCounts
from rheostat.plugins.platforms.base import Readiness
from rheostat.plugins.routers.base import Routes
from rheostat.rollout.analysis import Monitor
from rheostat.rollout.strategy import WAITING_EVIDENCE, kicks_at_once, next_step
from rheostat.rollout.types import (
    CanaryStatus,
    Check,
    CheckOutcome,
    Decision,
    Manual,
    NeedCheck,
    Observations,
    Phase,
    Verdict,
)
from tests.harness import Harness, canary_yaml
from tests.rig import Rig, Traffic, workload
from tests.rig import canary as canary_doc

EVIDENCE = "sequential judge: the canary is not worse than the primary: errors: canary 10/1000 5xx, ..."


def canary(analysis: dict[str, object]) -> Canary:
    obj = parse_object(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "web", "namespace": "t"},
            "spec": {
                "targetRef": {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": "web"},
                "service": {"port": 8080},
                "analysis": {"interval": "1m", "threshold": 5, **analysis},
            },
        },
        "repo/web.yaml",
    )
    assert isinstance(obj, Canary)
    return obj


WEIGHTED: dict[str, object] = {"stepWeight": 10, "maxWeight": 50, "judge": "sequential", "promoteEarly": True}


# -- the field ----------------------------------------------------------------------------------------


def test_promote_early_needs_the_sequential_judge_and_says_so_on_the_field() -> None:
    assert canary(WEIGHTED).spec.the_analysis.promoteEarly
    assert not canary({"stepWeight": 10, "judge": "sequential"}).spec.the_analysis.promoteEarly
    wrong: list[dict[str, object]] = [
        {"stepWeight": 10, "promoteEarly": True},
        {**WEIGHTED, "judge": "threshold"},
    ]
    for analysis in wrong:
        with pytest.raises(ManifestError) as info:
            canary(analysis)
        [error] = info.value.errors
        assert error.path == "spec.analysis.promoteEarly"
        assert "needs judge: sequential" in error.message and "threshold" in error.message
    assert canary({"stepWeight": 10, "promoteEarly": False}).spec.the_analysis.judge == "threshold"


# -- the state machine, one tick at a time --------------------------------------------------------------


def tick(
    c: Canary,
    outcome: CheckOutcome,
    weight: int = 10,
    *,
    phase: Phase = Phase.PROGRESSING,
    iterations: int = 0,
    manual: Manual | None = None,
    promotion_gate: bool | None = None,
) -> Decision | NeedCheck:
    status = CanaryStatus(
        phase=phase,
        canary_weight=weight,
        iterations=iterations,
        last_applied_spec="new",
        last_promoted_spec="old",
        run_started=1.0,
    )
    ready = Readiness(True)
    obs = Observations(
        2.0, "new", "old", ready, ready, Routes(100 - weight, weight), manual=manual or Manual()
    )
    obs = obs.with_check(Check.ANALYSIS, outcome)
    if promotion_gate is not None:
        obs = obs.with_check(Check.CONFIRM_PROMOTION, CheckOutcome(promotion_gate))
    return next_step(c, status, obs)


PASS = CheckOutcome(True, EVIDENCE, verdict=Verdict.PASS)
CONTINUE = CheckOutcome(True, "collecting evidence", verdict=Verdict.CONTINUE)


def test_a_pass_promotes_at_once_from_the_first_steps_with_the_evidence_in_the_event() -> None:
    step = tick(canary(WEIGHTED), PASS, weight=10)
    assert isinstance(step, Decision)
    assert step.status.phase is Phase.PROMOTING
    [event] = step.events
    assert event.reason == "PromotingEarly" and event.alert is not None
    assert event.message == f"Promoting web early, at canary weight 10 of 50: {EVIDENCE}"
    assert [a.value for a in step.actions] == ["promote"]


def test_without_promote_early_a_pass_only_steps_up_and_a_continue_steps_up_either_way() -> None:
    plain = canary({**WEIGHTED, "promoteEarly": False})
    stepped = tick(plain, PASS, weight=10)
    assert isinstance(stepped, Decision) and stepped.status.canary_weight == 20
    assert stepped.status.phase is Phase.PROGRESSING
    early = tick(canary(WEIGHTED), CONTINUE, weight=10)
    assert isinstance(early, Decision) and early.status.canary_weight == 20
    assert early.status.phase is Phase.PROGRESSING


def test_a_fail_still_rolls_back_and_a_failed_check_still_counts() -> None:
    c = canary(WEIGHTED)
    failed = tick(c, CheckOutcome(False, "worse", verdict=Verdict.FAIL))
    assert isinstance(failed, Decision) and failed.status.phase is Phase.FAILED
    # a pass of the comparison with another metric failing is a failed check, never a promotion
    counted = tick(c, CheckOutcome(False, "metric error-budget 3 > 1"))
    assert isinstance(counted, Decision) and counted.status.failed_checks == 1
    assert counted.status.phase is Phase.PROGRESSING


def test_early_promotion_goes_through_confirm_promotion_and_halt() -> None:
    c = canary({**WEIGHTED, "webhooks": [{"name": "ok", "type": "confirm-promotion", "url": "http://g/"}]})
    asked = tick(c, PASS)
    assert isinstance(asked, NeedCheck) and asked.check is Check.CONFIRM_PROMOTION
    closed = tick(c, PASS, promotion_gate=False)
    assert isinstance(closed, Decision) and closed.status.phase is Phase.WAITING_PROMOTION
    assert closed.status.canary_weight == 10 and closed.routes is None  # no step up while it waits
    opened = tick(c, PASS, phase=Phase.WAITING_PROMOTION, promotion_gate=True)
    assert isinstance(opened, Decision) and opened.status.phase is Phase.PROMOTING
    halted = tick(canary(WEIGHTED), PASS, manual=Manual(halt=True))
    assert isinstance(halted, Decision) and halted.status.phase is Phase.PROGRESSING
    assert halted.status.canary_weight == 10


def test_blue_green_switches_at_once_then_promotes() -> None:
    c = canary({"iterations": 10, "judge": "sequential", "promoteEarly": True})
    switched = tick(c, PASS, weight=0, iterations=2)
    assert isinstance(switched, Decision) and switched.routes == Routes(0, 100)
    assert "after iteration 2 of 10" in switched.events[0].message
    assert switched.status.iterations == 11
    promoted = tick(c, CONTINUE, weight=100, iterations=11)
    assert isinstance(promoted, Decision) and promoted.status.phase is Phase.PROMOTING


def test_the_watcher_ticks_at_once_on_a_pass_at_every_step_only_with_promote_early() -> None:
    early, plain = canary(WEIGHTED), canary({**WEIGHTED, "promoteEarly": False})
    stepping = CanaryStatus(phase=Phase.PROGRESSING, canary_weight=10, message="Advance web canary weight 10")
    waiting = CanaryStatus(phase=Phase.PROGRESSING, canary_weight=50, message=f"web {WAITING_EVIDENCE}")
    assert kicks_at_once(early, stepping, Verdict.PASS)
    assert not kicks_at_once(plain, stepping, Verdict.PASS)
    assert kicks_at_once(plain, waiting, Verdict.PASS)
    assert not kicks_at_once(early, stepping, Verdict.CONTINUE)
    assert kicks_at_once(plain, stepping, Verdict.FAIL)
    gated = CanaryStatus(phase=Phase.WAITING_PROMOTION, canary_weight=10)
    assert not kicks_at_once(early, gated, Verdict.PASS)  # the gate is asked at the interval, as always


# -- the engine on the in-memory fakes --------------------------------------------------------------------

BOUNDS = (10.0, 20.0, 50.0, 100.0, 200.0)
HOOKS = """
interval: 10s
threshold: 2
stepWeight: 10
maxWeight: 50
judge: sequential
promoteEarly: true
webhooks:
- {name: pre, type: pre-rollout, url: "http://pre/"}
- {name: load, url: "http://load/"}
- {name: promotion, type: confirm-promotion, url: "http://promotion/"}
- {name: post, type: post-rollout, url: "http://post/"}
"""


class Counting:
    """Cumulative counts that grow at each read: 1000 canary and 4000 primary requests, 1% 5xx and 1% slower
    than 10 ms on both."""

    def __init__(self) -> None:
        self.reads = 0

    @staticmethod
    def group(requests: int) -> GroupCounts:
        fast = requests - requests // 100
        return GroupCounts(requests, requests // 100, BOUNDS, (fast,) + (requests,) * (len(BOUNDS) - 1))

    async def counts(self, canary: object) -> Counts:
        self.reads += 1
        return Counts(self.group(4000 * self.reads), self.group(1000 * self.reads))


def harness(analysis: str = HOOKS) -> Harness:
    h = Harness(canary_yaml(analysis))
    h.checker.sequential = Monitor(Counting())
    return h


async def test_a_good_release_is_promoted_early_through_hooks_and_gates_with_the_evidence() -> None:
    h = harness()
    await h.initialized()
    seen = await h.run(7)
    await h.engine.drain()
    # scale up; pre-rollout and weight 10; the first counts (a baseline) and 20; errors pass but latency is
    # pending (its slow threshold was just frozen) and 30; both pass: promoted at 30 of 50, two steps early
    assert seen == [
        ("Progressing", 100, 0),
        ("Progressing", 90, 10),
        ("Progressing", 80, 20),
        ("Progressing", 70, 30),
        ("Promoting", 70, 30),
        ("Finalising", 100, 0),
        ("Succeeded", 100, 0),
    ]
    assert h.hooks.called("pre") == 1 and h.hooks.called("post") == 1
    assert h.hooks.called("promotion") == 1
    [early] = [e for e in h.store.events(key=h.key) if e.reason == "PromotingEarly"]
    assert early.message.startswith("Promoting podinfo early, at canary weight 30 of 50: sequential judge:")
    assert "errors: canary 20/2000 5xx, primary 80/8000" in early.message
    assert "e(not worse) " in early.message and ">= 20 = 1/beta" in early.message
    assert "latency: canary 10/1000 slower than 10 ms, primary 40/4000" in early.message


async def test_a_closed_confirm_promotion_holds_the_weight_and_the_analysis_goes_on() -> None:
    h = harness()
    h.hooks.answers["promotion"] = False
    await h.initialized()
    await h.run(6)
    assert h.state().phase is Phase.WAITING_PROMOTION and h.weights == (70, 30)
    loads = h.hooks.called("load")
    await h.run(2)
    assert h.state().phase is Phase.WAITING_PROMOTION and h.weights == (70, 30)
    assert h.hooks.called("load") == loads + 2  # rollout hooks and evidence on every tick
    h.hooks.answers["promotion"] = True
    await h.run(3)
    await h.engine.drain()
    assert h.state().phase is Phase.SUCCEEDED and h.hooks.called("post") == 1


async def test_a_failing_rollout_hook_is_a_failed_check_even_on_a_pass() -> None:
    h = harness()
    h.hooks.answers["load"] = False
    await h.initialized()
    await h.run(4)
    await h.engine.drain()
    assert h.state().phase is Phase.FAILED and h.hooks.called("post") == 1
    assert not [e for e in h.store.events(key=h.key) if e.reason == "PromotingEarly"]


# -- the harness: the issue's targets on a few seeds (docs/benchmarks.md has 500) ----------------------------


def test_early_promotion_is_twice_as_fast_on_good_releases_and_keeps_the_error_rates() -> None:
    seeds = 30
    summaries = measure(seeds=seeds, first_seed=20_000, judges=("threshold", "early"))
    by: dict[tuple[str, str], Summary] = {(s.cell.name, s.judge): s for s in summaries}
    for cell in GRID:
        early, thr = by[(cell.name, "early")], by[(cell.name, "threshold")]
        assert early.undecided == 0, cell
        if cell.good:
            assert early.rollback_rate * seeds <= 1, f"{cell.name}: false rollbacks {early.rollback_rate:.0%}"
            assert early.promote_median_s is not None and thr.promote_median_s is not None
            assert early.promote_median_s * 2 <= thr.promote_median_s, f"{cell.name}: not twice as fast"
            continue
        assert early.promote_rate * seeds <= 1, f"{cell.name}: false promotions {early.promote_rate:.0%}"
        if cell.p1 >= 10 * cell.p0:
            assert early.excess_mean * 10 <= thr.excess_mean, f"{cell.name}: not 10x fewer than thresholds"


# -- through the real embedded stack: Envoy's stats, the watcher, the engine ------------------------------


async def test_a_good_release_on_envoy_is_promoted_before_max_weight(tmp_path: Path) -> None:
    """Users through Envoy on both groups; the counts are Envoy's admin stats. No errors anywhere, so each
    kind passes on the negligible rate (set high: a test has a few hundred requests, not thousands)."""
    rig = Rig(tmp_path)
    spec = """
interval: 3s
threshold: 2
stepWeight: 5
maxWeight: 50
judge: sequential
promoteEarly: true
sequential: {negligibleRate: 0.1, baselineRequests: 50}
"""
    rig.commit(workload("6.0.0"), canary_doc(rig.port, spec), message="6.0.0")
    users = [Traffic(rig.service + "/"), Traffic(rig.service + "/")]
    try:
        await rig.start()
        await rig.wait(Phase.INITIALIZED)
        for u in users:
            u.start()
        tick = rig.status().tick
        rig.commit(workload("6.0.1"), canary_doc(rig.port, spec), message="6.0.1")
        # ten steps (30 s) to gather the evidence, even when a loaded machine slows the users down
        await rig.wait(Phase.SUCCEEDED, after_tick=tick, timeout=90)
        events = rig.events()
    finally:
        for u in users:
            await u.stop()
        await rig.stop()
    early = [e for e in events if e.startswith("PromotingEarly: ")]
    assert len(early) == 1, events[-10:]
    found = re.search(r"at canary weight (\d+) of 50", early[0])
    assert found is not None and 0 < int(found[1]) < 50
    assert "errors: canary 0/" in early[0] and "rate below 0.1" in early[0]
    assert not [e for e in events if e.startswith("Rollback")]
    assert sum(u.errors for u in users) == 0
