"""The analysis harness on a small seed count: the sequential judge must beat the threshold judge where the
issue says it must, and must not roll back good releases more often than alpha allows. (`make bench` runs the
same harness on 500 seeds; docs/benchmarks.md has the figures.)"""

from __future__ import annotations

from bench.analysis_harness import GRID, Summary, floor, measure

SEEDS = 30


def test_sequential_judge_catches_bad_releases_with_fewer_bad_requests_and_spares_good_ones() -> None:
    # seeds apart from the benchmark's; the early-promotion column has its own test (test_promote_early.py)
    summaries = measure(seeds=SEEDS, first_seed=10_000, judges=("threshold", "sequential"))
    by: dict[tuple[str, str], Summary] = {(s.cell.name, s.judge): s for s in summaries}
    for cell in GRID:
        seq, thr = by[(cell.name, "sequential")], by[(cell.name, "threshold")]
        assert seq.undecided == 0, cell
        if cell.good:
            assert seq.rollback_rate * SEEDS <= 1, f"{cell.name}: false rollbacks {seq.rollback_rate:.0%}"
            assert seq.promote_s is not None and thr.promote_s is not None
            assert seq.promote_s <= thr.promote_s + 30, f"{cell.name}: promoted slower"
            continue
        assert seq.rollback_rate == 1.0, cell
        assert seq.excess_mean <= thr.excess_mean, f"{cell.name}: more excess bad requests than thresholds"
        if cell.p1 >= 10 * cell.p0:
            fl = floor(cell)
            assert fl is not None
            assert seq.excess_mean * 10 <= thr.excess_mean, f"{cell.name}: not 10x fewer than thresholds"
            assert seq.excess_mean <= 3 * fl, f"{cell.name}: {seq.excess_mean:.1f} > 3 x floor {fl:.1f}"
    # Flagger's 99% success-rate threshold against a 1% baseline: good releases are rolled back (the issue).
    assert by[("p0 1%, good", "threshold")].rollback_rate > 0.2
