"""The sequential judge's statistics: anytime-valid tests of "is the canary worse than the primary?".

Pure: no I/O, no clock. `Evidence` takes cumulative counts (requests, 5xx, latency histogram) of both groups,
as often as they are scraped, and answers with a verdict at any moment. docs/analysis.md explains the
statistics in plain words; in short:

* A *bad request* is a 5xx, or (for latency) a request slower than the primary's `latencyQuantile`, frozen
  once the primary served `baselineRequests` requests in this run.
* Given how many requests each group served in a scrape, and how many bad requests there were in all, the
  number of bad requests that came from the canary is binomial with success probability
  theta(rho) = n_c * rho / (n_c * rho + n_p), where rho is the ratio of the canary's bad-request rate to the
  primary's (exact for Poisson counts; conservative for rho = 1, see docs/analysis.md). The unknown baseline
  rate cancels out: the test never needs to know p0, and a large primary costs nothing.
* The likelihood of every scrape is multiplied in for a grid of rho; mixing the products over a prior gives
  e-processes, whose chance of ever crossing 1/alpha under their null is at most alpha (Ville's inequality),
  however often one looks:
  - "worse": null rho <= 1, mixture over rho >= 1 + minRegression. Crossing 2/alpha (two kinds of bad
    request, Bonferroni) is a conclusive regression: roll back.
  - "not worse": null rho >= 1 + minRegression, alternative rho = 1. The likelihood ratio is an e-process
    for the whole composite null: theta grows with rho, so under any rho >= 1 + minRegression each scrape's
    factor has expectation at most 1.
  - "negligible": null "canary bad-request rate >= negligibleRate" (Bernoulli SPRT against a tenth of it),
    so a kind of bad request that (almost) never happens on either side can pass too.
  A kind passes when the mean of the "not worse" and "negligible" e-values crosses 1/beta: the mean of two
  e-processes is one for the intersection of their nulls, so a release worse by minRegression or more (and
  not negligible) passes with probability at most beta. Both kinds must pass; with `promoteEarly` a pass
  promotes at once, so beta is also the bound on early promotions of such a release.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

from rheostat.plugins.metrics.base import Counts, GroupCounts
from rheostat.rollout.types import MetricValue, Verdict

GRID = tuple(2.0 ** (k / 4) for k in range(-20, 33))  # rho from 1/32 to 256, four points per doubling
ERRORS = "errors"
LATENCY = "latency"


@dataclass(frozen=True)
class SequentialSettings:
    """`analysis.sequential` of a Canary, with its defaults."""

    alpha: float = 0.01  # false-rollback rate of a release no worse than the primary, over the whole run
    beta: float = 0.05  # chance of passing a release worse by minRegression or more
    min_regression: float = 1.5  # smallest regression worth catching: canary rate >= (1 + this) x primary's
    negligible_rate: float = 0.002  # bad-request rate so low that a canary below it passes outright
    latency_quantile: float = 0.99  # "slow" = slower than this quantile of the primary
    baseline_requests: int = 1000  # primary requests measured before the slow threshold is frozen

    def __post_init__(self) -> None:
        for name, value, lo, hi in (
            ("alpha", self.alpha, 0.0, 0.5),
            ("beta", self.beta, 0.0, 0.5),
            ("negligible_rate", self.negligible_rate, 0.0, 1.0),
            ("latency_quantile", self.latency_quantile, 0.5, 1.0),
        ):
            if not lo < value < hi:
                raise ValueError(f"{name}: {value} is outside ({lo}, {hi})")
        if self.min_regression <= 0:
            raise ValueError(f"min_regression: {self.min_regression} must be greater than 0")
        if self.baseline_requests < 1:
            raise ValueError("baseline_requests: must be at least 1")


def _logsumexp(xs: list[float]) -> float:
    top = max(xs)
    if top == -math.inf:
        return top
    return top + math.log(sum(math.exp(x - top) for x in xs))


class RatioTest:
    """Anytime-valid comparison of one kind of bad request between canary and primary."""

    def __init__(self, settings: SequentialSettings) -> None:
        self.settings = settings
        self.null_worse = 1.0
        self.null_pass = 1.0 + settings.min_regression
        self.rhos: tuple[float, ...] = tuple(sorted({*GRID, self.null_worse, self.null_pass}))
        self.log_lik = [0.0] * len(self.rhos)  # log-likelihood of the data under each rho, up to a constant
        self._i_one = self.rhos.index(1.0)
        self._i_pass = self.rhos.index(self.null_pass)
        alternatives = [i for i, r in enumerate(self.rhos) if r >= self.null_pass]
        self._alt_worse = alternatives
        self._log_prior_worse = -math.log(len(alternatives))
        self.canary_requests = self.primary_requests = 0
        self.canary_bad = self.primary_bad = 0
        # canary-only SPRT, H0: rate >= negligible_rate against rate = negligible_rate / 10
        self._log_negligible = 0.0

    def update(self, n_c: int, n_p: int, x_c: int, x_p: int) -> None:
        """One scrape's increase: requests and bad requests of the canary (c) and the primary (p)."""
        n_c, n_p = max(n_c, 0), max(n_p, 0)
        x_c, x_p = min(max(x_c, 0), n_c), min(max(x_p, 0), n_p)
        self.canary_requests += n_c
        self.primary_requests += n_p
        self.canary_bad += x_c
        self.primary_bad += x_p
        q = self.settings.negligible_rate
        self._log_negligible += x_c * math.log(0.1) + (n_c - x_c) * math.log((1 - q / 10) / (1 - q))
        if n_c == 0 or n_p == 0 or x_c + x_p == 0:
            return  # no information on rho: it is carried by where the bad requests happened
        for i, rho in enumerate(self.rhos):
            theta = n_c * rho / (n_c * rho + n_p)
            self.log_lik[i] += x_c * math.log(theta) + x_p * math.log1p(-theta)

    @property
    def log_e_worse(self) -> float:
        """log of the e-value against "the canary is not worse" (mixture over rho >= 1 + minRegression)."""
        base = self.log_lik[self._i_one]
        return self._log_prior_worse + _logsumexp([self.log_lik[i] - base for i in self._alt_worse])

    @property
    def log_e_not_worse(self) -> float:
        """log of the e-value against "the canary is worse by minRegression or more" (alternative rho = 1)."""
        return self.log_lik[self._i_one] - self.log_lik[self._i_pass]

    @property
    def log_e_negligible(self) -> float:
        return self._log_negligible

    @property
    def ratio(self) -> float | None:
        """Point estimate of rho (the ratio of bad-request rates), None before any bad request."""
        if self.canary_requests == 0 or self.primary_requests == 0:
            return None
        if self.primary_bad == 0:
            return None if self.canary_bad == 0 else math.inf
        return (self.canary_bad / self.canary_requests) / (self.primary_bad / self.primary_requests)

    def failed(self, level: float) -> bool:
        return self.log_e_worse >= math.log(1 / level)

    @property
    def log_e_pass(self) -> float:
        """log of the mean of the "not worse" and "negligible" e-values: an e-process for "worse, and not
        negligible", so the union of the two ways to pass costs a factor 2, not a doubled error rate."""
        return _logsumexp([self.log_e_not_worse, self.log_e_negligible]) - math.log(2)

    def passed(self, level: float) -> bool:
        return self.log_e_pass >= math.log(1 / level)


