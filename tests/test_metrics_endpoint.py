"""`/metrics` of a running controller: Flagger's families under `rheostat_`, valid for Prometheus' own checker."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from rheostat import __version__
from rheostat.rollout.types import Phase
from rheostat.server.metrics import Histogram, escape, status_code
from tests.conftest import in_ci
from tests.rig import Rig, canary, workload

ANALYSIS = "interval: 500ms\nthreshold: 2\nstepWeight: 50\nmaxWeight: 50"


def values(text: str, name: str) -> dict[str, float]:
    """{labels: value} of one metric name."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(\{{.*\}})? (\S+)", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def promtool_check(text: str) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        if in_ci():
            pytest.fail("CI=true but promtool (Debian package prometheus) is missing")
        pytest.skip("promtool not installed (Debian package prometheus)")
    out = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, check=False)
    # Lint remarks (a counter's name, units) come with exit 3; a format error is exit 1.
    assert out.returncode in (0, 3) and "error" not in out.stderr.lower(), out.stderr + out.stdout


def test_text_format_pieces() -> None:
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert [status_code(p) for p in ("Progressing", "Failed", "Succeeded", "WaitingPromotion")] == [
        0,
        2,
        1,
        1,
    ]
    hist = Histogram(buckets=(0.1, 1.0))
    labels = (("name", "x"),)
    for seconds in (0.05, 0.5, 5.0):
        hist.observe(labels, seconds)
    lines = list(hist.lines("h"))
    assert lines == [
        'h_bucket{name="x",le="0.1"} 1',
        'h_bucket{name="x",le="1"} 2',
        'h_bucket{name="x",le="+Inf"} 3',
        'h_sum{name="x"} 5.55',
        'h_count{name="x"} 3',
    ]


async def test_metrics_of_a_promoted_canary(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.commit(workload("8.0.0"), canary(rig.port, ANALYSIS), message="first")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        async with httpx.AsyncClient(base_url=rig.api, timeout=10) as api:
            first = await api.get("/metrics")
            assert first.status_code == 200
            assert first.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = first.text
            promtool_check(text)
            assert values(text, "rheostat_canary_total") == {'{namespace="e2e"}': 1}
            ident = '{name="web",namespace="e2e"}'
            assert values(text, "rheostat_canary_status") == {ident: 1}
            weights = values(text, "rheostat_canary_weight")
            assert weights == {
                '{workload="web-primary",namespace="e2e"}': 100,
                '{workload="web",namespace="e2e"}': 0,
            }
            assert (
                values(text, "rheostat_canary_phase")['{name="web",namespace="e2e",phase="Initialized"}'] == 1
            )

            rig.commit(workload("8.0.1"), canary(rig.port, ANALYSIS), message="8.0.1")
            await rig.wait_for("weight", lambda: rig.status().canary_weight == 50)
            running = (await api.get("/metrics")).text
            assert values(running, "rheostat_canary_status") == {ident: 0}
            assert values(running, "rheostat_canary_weight")['{workload="web",namespace="e2e"}'] == 50
            await rig.wait(Phase.SUCCEEDED)
            done = (await api.get("/metrics")).text
            promtool_check(done)
            succeeded = values(done, "rheostat_canary_successes_total")
            labels = '{name="web",namespace="e2e",deployment_strategy="canary",analysis_status="completed"}'
            assert succeeded == {labels: 1}
            assert values(done, "rheostat_canary_failures_total") == {}
            ticks = values(done, "rheostat_canary_duration_seconds_count")
            assert ticks[ident] >= 3
            assert values(done, "rheostat_reconcile_duration_seconds_count")['{kind="gitops"}'] >= 1
            assert values(done, "rheostat_info") == {f'{{version="{__version__}",router="envoy"}}': 1}
    finally:
        await rig.stop()
