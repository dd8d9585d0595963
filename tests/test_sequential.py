"""The sequential judge: its statistics, its verdicts, and how the state machine acts on them."""

from __future__ import annotations

import math
import random

import pytest
from bench.analysis_harness import binomial

from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, parse_object
from rheostat.plugins.metrics.base import Counts, GroupCounts, ProviderError
from rheostat.plugins.platforms.base import Readiness
from rheostat.plugins.routers.base import Routes
from rheostat.rollout.analysis import Checker, Monitor, RunWindow, sequential_settings
from rheostat.rollout.judges import SequentialJudge
from rheostat.rollout.sequential import (
    Evidence,
    RatioTest,
    SequentialSettings,
    floor_requests,
    slow_count,
    slow_threshold,
)
from rheostat.rollout.strategy import WAITING_EVIDENCE, next_step
from rheostat.rollout.types import CanaryStatus, Check, CheckOutcome, Decision, Observations, Phase, Verdict

BOUNDS = (10.0, 20.0, 50.0, 100.0, 200.0)


def group(requests: int, errors: int, hist: tuple[int, ...] = ()) -> GroupCounts:
    if not hist:
        return GroupCounts(requests, errors)
    cumulative = tuple(sum(hist[: i + 1]) for i in range(len(hist)))
    return GroupCounts(requests, errors, BOUNDS, cumulative)


def feed(test: RatioTest, rng: random.Random, seconds: int, p0: float, p1: float, w: float = 0.1) -> None:
    for _ in range(seconds):
        n_c = binomial(rng, 100, w)
        n_p = 100 - n_c
        test.update(n_c, n_p, binomial(rng, n_c, p1), binomial(rng, n_p, p0))


def test_a_clear_regression_fails_and_a_good_release_passes() -> None:
    s = SequentialSettings()
    bad, good = RatioTest(s), RatioTest(s)
    feed(bad, random.Random(1), 300, 0.005, 0.05)
    feed(good, random.Random(1), 1200, 0.01, 0.01, w=0.3)
    assert bad.failed(s.alpha / 2)
    assert not good.failed(s.alpha / 2)
    assert good.passed(s.beta)
    assert not bad.passed(s.beta)
    assert bad.ratio is not None and bad.ratio > 4


def test_false_rollbacks_stay_under_alpha_however_often_one_looks() -> None:
    """Peeking every second for 20 minutes: the e-process crosses 1/alpha in at most ~alpha of runs."""
    s = SequentialSettings(alpha=0.1)
    crossed = 0
    runs = 200
    for seed in range(runs):
        rng = random.Random(seed)
        t = RatioTest(s)
        for _ in range(1200):
            n_c = binomial(rng, 100, 0.3)
            t.update(n_c, 100 - n_c, binomial(rng, n_c, 0.02), binomial(rng, 100 - n_c, 0.02))
            if t.failed(s.alpha):
                crossed += 1
                break
    assert crossed / runs <= s.alpha


def test_no_bad_requests_anywhere_passes_on_the_negligible_rate() -> None:
    s = SequentialSettings()
    t = RatioTest(s)
    for _ in range(100):
        t.update(30, 70, 0, 0)
    assert t.passed(s.beta) and not t.failed(s.alpha)
    assert t.ratio is None


def test_canary_errors_with_an_error_free_primary_fail_fast() -> None:
    s = SequentialSettings()
    t = RatioTest(s)
    seconds = 0
    while not t.failed(s.alpha / 2):
        t.update(10, 90, 1, 0)
        seconds += 1
    assert seconds <= 6
    assert t.ratio == math.inf


def test_evidence_uses_increases_and_skips_a_counter_reset() -> None:
    e = Evidence()
    e.add(Counts(group(1000, 10), group(0, 0)))  # before the run: only a baseline
    e.add(Counts(group(1900, 19), group(100, 30)))
    assert (e.errors.canary_requests, e.errors.canary_bad, e.errors.primary_requests) == (100, 30, 900)
    e.add(Counts(group(50, 0), group(5, 0)))  # Envoy restarted: this scrape only re-baselines
    e.add(Counts(group(950, 9), group(105, 30)))
    assert (e.errors.canary_requests, e.errors.primary_requests, e.errors.primary_bad) == (200, 1800, 18)


