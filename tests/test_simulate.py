"""`rheostat simulate FILE`: a Canary on in-memory fakes, tick by tick, for Workload and flag targets alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rheostat.cli.main import cli

ANALYSIS = """  analysis:
    interval: 10s
    threshold: 2
    stepWeight: 25
    maxWeight: 50
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
"""

TARGETS = {
    "Workload": "  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}\n"
    "  service: {port: 9898}\n",
    "FeatureFlag": "  targetRef: {apiVersion: core.openfeature.dev/v1beta1, kind: FeatureFlag, name: checkout}\n"
    "  flag: {key: new-checkout}\n",
    "FlagSet": "  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: FlagSet, name: checkout}\n"
    "  flag: {key: new-checkout}\n",
}


def canary_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind.lower()}.yaml"
    path.write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: shop}\nspec:\n"
        + TARGETS[kind]
        + ANALYSIS
    )
    return path


def simulate(path: Path, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["simulate", str(path), "-o", "json", *args])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def steps(doc: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(t["phase"], t["primaryWeight"], t["canaryWeight"]) for t in doc["ticks"]]


@pytest.mark.parametrize("kind", ["FeatureFlag", "FlagSet"])
def test_a_flag_canary_is_simulated_tick_by_tick_like_a_workload_canary(tmp_path: Path, kind: str) -> None:
    flag = simulate(canary_file(tmp_path, kind))
    workload = simulate(canary_file(tmp_path, "Workload"))
    assert flag["outcome"] == "Succeeded" and flag["shortestPromotionSeconds"] == 50.0
    assert steps(flag) == [
        ("Progressing", 100, 0),
        ("Progressing", 75, 25),
        ("Progressing", 50, 50),
        ("Promoting", 50, 50),
        ("Finalising", 100, 0),
        ("Succeeded", 100, 0),
    ]
    assert steps(flag) == steps(workload)


def test_a_failing_flag_canary_is_rolled_back_at_the_threshold(tmp_path: Path) -> None:
    doc = simulate(canary_file(tmp_path, "FeatureFlag"), "--fail-from", "2")
    assert doc["outcome"] == "Failed"
    last = doc["ticks"][-1]
    assert last["failedChecks"] == 2 and (last["primaryWeight"], last["canaryWeight"]) == (100, 0)
    assert "request-success-rate" in last["message"]


def test_the_table_shows_each_tick_of_a_flag_canary(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["simulate", str(canary_file(tmp_path, "FeatureFlag"))])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "Advance web canary weight 25" in result.output and "outcome: Succeeded" in result.output
