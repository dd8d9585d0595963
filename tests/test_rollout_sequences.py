"""The weight sequences and phase orders pinned by the issue, through `rheostat simulate` and the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.rollout.simulate import simulate
from tests.harness import Harness, canary_yaml


def primary_weights(analysis: str) -> tuple[list[int], list[str]]:
    import asyncio

    sim = asyncio.run(simulate(canary_yaml(analysis)))
    return [r.primary for r in sim.rows], [r.phase for r in sim.rows]


@pytest.mark.parametrize(
    ("analysis", "progressing"),
    [
        ("{interval: 10s, stepWeight: 20, maxWeight: 50}", [100, 80, 60, 40]),
        ("{interval: 10s, stepWeight: 50, maxWeight: 100}", [100, 50, 0]),
        ("{interval: 10s, stepWeights: [1, 2, 10, 80]}", [100, 99, 98, 90, 20]),
        ("{interval: 10s, stepWeights: [1, 2, 10, 200]}", [100, 99, 98, 90, 0]),
    ],
)
def test_primary_weight_per_tick_then_promotion(analysis: str, progressing: list[int]) -> None:
    weights, phases = primary_weights(analysis)
    n = len(progressing)
    assert weights[:n] == progressing
    assert phases[:n] == ["Progressing"] * n
    assert phases[n:] == ["Promoting", "Finalising", "Succeeded"]
    assert weights[-2:] == [100, 100]


async def test_step_weight_promotion_shifts_back_in_steps() -> None:
    h = Harness(canary_yaml("{interval: 10s, stepWeight: 100, stepWeightPromotion: 50}"))
    await h.initialized()
    seen = []
    for _ in range(6):
        await h.tick()
        seen.append((h.state().phase.value, h.state().canary_weight))
    assert seen == [
        ("Progressing", 0),
        ("Progressing", 100),
        ("Promoting", 100),
        ("Promoting", 50),
        ("Finalising", 0),
        ("Succeeded", 0),
    ]
    assert h.platform.workloads[h.target].promotions == 1


def test_simulate_cli_prints_ticks_and_shortest_promotion(tmp_path: Path) -> None:
    f = tmp_path / "canary.yaml"
    f.write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}\n"
        "  service: {port: 8080}\n  analysis:\n    interval: 1m\n    threshold: 2\n    stepWeight: 20\n"
        "    maxWeight: 50\n    metrics: [{name: request-success-rate, thresholdRange: {min: 99}}]\n"
    )
    res = CliRunner().invoke(cli, ["simulate", str(f), "-o", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert [t["primaryWeight"] for t in data["ticks"]][:4] == [100, 80, 60, 40]
    assert data["outcome"] == "Succeeded"
    assert data["shortestPromotionSeconds"] == 6 * 60  # 7 ticks, one minute apart

    res = CliRunner().invoke(cli, ["simulate", str(f), "-o", "json", "--fail-from", "3"])
    data = json.loads(res.output)
    assert data["outcome"] == "Failed"
    last = data["ticks"][-1]
    assert (last["tick"], last["primaryWeight"], last["failedChecks"]) == (4, 100, 2)
    assert data["shortestPromotionSeconds"] == 360  # of the passing schedule

    res = CliRunner().invoke(cli, ["simulate", str(f)])
    assert res.exit_code == 0
    assert "shortest time to promotion: 6m" in res.output


def test_simulate_rejects_a_bad_canary_naming_file_and_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  service: {port: 8080}\n"
        "  analysis: {interval: 1m, stepWeight: 60, maxWeight: 50}\n"
    )
    res = CliRunner().invoke(cli, ["simulate", str(f)])
    assert res.exit_code == 2
    assert str(f) in res.output and "Canary prod/web" in res.output
    assert "spec.analysis" in res.output and "stepWeight" in res.output


def test_simulate_reports_malformed_yaml_with_line(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("apiVersion: flagger.app/v1beta1\nkind: Canary\nspec: [unclosed\n")
    res = CliRunner().invoke(cli, ["simulate", str(f)])
    assert res.exit_code == 2
    assert "malformed YAML" in res.output and "line" in res.output


def test_simulate_runs_canaries_with_metric_templates(tmp_path: Path) -> None:
    f = tmp_path / "canary.yaml"
    f.write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  service: {port: 8080}\n"
        "  analysis:\n    interval: 30s\n    stepWeight: 50\n    metrics:\n"
        "    - {name: latency, templateRef: {name: latency}, thresholdRange: {max: 500}}\n"
    )
    res = CliRunner().invoke(cli, ["simulate", str(f), "-o", "json"])
    assert json.loads(res.output)["outcome"] == "Succeeded"
    res = CliRunner().invoke(cli, ["simulate", str(f), "-o", "json", "--fail-from", "2"])
    assert json.loads(res.output)["outcome"] == "Failed"