@dataclass(frozen=True)
class Assessment:
    verdict: Verdict
    message: str
    metrics: tuple[MetricValue, ...] = ()


def _increase(new: int, old: int) -> int | None:
    return new - old if new >= old else None  # went down: the source restarted; skip this scrape


def slow_threshold(group: GroupCounts, quantile: float) -> float | None:
    """The smallest bucket bound with at least `quantile` of the group's requests at or below it."""
    total = group.at_or_below[-1] if group.at_or_below else 0
    if total == 0:
        return None
    i = bisect.bisect_left(group.at_or_below, quantile * total)
    return group.le[min(i, len(group.le) - 1)]


def slow_count(group: GroupCounts, threshold_ms: float) -> int:
    """Requests slower than the threshold (it must be one of the bucket bounds)."""
    if not group.at_or_below:
        return 0
    i = bisect.bisect_left(group.le, threshold_ms)
    if i >= len(group.le) or group.le[i] != threshold_ms:
        return 0
    return group.at_or_below[-1] - group.at_or_below[i]


@dataclass
class Evidence:
    """Everything one run of one canary has shown so far, updated from cumulative counts at each scrape."""

    settings: SequentialSettings = field(default_factory=SequentialSettings)
    errors: RatioTest = field(init=False)
    latency: RatioTest = field(init=False)
    slow_ms: float | None = None
    scrapes: int = 0
    _last: Counts | None = None
    _baseline: GroupCounts | None = None  # primary counts when the run started, to find the slow threshold

    def __post_init__(self) -> None:
        self.errors = RatioTest(self.settings)
        self.latency = RatioTest(self.settings)

    def add(self, counts: Counts) -> None:
        self.scrapes += 1
        last, self._last = self._last, counts
        if last is None:
            self._baseline = counts.primary
            return
        n_c = _increase(counts.canary.requests, last.canary.requests)
        n_p = _increase(counts.primary.requests, last.primary.requests)
        x_c = _increase(counts.canary.errors, last.canary.errors)
        x_p = _increase(counts.primary.errors, last.primary.errors)
        if None in (n_c, n_p, x_c, x_p):
            self._baseline = counts.primary
            return
        assert n_c is not None and n_p is not None and x_c is not None and x_p is not None
        self.errors.update(n_c, n_p, x_c, x_p)
        self._latency(counts, last)

    def _latency(self, counts: Counts, last: Counts) -> None:
        if self.slow_ms is None:
            base = self._baseline
            if base is None or not counts.primary.at_or_below:
                return
            seen = _hist_increase(counts.primary, base)
            if seen is None or seen.at_or_below[-1] < self.settings.baseline_requests:
                if seen is None:
                    self._baseline = counts.primary
                return
            self.slow_ms = slow_threshold(seen, self.settings.latency_quantile)
            return  # counting starts with the next scrape: the threshold never depends on what it judges
        now_c, now_p = (
            _hist_increase(counts.canary, last.canary),
            _hist_increase(counts.primary, last.primary),
        )
        if now_c is None or now_p is None:
            return
        self.latency.update(
            now_c.at_or_below[-1] if now_c.at_or_below else 0,
            now_p.at_or_below[-1] if now_p.at_or_below else 0,
            slow_count(now_c, self.slow_ms),
            slow_count(now_p, self.slow_ms),
        )

    def assess(self) -> Assessment:
        s = self.settings
        tests = {ERRORS: self.errors, LATENCY: self.latency}
        worse = [name for name, t in tests.items() if t.failed(s.alpha / len(tests))]
        values = tuple(self._value(name, t) for name, t in tests.items())
        if worse:
            detail = "; ".join(self._describe(name, tests[name]) for name in worse)
            return Assessment(
                Verdict.FAIL, f"sequential judge: the canary is worse than the primary: {detail}", values
            )
        if all(t.passed(s.beta) for t in tests.values()):
            detail = "; ".join(self._describe_pass(name, t) for name, t in tests.items())
            return Assessment(
                Verdict.PASS, f"sequential judge: the canary is not worse than the primary: {detail}", values
            )
        pending = ", ".join(name for name, t in tests.items() if not t.passed(s.beta))
        return Assessment(Verdict.CONTINUE, f"sequential judge: collecting evidence ({pending})", values)

    def _describe(self, name: str, t: RatioTest) -> str:
        what = "5xx" if name == ERRORS else f"slower than {self.slow_ms:g} ms"
        return (
            f"{name}: canary {t.canary_bad}/{t.canary_requests} {what}, primary {t.primary_bad}/"
            f"{t.primary_requests}, ratio {_ratio(t.ratio)}, e-value {math.exp(min(t.log_e_worse, 700)):.3g}"
            f" >= {2 / self.settings.alpha:g}"
        )

    def _describe_pass(self, name: str, t: RatioTest) -> str:
        s = self.settings
        what = "5xx" if name == ERRORS else f"slower than {self.slow_ms:g} ms" if self.slow_ms else "slow"
        why = (
            f"rate below {s.negligible_rate:g}"
            if t.log_e_negligible > t.log_e_not_worse
            else f"not {1 + s.min_regression:g}x the primary's"
        )
        return (
            f"{name}: canary {t.canary_bad}/{t.canary_requests} {what}, primary {t.primary_bad}/"
            f"{t.primary_requests}, ratio {_ratio(t.ratio)}; e(not worse) {_shown(t.log_e_pass)} >= {1 / s.beta:g}"
            f" = 1/beta ({why})"
        )

    def _value(self, name: str, t: RatioTest) -> MetricValue:
        s = self.settings
        ok = not t.failed(s.alpha / 2) and t.passed(s.beta)
        e_worse = math.exp(min(t.log_e_worse, 700))
        e_pass = math.exp(min(t.log_e_pass, 700))
        what = (
            "5xx"
            if name == ERRORS
            else f"> {self.slow_ms:g} ms"
            if self.slow_ms
            else "slow (threshold pending)"
        )
        message = (
            f"canary {t.canary_bad}/{t.canary_requests} {what}, primary {t.primary_bad}/{t.primary_requests}; "
            f"e(worse) {e_worse:.3g} (rollback at {2 / s.alpha:g}), e(not worse) {e_pass:.3g} "
            f"(pass at {1 / s.beta:g})"
        )
        ratio = t.ratio
        return MetricValue(
            f"sequential-{name}-ratio",
            None if ratio is None or math.isinf(ratio) else ratio,
            None,
            1.0 + s.min_regression,
            ok,
            message,
        )


def _ratio(ratio: float | None) -> str:
    return "-" if ratio is None else "inf" if math.isinf(ratio) else f"{ratio:.3g}"


def _shown(log_e: float) -> str:
    return f"{math.exp(min(log_e, 700)):.3g}"


def _hist_increase(new: GroupCounts, old: GroupCounts) -> GroupCounts | None:
    if not new.at_or_below:
        return GroupCounts()
    if not old.at_or_below:
        return new
    if new.le != old.le or any(n < o for n, o in zip(new.at_or_below, old.at_or_below, strict=True)):
        return None
    return GroupCounts(
        new.requests - old.requests,
        new.errors - old.errors,
        new.le,
        tuple(n - o for n, o in zip(new.at_or_below, old.at_or_below, strict=True)),
    )


def floor_requests(p0: float, p1: float, alpha: float) -> float:
    """Wald: canary requests an SPRT that knows p0 and p1 needs, about ln(1/alpha) / KL(p1 || p0)."""
    kl = p1 * math.log(p1 / p0) + (1 - p1) * math.log((1 - p1) / (1 - p0))
    return math.log(1 / alpha) / kl
