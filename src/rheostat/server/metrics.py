"""`GET /metrics`: the controller's own metrics in Prometheus' text format (0.0.4), after Flagger's.

| Flagger | here |
| --- | --- |
| `flagger_info{version,mesh_provider}` | `rheostat_info{version,router}` |
| `flagger_canary_total{namespace}` | `rheostat_canary_total{namespace}` |
| `flagger_canary_status{name,namespace}` (0 Progressing, 2 Failed, 1 else) | `rheostat_canary_status` (same) |
| `flagger_canary_weight{workload,namespace}` | `rheostat_canary_weight{workload,namespace}` |
| `flagger_canary_metric_analysis{name,namespace,metric}` | `rheostat_canary_metric_analysis` (newest value) |
| `flagger_canary_successes_total` / `_failures_total` | same names under `rheostat_`, same labels |
| `flagger_canary_duration_seconds` (per tick) | `rheostat_canary_duration_seconds` |

Ours besides: `rheostat_canary_phase` (1 for the phase the canary is in), `rheostat_canary_failed_checks`,
`rheostat_canary_metric_threshold{bound=min|max}`, `rheostat_reconcile_duration_seconds` (one GitOps
pass) and `rheostat_policy_violations{policy,action,kind}` (findings the policy gate and audit hold now).

Everything but the durations and the success/failure counters is read from the store at scrape time. The
counters are the engine's own (since this process started, as a Prometheus counter should be); the
durations are measured by wrapping `Engine.tick` and `GitOps.reconcile_once` of this controller.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from rheostat import __version__
from rheostat.reactor.controller import Controller
from rheostat.rollout.engine import CANARY, target_of
from rheostat.rollout.types import CanaryStatus, Phase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Prometheus' default buckets, which Flagger's duration histogram uses too.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
VIOLATIONS = "Violations"  # the policy gate's state kind (one row per owner)
Labels = tuple[tuple[str, str], ...]
T = TypeVar("T")


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def sample(name: str, labels: Labels, value: float) -> str:
    inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
    return f"{name}{{{inner}}} {number(value)}" if inner else f"{name} {number(value)}"


@dataclass
class Histogram:
    """Cumulative buckets per label set."""

    buckets: tuple[float, ...] = BUCKETS
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=dict)

    def observe(self, labels: Labels, seconds: float) -> None:
        counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
        for i, bound in enumerate(self.buckets):
            if seconds <= bound:
                counts[i] += 1
        counts[-1] += 1
        self.sums[labels] = self.sums.get(labels, 0.0) + seconds

    def lines(self, name: str) -> Iterable[str]:
        for labels in sorted(self.counts):
            counts = self.counts[labels]
            for bound, n in zip(self.buckets, counts, strict=False):
                yield sample(f"{name}_bucket", (*labels, ("le", number(bound))), n)
            yield sample(f"{name}_bucket", (*labels, ("le", "+Inf")), counts[-1])
            yield sample(f"{name}_sum", labels, self.sums[labels])
            yield sample(f"{name}_count", labels, counts[-1])


class Family:
    """One metric family being written: HELP and TYPE once, then its samples."""

    def __init__(self, out: list[str], name: str, kind: str, help: str) -> None:
        self.name = name
        out.append(f"# HELP {name} {help}")
        out.append(f"# TYPE {name} {kind}")
        self.out = out

    def add(self, labels: Labels, value: float) -> None:
        self.out.append(sample(self.name, labels, value))


def status_code(phase: str) -> int:
    """Flagger's gauge: 0 while Progressing, 2 when Failed, 1 otherwise."""
    return {Phase.PROGRESSING.value: 0, Phase.FAILED.value: 2}.get(phase, 1)


