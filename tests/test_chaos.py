"""A few chaos trials in `make test`: the real `rheostat run` SIGKILLed mid-rollout, once per strategy.

Each invariant of docs/reliability.md is its own test over the same trials, so one that breaks never hides
the others. `make chaos` runs 100+ trials of the same harness (tests/chaos.py) and prints the figures.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos import Run, Trial, run_trial, session

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

# one trial per strategy; good and bad releases both; at most two kills each
PLAN = (("canary", False), ("bluegreen", True), ("ab", False), ("flag", False))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "17")))
    root = tmp_path_factory.mktemp("chaos")
    result = Run()
    for strategy, bad in PLAN:
        with session(strategy, Path(root) / strategy) as s:
            result.trials.append(run_trial(s, rng, max_kills=2, bad=bad))
        result.orphans += s.orphans
    print("\n" + result.table())
    return result


def broken(run: Run, name: str) -> list[str]:
    return [f"{t.strategy} {describe(t)}: {v[name]}" for t in run.trials if name in (v := t.violations())]


def describe(t: Trial) -> str:
    return f"{'bad' if t.release.bad else 'good'} {t.release.version}, {t.kills} kills, ended {t.phase}"


def test_every_trial_ran(run: Run) -> None:
    assert [t.kills > 0 for t in run.trials] == [True] * len(PLAN)
    assert broken(run, "error") == []


def test_it_settles_within_two_intervals_plus_the_rest_of_the_run(run: Run) -> None:
    assert broken(run, "stuck") == []
    assert broken(run, "settle bound") == []


def test_never_promoted_twice(run: Run) -> None:
    assert broken(run, "double promotion") == []


def test_a_bad_release_is_never_promoted_and_a_good_one_is(run: Run) -> None:
    assert broken(run, "bad promoted") == []
    assert broken(run, "good not promoted") == []


def test_the_right_version_is_served(run: Run) -> None:
    assert broken(run, "wrong version") == []


def test_the_store_and_envoy_agree(run: Run) -> None:
    assert broken(run, "store/Envoy") == []


def test_no_request_is_dropped_by_a_restart(run: Run) -> None:
    assert broken(run, "dropped") == []


def test_nothing_is_orphaned(run: Run) -> None:
    assert broken(run, "orphans") == []
    assert run.orphans == []
