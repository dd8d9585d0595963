"""The analysis harness: the threshold and the sequential judge (with and without early promotion) on the
same synthetic traffic.

Both judges drive the real state machine (`rollout.strategy.next_step`) and the real judges: only the traffic
is simulated. 100 requests/s through a random weighted split; each second the canary and the primary get
binomial numbers of requests, of 5xx and (log-normal) latencies in Envoy's histogram buckets. The threshold
judge reads success rate and p99 of the canary over the last minute at every tick (Flagger's defaults:
interval 1m, threshold 5, stepWeight 10, maxWeight 50, success rate >= 99%, p99 <= 500 ms). The sequential
judge's evidence is updated every second (a scrape), and a conclusive regression ticks the canary at once,
as the scheduler's watcher does. The third column, "early", is the sequential judge with
`promoteEarly: true`: its "not worse" verdict promotes at once, and the watcher ticks on it too.

Reported per cell: excess bad requests served by the canary before the run ended (bad requests beyond what
the primary's rate would have given: 5xx, or for the latency cell requests slower than the primary's p99),
mean and p95; the rollback rate; the promotion rate (of a bad release: false promotions); the time to promote
(median and mean over promoted runs); and Wald's floor ln(1/alpha) / KL(p1 || p0) x (p1 - p0).

`python bench/analysis_harness.py [--seeds N]`; `make bench` runs it with the default seed count.
"""

from __future__ import annotations

import argparse
import bisect
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rheostat.model.canary import Canary, Metric
from rheostat.model.load import parse_object
from rheostat.plugins.metrics.base import Counts, GroupCounts
from rheostat.plugins.metrics.envoy_stats import Histogram, quantile
from rheostat.plugins.platforms.base import Readiness
from rheostat.plugins.routers.base import Routes
from rheostat.plugins.routers.envoy.config import RQ_TIME_BUCKETS_MS
from rheostat.rollout.analysis import sequential_settings
from rheostat.rollout.judges import Sample, SequentialJudge, ThresholdJudge
from rheostat.rollout.sequential import Evidence, floor_requests
from rheostat.rollout.strategy import kicks_at_once, next_step
from rheostat.rollout.types import (
    CanaryStatus,
    Check,
    CheckOutcome,
    Decision,
    NeedCheck,
    Observations,
    Phase,
)

RATE = 100  # requests per second
INTERVAL_S = 60
LIMIT_S = 3600  # a run that has neither promoted nor rolled back by then is "undecided"
LATENCY_MEDIAN_MS = 100.0
LATENCY_SIGMA = 0.5
TAIL_FROM_MS = 150.0  # buckets below this are lumped: the judges only look at the tail
BOUNDS = tuple(b for b in RQ_TIME_BUCKETS_MS if b >= TAIL_FROM_MS)
JUDGES = ("threshold", "sequential", "early")  # early: the sequential judge with promoteEarly


@dataclass(frozen=True)
class Cell:
    name: str
    p0: float
    p1: float
    latency_factor: float = 1.0  # canary latencies are this many times the primary's

    @property
    def good(self) -> bool:
        return self.p1 == self.p0 and self.latency_factor == 1.0


GRID = (
    Cell("p0 0.5%, good", 0.005, 0.005),
    Cell("p0 0.5%, p1 3x", 0.005, 0.015),
    Cell("p0 0.5%, p1 10x", 0.005, 0.05),
    Cell("p0 1%, good", 0.01, 0.01),
    Cell("p0 1%, p1 3x", 0.01, 0.03),
    Cell("p0 1%, p1 10x", 0.01, 0.1),
    Cell("p0 0.5%, latency 2x", 0.005, 0.005, 2.0),
)