class ControllerMetrics:
    """Scrape-time view of one controller, plus the durations it measures itself."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.tick_durations = Histogram()
        self.reconcile_durations = Histogram()
        self._instrument()

    def _instrument(self) -> None:
        engine, gitops = self.ctl.engine, self.ctl.gitops

        def timed(fn: Callable[..., Awaitable[T]], hist: Histogram, labels: Callable[..., Labels]) -> Any:
            @functools.wraps(fn)
            async def wrapper(*args: Any, **kwargs: Any) -> T:
                started = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    hist.observe(labels(*args, **kwargs), time.perf_counter() - started)

            return wrapper

        def tick_labels(key: str, *_: Any, **__: Any) -> Labels:
            namespace, _sep, name = key.partition("/")
            return (("name", name), ("namespace", namespace))

        # Instance attributes shadow the methods: every caller (scheduler, gitops loop, API) goes through them.
        engine.tick = timed(engine.tick, self.tick_durations, tick_labels)  # type: ignore[method-assign]
        gitops.reconcile_once = timed(  # type: ignore[method-assign]
            gitops.reconcile_once, self.reconcile_durations, lambda *a, **k: (("kind", "gitops"),)
        )

    def render(self) -> str:
        ctl = self.ctl
        out: list[str] = []
        canaries = ctl.canaries()
        cluster = ctl.settings.cluster
        router = (
            cluster.mesh_provider if cluster is not None else "envoy"
        )  # the default provider, as Flagger's
        Family(out, "rheostat_info", "gauge", "Rheostat version and default router.").add(
            (("version", __version__), ("router", router)), 1
        )

        total = Family(out, "rheostat_canary_total", "gauge", "Canaries, by namespace.")
        for ns, n in sorted(Counter(c.metadata.namespace for c in canaries).items()):
            total.add((("namespace", ns),), n)

        # One query for every canary's status and newest history row (a read each was most of a scrape).
        stored = {r.key: r for r in ctl.store.canary_rows(CANARY)}
        statuses: dict[str, CanaryStatus] = {}
        last_rows: dict[str, dict[str, Any]] = {}
        for c in canaries:
            kept = stored.get(c.metadata.key)
            statuses[c.metadata.key] = (
                CanaryStatus.from_json(json.loads(kept.status)) if kept and kept.status else CanaryStatus()
            )
            last_rows[c.metadata.key] = json.loads(kept.history) if kept and kept.history else {}

        def ident(c: Any) -> Labels:
            return (("name", c.metadata.name), ("namespace", c.metadata.namespace))

        status = Family(
            out, "rheostat_canary_status", "gauge", "Canary status: 0 Progressing, 1 other phases, 2 Failed."
        )
        for c in canaries:
            status.add(ident(c), status_code(statuses[c.metadata.key].phase.value))

        phase = Family(out, "rheostat_canary_phase", "gauge", "1 for the phase the canary is in.")
        for c in canaries:
            current = statuses[c.metadata.key].phase.value
            for p in Phase:
                phase.add((*ident(c), ("phase", p.value)), int(p.value == current))

        weight = Family(
            out, "rheostat_canary_weight", "gauge", "Traffic weight in force, per workload group (percent)."
        )
        for c in canaries:
            st, row = statuses[c.metadata.key], last_rows[c.metadata.key]
            canary_w = int(row.get("canaryWeight", st.canary_weight))
            primary_w = int(row.get("primaryWeight", 100 - canary_w))
            name, ns = target_of(c).split("/")[1], c.metadata.namespace
            weight.add((("workload", f"{name}-primary"), ("namespace", ns)), primary_w)
            weight.add((("workload", name), ("namespace", ns)), canary_w)

        failed = Family(out, "rheostat_canary_failed_checks", "gauge", "Failed checks of the current run.")
        for c in canaries:
            failed.add(ident(c), statuses[c.metadata.key].failed_checks)

        analysis = Family(
            out, "rheostat_canary_metric_analysis", "gauge", "Newest value of each analysis metric."
        )
        threshold_lines: list[tuple[Labels, float]] = []
        for c in canaries:
            for m in last_rows[c.metadata.key].get("metrics", []):
                labels = (*ident(c), ("metric", str(m.get("name", ""))))
                if m.get("value") is not None:
                    analysis.add(labels, float(m["value"]))
                for bound in ("min", "max"):
                    if m.get(bound) is not None:
                        threshold_lines.append(((*labels, ("bound", bound)), float(m[bound])))
        thresholds = Family(
            out, "rheostat_canary_metric_threshold", "gauge", "Threshold range of each analysis metric."
        )
        for labels, value in threshold_lines:
            thresholds.add(labels, value)

        strategies: dict[str, str] = {str(c.metadata.key): c.strategy.value for c in canaries}
        for metric, outcomes, what in (
            ("rheostat_canary_successes_total", ("completed", "skipped"), "Runs that promoted the canary."),
            ("rheostat_canary_failures_total", ("failed",), "Runs that rolled the canary back."),
        ):
            family = Family(out, metric, "counter", what)
            for (key, outcome), n in sorted(ctl.engine.counters.items()):
                if outcome in outcomes:
                    ns, _, name = key.partition("/")
                    labels = (
                        ("name", name),
                        ("namespace", ns),
                        ("deployment_strategy", strategies.get(key, "")),
                        ("analysis_status", outcome),
                    )
                    family.add(labels, n)

        Family(out, "rheostat_canary_duration_seconds", "histogram", "Duration of one canary tick.")
        out.extend(self.tick_durations.lines("rheostat_canary_duration_seconds"))
        Family(out, "rheostat_reconcile_duration_seconds", "histogram", "Duration of one GitOps pass.")
        out.extend(self.reconcile_durations.lines("rheostat_reconcile_duration_seconds"))

        found: Counter[Labels] = Counter()
        for state in ctl.store.list_states(VIOLATIONS).values():
            for f in state.get("items", []):
                found[
                    (
                        ("policy", str(f.get("policy", ""))),
                        ("action", str(f.get("action", ""))),
                        ("kind", str(f.get("kind", "violation"))),
                    )
                ] += 1
        violations = Family(
            out, "rheostat_policy_violations", "gauge", "Policy findings held now, by policy and action."
        )
        for labels, n in sorted(found.items()):
            violations.add(labels, n)
        return "\n".join(out) + "\n"

    async def endpoint(self, _: Request) -> Response:
        return Response(self.render(), media_type=CONTENT_TYPE)


__all__ = ["CONTENT_TYPE", "ControllerMetrics", "Histogram", "escape", "status_code"]