def test_latency_threshold_is_frozen_from_the_primary_then_slow_requests_compared() -> None:
    s = SequentialSettings(baseline_requests=100)
    e = Evidence(s)
    e.add(Counts(group(0, 0, (0, 0, 0, 0, 0)), group(0, 0, (0, 0, 0, 0, 0))))
    e.add(Counts(group(100, 0, (50, 40, 9, 1, 0)), group(0, 0, (0, 0, 0, 0, 0))))
    assert e.slow_ms == 50.0  # the smallest bound with 99% of the primary's requests at or below it
    for i in range(2, 30):
        e.add(
            Counts(
                group(100 * i, 0, (50 * i, 40 * i, 9 * i, i, 0)), group(10 * i, 0, (0, 0, 5 * i, 0, 5 * i))
            )
        )
    assert (e.latency.canary_bad, e.latency.primary_bad) == (
        145,
        28,
    )  # half the canary slow, 1% of the primary
    assert e.assess().verdict is Verdict.FAIL
    assert "latency" in e.assess().message


def test_slow_threshold_and_count() -> None:
    g = group(100, 0, (50, 40, 9, 1, 0))
    assert slow_threshold(g, 0.9) == 20.0
    assert slow_threshold(g, 0.99) == 50.0
    assert slow_count(g, 50.0) == 1
    assert slow_count(g, 15.0) == 0  # not a bucket bound: nothing is counted
    assert slow_threshold(GroupCounts(), 0.99) is None


def test_floor_matches_the_issue() -> None:
    assert 2.5 < floor_requests(0.005, 0.05, 0.01) * 0.045 < 3.5


def canary(**sequential: object) -> Canary:
    analysis: dict[str, object] = {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 20}
    analysis["judge"] = "sequential"
    if sequential:
        analysis["sequential"] = sequential
    obj = parse_object(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "web", "namespace": "t"},
            "spec": {
                "targetRef": {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": "web"},
                "service": {"port": 8080},
                "analysis": analysis,
            },
        },
        "test",
    )
    assert isinstance(obj, Canary)
    return obj


def test_settings_come_from_the_canary_with_documented_defaults() -> None:
    assert sequential_settings(canary()) == SequentialSettings()
    s = sequential_settings(canary(alpha=0.001, minRegression=0.5, latencyQuantile=0.95))
    assert (s.alpha, s.min_regression, s.latency_quantile) == (0.001, 0.5, 0.95)
    with pytest.raises(ManifestError, match="alpha"):
        canary(alpha=0.9)


def tick(c: Canary, weight: int, outcome: CheckOutcome, phase: Phase = Phase.PROGRESSING) -> Decision:
    status = CanaryStatus(
        phase=phase, canary_weight=weight, last_applied_spec="new", last_promoted_spec="old"
    )
    ready = Readiness(True)
    obs = Observations(1.0, "new", "old", ready, ready, Routes(100 - weight, weight))
    obs = obs.with_check(Check.ANALYSIS, outcome)
    step = next_step(c, status, obs)
    assert isinstance(step, Decision)
    return step


def test_strategy_rolls_back_on_fail_at_once_steps_up_on_continue_and_promotes_only_on_pass() -> None:
    c = canary()
    failed = tick(c, 10, CheckOutcome(False, "worse", verdict=Verdict.FAIL))
    assert failed.status.phase is Phase.FAILED  # threshold 5, yet the first conclusive failure rolls back
    assert tick(c, 10, CheckOutcome(True, verdict=Verdict.CONTINUE)).status.canary_weight == 20
    held = tick(c, 20, CheckOutcome(True, verdict=Verdict.CONTINUE))
    assert held.status.phase is Phase.PROGRESSING and WAITING_EVIDENCE in held.status.message
    assert tick(c, 20, CheckOutcome(True, verdict=Verdict.PASS)).status.phase is Phase.PROMOTING
    counted = tick(c, 10, CheckOutcome(False, "source down"))  # no evidence: an ordinary failed check
    assert counted.status.phase is Phase.PROGRESSING and counted.status.failed_checks == 1


def test_sequential_judge_without_evidence_fails_the_check_and_never_passes() -> None:
    out = SequentialJudge(None, "Prometheus is unreachable").verdict([])
    assert not out.ok and out.verdict is None and "unreachable" in out.message