def canary_spec(judge: str) -> Canary:
    early = {"promoteEarly": True} if judge == "early" else {}
    obj = parse_object(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "sim", "namespace": "bench"},
            "spec": {
                "targetRef": {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": "sim"},
                "service": {"port": 8080},
                "analysis": {
                    "interval": "1m",
                    "threshold": 5,
                    "stepWeight": 10,
                    "maxWeight": 50,
                    "judge": "sequential" if judge == "early" else judge,
                    **early,
                    "metrics": [
                        {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                        {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
                    ],
                },
            },
        },
        "bench",
    )
    assert isinstance(obj, Canary)
    return obj


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact binomial draw by geometric skips: cost grows with n * min(p, 1 - p)."""
    if p <= 0 or n <= 0:
        return 0
    if p >= 1:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1 - p)
    log_q = math.log1p(-p)
    count, i = 0, 0
    while True:
        i += int(math.log(1.0 - rng.random()) / log_q) + 1
        if i > n:
            return count
        count += 1


def lognormal_cdf(x: float, median: float) -> float:
    return 0.5 * math.erfc(-(math.log(x / median)) / (LATENCY_SIGMA * math.sqrt(2)))


@dataclass
class Latency:
    """Draws how many of n requests fall in each tail bucket, fast: only the tail is sampled one by one."""

    median: float
    cdf: tuple[float, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.cdf = tuple(lognormal_cdf(b, self.median) for b in BOUNDS)

    def draw(self, rng: random.Random, n: int) -> list[int]:
        counts = [0] * len(BOUNDS)
        tail = binomial(rng, n, 1 - self.cdf[0])
        counts[0] = n - tail
        for _ in range(tail):
            u = self.cdf[0] + rng.random() * (1 - self.cdf[0])
            counts[min(bisect.bisect_left(self.cdf, u), len(BOUNDS) - 1)] += 1
        return counts


@dataclass
class Group:
    requests: int = 0
    errors: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BOUNDS))

    def add(self, n: int, errors: int, buckets: list[int]) -> None:
        self.requests += n
        self.errors += errors
        for i, c in enumerate(buckets):
            self.buckets[i] += c

    def counts(self) -> GroupCounts:
        cumulative, total = [], 0
        for c in self.buckets:
            total += c
            cumulative.append(total)
        return GroupCounts(self.requests, self.errors, BOUNDS, tuple(cumulative))


@dataclass(frozen=True)
class Result:
    outcome: str  # "promoted", "rolled back" or "undecided"
    excess_bad: float
    seconds: float


def window_values(history: list[GroupCounts], at: int) -> tuple[float | None, float | None]:
    """Success rate and p99 of the canary over the last interval, from cumulative counts."""
    new, old = history[at], history[max(at - INTERVAL_S, 0)]
    requests = new.requests - old.requests
    if requests <= 0:
        return None, None
    sr = 100.0 * (requests - (new.errors - old.errors)) / requests
    h = Histogram(BOUNDS, tuple(a - b for a, b in zip(new.at_or_below, old.at_or_below, strict=True)))
    return sr, quantile(0.99, h)


def run(cell: Cell, judge: str, seed: int, canary: Canary) -> Result:
    rng = random.Random(seed)
    primary_latency, canary_latency = (
        Latency(LATENCY_MEDIAN_MS),
        Latency(LATENCY_MEDIAN_MS * cell.latency_factor),
    )
    slow_ms = BOUNDS[bisect.bisect_left(primary_latency.cdf, 0.99)]  # "bad" for latency: slower than p99
    p0_slow = 1 - primary_latency.cdf[BOUNDS.index(slow_ms)]
    status = CanaryStatus(phase=Phase.PROGRESSING, last_applied_spec="new", last_promoted_spec="old")
    routes = Routes(100, 0)
    primary, canary_group = Group(), Group()
    canary_history: list[GroupCounts] = [canary_group.counts()]
    evidence = Evidence(sequential_settings(canary)) if judge != "threshold" else None
    if evidence is not None:
        evidence.add(Counts(primary.counts(), canary_group.counts()))
    metrics = canary.spec.the_analysis.metrics
    excess = 0.0
    next_tick, t = 0, 0
    while t <= LIMIT_S:
        if t >= next_tick:
            status, routes = tick(canary, status, routes, t, judge, evidence, metrics, canary_history)
            next_tick = t + INTERVAL_S
            if status.phase is Phase.FAILED:
                return Result("rolled back", excess, t)
            if status.phase is Phase.PROMOTING:
                return Result("promoted", excess, t)
        t += 1
        n_c = binomial(rng, RATE, routes.canary / 100)
        n_p = RATE - n_c
        x_c, x_p = binomial(rng, n_c, cell.p1), binomial(rng, n_p, cell.p0)
        lat_c, lat_p = canary_latency.draw(rng, n_c), primary_latency.draw(rng, n_p)
        canary_group.add(n_c, x_c, lat_c)
        primary.add(n_p, x_p, lat_p)
        canary_history.append(canary_group.counts())
        if cell.latency_factor != 1.0:
            slow = n_c - sum(lat_c[: BOUNDS.index(slow_ms) + 1])
            excess += slow - n_c * p0_slow
        else:
            excess += x_c - n_c * cell.p0
        if evidence is not None:
            evidence.add(Counts(primary.counts(), canary_group.counts()))
            if kicks_at_once(canary, status, evidence.assess().verdict):
                next_tick = min(next_tick, t)  # the watcher kicks the tick at once
    return Result("undecided", excess, t)


def tick(
    canary: Canary,
    status: CanaryStatus,
    routes: Routes,
    t: int,
    judge: str,
    evidence: Evidence | None,
    metrics: list[Metric],
    history: list[GroupCounts],
) -> tuple[CanaryStatus, Routes]:
    ready = Readiness(True)
    obs = Observations(
        now=float(t), revision="new", primary_revision="old", primary=ready, canary=ready, routes=routes
    )
    step = next_step(canary, status, obs)
    while isinstance(step, NeedCheck):
        obs = obs.with_check(step.check, analyse(judge, evidence, metrics, history, t, step.check))
        step = next_step(canary, status, obs)
    assert isinstance(step, Decision)
    return step.status, step.routes or routes


def analyse(
    judge: str,
    evidence: Evidence | None,
    metrics: list[Metric],
    history: list[GroupCounts],
    t: int,
    check: Check,
) -> CheckOutcome:
    if check is not Check.ANALYSIS:
        return CheckOutcome(True)
    if evidence is not None:
        return SequentialJudge(evidence.assess()).verdict([])
    sr, p99 = window_values(history, t)
    return ThresholdJudge().verdict([Sample(metrics[0], sr), Sample(metrics[1], p99)])


@dataclass(frozen=True)
class Summary:
    cell: Cell
    judge: str
    runs: int
    excess_mean: float
    excess_p95: float
    rollback_rate: float
    undecided: int
    promote_s: float | None  # mean time to promote, over promoted runs
    promote_rate: float = 0.0  # of a bad release: false promotions
    promote_median_s: float | None = None


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def measure(
    cells: tuple[Cell, ...] = GRID, seeds: int = 200, first_seed: int = 0, judges: tuple[str, ...] = JUDGES
) -> list[Summary]:
    out = []
    for judge in judges:
        canary = canary_spec(judge)
        for cell in cells:
            results = [run(cell, judge, first_seed + s, canary) for s in range(seeds)]
            promoted = [r.seconds for r in results if r.outcome == "promoted"]
            out.append(
                Summary(
                    cell,
                    judge,
                    seeds,
                    statistics.fmean(r.excess_bad for r in results),
                    p95([r.excess_bad for r in results]),
                    sum(r.outcome == "rolled back" for r in results) / seeds,
                    sum(r.outcome == "undecided" for r in results),
                    statistics.fmean(promoted) if promoted else None,
                    len(promoted) / seeds,
                    statistics.median(promoted) if promoted else None,
                )
            )
    return out


def floor(cell: Cell, alpha: float = 0.01) -> float | None:
    if cell.p1 == cell.p0:
        return None
    return floor_requests(cell.p0, cell.p1, alpha) * (cell.p1 - cell.p0)


def table(summaries: list[Summary]) -> str:
    rows = [
        "| cell | judge | excess bad (mean) | excess bad (p95) | rollback rate | promoted | time to promote "
        "(median / mean) | floor |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summaries, key=lambda s: (GRID.index(s.cell) if s.cell in GRID else 0, s.judge)):
        fl = floor(s.cell)
        promote = "-"
        if s.promote_s is not None and s.promote_median_s is not None:
            promote = f"{s.promote_median_s / 60:.1f} / {s.promote_s / 60:.1f} min"
        undecided = f" ({s.undecided} undecided)" if s.undecided else ""
        rows.append(
            f"| {s.cell.name} | {s.judge} | {s.excess_mean:.1f} | {s.excess_p95:.1f} | "
            f"{100 * s.rollback_rate:.1f}%{undecided} | {100 * s.promote_rate:.1f}% | {promote} | "
            f"{'-' if fl is None else f'{fl:.1f}'} |"
        )
    return "\n".join(rows)


# -- plots (plain SVG, no plotting library) -------------------------------------------------------------

COLOURS = {"threshold": "#c0504d", "sequential": "#4f81bd", "early": "#9bbb59", "floor": "#555555"}


def _svg(width: int, height: int, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
        f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n"
    )


def excess_svg(summaries: list[Summary]) -> str:
    """Mean excess bad requests per bad cell, both judges and the floor, on a log scale."""
    cells = [c for c in GRID if not c.good]
    by = {(s.cell, s.judge): s for s in summaries}
    left, top, plot_w, plot_h = 70, 40, 640, 260
    lo, hi = 1.0, 1000.0

    def y(v: float) -> float:
        v = min(max(v, lo), hi)
        return top + plot_h * (1 - math.log10(v / lo) / math.log10(hi / lo))

    body = [
        f'<text x="{left}" y="20" font-size="14">Excess bad requests before rollback (mean, log scale)</text>'
    ]
    for tick_v in (1, 10, 100, 1000):
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(tick_v):.1f}" y2="{y(tick_v):.1f}" stroke="#ddd"/>'
        )
        body.append(f'<text x="{left - 8}" y="{y(tick_v) + 4:.1f}" text-anchor="end">{tick_v}</text>')
    slot = plot_w / len(cells)
    for i, cell in enumerate(cells):
        x0 = left + i * slot + slot * 0.1
        bar = slot * 0.8 / len(JUDGES)
        for j, judge in enumerate(JUDGES):
            s = by.get((cell, judge))
            if s is None:
                continue
            v = max(s.excess_mean, lo)
            body.append(
                f'<rect x="{x0 + j * bar:.1f}" y="{y(v):.1f}" width="{bar - 2:.1f}" '
                f'height="{top + plot_h - y(v):.1f}" fill="{COLOURS[judge]}"/>'
            )
            body.append(
                f'<text x="{x0 + j * bar + bar / 2:.1f}" y="{y(v) - 4:.1f}" text-anchor="middle" font-size="10">{s.excess_mean:.0f}</text>'
            )
        fl = floor(cell)
        if fl is not None:
            body.append(
                f'<line x1="{x0 - 4:.1f}" x2="{x0 + len(JUDGES) * bar + 2:.1f}" y1="{y(fl):.1f}" y2="{y(fl):.1f}" '
                f'stroke="{COLOURS["floor"]}" stroke-dasharray="4 2" stroke-width="2"/>'
            )
        label = cell.name.replace("p0 ", "").replace(", ", " / ")
        body.append(
            f'<text x="{x0 + len(JUDGES) * bar / 2:.1f}" y="{top + plot_h + 16}" text-anchor="middle" font-size="11">{label}</text>'
        )
    legend_y = top + plot_h + 40
    for k, (name, colour) in enumerate(
        (
            ("threshold judge", COLOURS["threshold"]),
            ("sequential judge", COLOURS["sequential"]),
            ("sequential, promoteEarly", COLOURS["early"]),
            ("floor (Wald SPRT)", COLOURS["floor"]),
        )
    ):
        body.append(
            f'<rect x="{left + k * 165}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>'
        )
        body.append(f'<text x="{left + k * 165 + 18}" y="{legend_y}">{name}</text>')
    return _svg(left + plot_w + 20, legend_y + 20, body)


def evidence_path(cell: Cell, seed: int, seconds: int, weight: int = 10) -> list[tuple[int, float, float]]:
    """log e-values (worse, not worse) of the error test, second by second, at a fixed canary weight."""
    rng = random.Random(seed)
    evidence = Evidence(sequential_settings(canary_spec("sequential")))
    primary, canary_group = Group(), Group()
    evidence.add(Counts(primary.counts(), canary_group.counts()))
    out = []
    for t in range(1, seconds + 1):
        n_c = binomial(rng, RATE, weight / 100)
        n_p = RATE - n_c
        empty = [0] * len(BOUNDS)
        canary_group.add(n_c, binomial(rng, n_c, cell.p1), [n_c, *empty[1:]])
        primary.add(n_p, binomial(rng, n_p, cell.p0), [n_p, *empty[1:]])
        evidence.add(Counts(primary.counts(), canary_group.counts()))
        out.append((t, evidence.errors.log_e_worse, evidence.errors.log_e_not_worse))
    return out


def evidence_svg() -> str:
    """How the evidence grows: a bad release (p1 = 10 p0) and a good one, at 10% of 100 requests/s."""
    settings = sequential_settings(canary_spec("sequential"))
    seconds = 240
    bad = evidence_path(GRID[2], 3, seconds)
    good = evidence_path(GRID[0], 3, seconds)
    left, top, plot_w, plot_h = 60, 40, 620, 260
    y_lo, y_hi = -4.0, 12.0

    def x(t: float) -> float:
        return left + plot_w * t / seconds

    def y(v: float) -> float:
        v = min(max(v, y_lo), y_hi)
        return top + plot_h * (1 - (v - y_lo) / (y_hi - y_lo))

    body = [
        f'<text x="{left}" y="20" font-size="14">Evidence (log e-value, errors) at 10% of 100 req/s, p0 = 0.5%</text>'
    ]
    for v in range(int(y_lo), int(y_hi) + 1, 2):
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for t in range(0, seconds + 1, 60):
        body.append(f'<text x="{x(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{t} s</text>')
    fail_at, pass_at = math.log(2 / settings.alpha), math.log(1 / settings.beta)
    for level, text, colour in (
        (fail_at, "roll back (2/alpha)", "#c0504d"),
        (pass_at, "pass (1/beta)", "#4f81bd"),
    ):
        body.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(level):.1f}" y2="{y(level):.1f}" stroke="{colour}" stroke-dasharray="5 3"/>'
        )
        body.append(
            f'<text x="{left + plot_w - 4}" y="{y(level) - 4:.1f}" text-anchor="end" fill="{colour}">{text}</text>'
        )
    lines = (
        (bad, True, "#c0504d", "bad release (p1 = 5%): e(worse)"),
        (good, True, "#e6a5a3", "good release: e(worse)"),
        (good, False, "#4f81bd", "good release: e(not worse)"),
    )
    for k, (path, worse, colour, label) in enumerate(lines):
        points = " ".join(f"{x(t):.1f},{y(lw if worse else lp):.1f}" for t, lw, lp in path)
        body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        body.append(f'<text x="{left + 8}" y="{top + 16 + 16 * k}" fill="{colour}">{label}</text>')
    return _svg(left + plot_w + 20, top + plot_h + 30, body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=500)
    parser.add_argument("--plots", type=Path, default=None, help="write the SVG plots into this folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summaries = measure(seeds=args.seeds)
    print(f"{args.seeds} seeds per cell, every judge, {time.perf_counter() - started:.0f} s\n")
    print(table(summaries))
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
        (args.plots / "analysis_excess.svg").write_text(excess_svg(summaries))
        (args.plots / "sequential_evidence.svg").write_text(evidence_svg())
        print(f"\nplots written to {args.plots}")


if __name__ == "__main__":
    main()