class FakeSource:
    def __init__(self) -> None:
        self.counts_seen: list[Counts] = []
        self.next: Counts = Counts(GroupCounts(), GroupCounts())
        self.down = False

    async def counts(self, canary: object) -> Counts:
        if self.down:
            raise ProviderError("source is down")
        return self.next


async def test_monitor_keeps_evidence_per_run_and_checker_judges_from_it() -> None:
    source = FakeSource()
    monitor = Monitor(source)
    checker = Checker(hooks=None, metrics={}, templates=lambda ns, n: None, sequential=monitor)  # type: ignore[arg-type]
    c = canary()
    assert (await checker.run_metrics(c, RunWindow("run-1"))).verdict is Verdict.CONTINUE
    source.next = Counts(group(900, 0), group(100, 40))
    out = await checker.run_metrics(c, RunWindow("run-1"))
    assert out.verdict is Verdict.FAIL and not out.ok
    assert any(m.name == "sequential-errors-ratio" for m in out.metrics)
    evidence = monitor.evidence(c.metadata.key)
    assert evidence is not None and evidence.errors.canary_bad == 40
    await checker.run_metrics(c, RunWindow("run-2"))  # a new run starts from nothing
    evidence = monitor.evidence(c.metadata.key)
    assert evidence is not None and evidence.errors.canary_bad == 0
    source.down = True
    down = await checker.run_metrics(c, RunWindow("run-2"))
    assert not down.ok and down.verdict is None and "source is down" in down.message


# -- "not worse": the pass that promoteEarly promotes on ---------------------------------------------------


def false_passes(s: SequentialSettings, p0: float, p1: float, runs: int = 200, seconds: int = 600) -> float:
    """Share of runs whose pass test ever crosses 1/beta, looked at every second, at canary weight 30%."""
    crossed = 0
    for seed in range(runs):
        rng = random.Random(seed)
        t = RatioTest(s)
        for _ in range(seconds):
            n_c = binomial(rng, 100, 0.3)
            t.update(n_c, 100 - n_c, binomial(rng, n_c, p1), binomial(rng, 100 - n_c, p0))
            if t.passed(s.beta):
                crossed += 1
                break
    return crossed / runs


def test_false_passes_stay_under_beta_however_often_one_looks() -> None:
    """A canary exactly (1 + minRegression) times worse, peeked at every second for 10 minutes."""
    s = SequentialSettings(beta=0.1)
    assert false_passes(s, 0.02, 0.05) <= s.beta
    # both ways to pass at their boundary: the ratio (2.5x) and the negligible rate (the canary's rate is it)
    s = SequentialSettings(beta=0.1, negligible_rate=0.01)
    assert false_passes(s, 0.004, 0.01) <= s.beta


def test_pass_is_the_mean_of_the_two_e_values() -> None:
    s = SequentialSettings()
    t = RatioTest(s)
    t.update(1000, 9000, 0, 0)  # no bad request: only the negligible e-value moves (the other stays 1)
    assert t.log_e_not_worse == 0
    assert t.log_e_pass == pytest.approx(math.log((1 + math.exp(t.log_e_negligible)) / 2))
    t.update(1000, 4000, 10, 40)
    expected = math.log((math.exp(t.log_e_not_worse) + math.exp(t.log_e_negligible)) / 2)
    assert t.log_e_pass == pytest.approx(expected)


def test_a_pass_says_the_counts_the_e_values_and_the_bound() -> None:
    e = Evidence(SequentialSettings(baseline_requests=100))
    e.add(Counts(group(0, 0, (0,) * 5), group(0, 0, (0,) * 5)))
    for i in (1, 2):  # 1% 5xx and 1% slower than 10 ms on both sides
        e.add(
            Counts(
                group(4000 * i, 40 * i, (3960 * i, 40 * i, 0, 0, 0)),
                group(1000 * i, 10 * i, (990 * i, 10 * i, 0, 0, 0)),
            )
        )
    a = e.assess()
    assert a.verdict is Verdict.PASS
    assert a.message.startswith("sequential judge: the canary is not worse than the primary: errors: canary")
    assert "errors: canary 20/2000 5xx, primary 80/8000, ratio 1;" in a.message
    assert "latency: canary 10/1000 slower than 10 ms, primary 40/4000, ratio 1;" in a.message
    assert a.message.count(" >= 20 = 1/beta (not 2.5x the primary's)") == 2
