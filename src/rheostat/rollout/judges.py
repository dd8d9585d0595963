"""Judges turn the metric values of one analysis into a verdict. The threshold judge is Flagger's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from rheostat.model.canary import Metric
from rheostat.plugins.registry import Registry
from rheostat.rollout.sequential import Assessment
from rheostat.rollout.types import CheckOutcome, MetricValue, Verdict

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN = (SUCCESS_RATE, DURATION)


@dataclass(frozen=True)
class Sample:
    """One measured metric: its declaration, and its value or why there is none."""

    metric: Metric
    value: float | None
    error: str = ""
    primary: float | None = None  # shown beside the canary's value; the threshold judge does not use it
    no_data: bool = False  # the query found nothing (no traffic yet), as opposed to an error


class Judge(Protocol):
    def verdict(self, samples: Sequence[Sample]) -> CheckOutcome: ...


def bounds(metric: Metric) -> tuple[float | None, float | None]:
    """thresholdRange, or the deprecated `threshold`: a minimum for success rate, a maximum otherwise."""
    if metric.thresholdRange is not None:
        return metric.thresholdRange.min, metric.thresholdRange.max
    if metric.threshold is not None:
        return (metric.threshold, None) if metric.name == SUCCESS_RATE else (None, metric.threshold)
    return None, None


class ThresholdJudge:
    """Every metric within its range passes; no data, NaN or an error fails, never passes."""

    def verdict(self, samples: Sequence[Sample]) -> CheckOutcome:
        values: list[MetricValue] = []
        failures: list[str] = []
        only_no_data = True
        for s in samples:
            lo, hi = bounds(s.metric)
            v = MetricValue(s.metric.name, s.value, lo, hi, primary=s.primary)
            if s.value is None or not math.isfinite(s.value):
                why = s.error or ("no values found" if s.value is None else f"the value is {s.value}")
                failures.append(f"metric {s.metric.name}: {why}")
                values.append(replace(v, value=None, message=why, no_data=s.no_data))
                only_no_data = only_no_data and s.no_data
                continue
            if lo is not None and s.value < lo:
                failures.append(f"metric {s.metric.name} {s.value:.4g} < {lo:g}")
                only_no_data = False
            elif hi is not None and s.value > hi:
                failures.append(f"metric {s.metric.name} {s.value:.4g} > {hi:g}")
                only_no_data = False
            else:
                v = replace(v, ok=True)
            values.append(v)
        return CheckOutcome(
            not failures, "; ".join(failures), tuple(values), no_data=bool(failures) and only_no_data
        )


class SequentialJudge:
    """Canary against primary, for errors and latency, from the evidence of the whole run so far.

    The builtin metrics (request-success-rate, request-duration) are replaced by the sequential comparison;
    any other metric is judged by its threshold, as the threshold judge does. A conclusive regression is a
    Verdict.FAIL (roll back now); no evidence at all (the count source is down) is an ordinary failed check,
    never a pass.
    """

    def __init__(self, assessment: Assessment | None = None, error: str = "") -> None:
        self.assessment = assessment
        self.error = error

    def verdict(self, samples: Sequence[Sample]) -> CheckOutcome:
        others = ThresholdJudge().verdict([s for s in samples if s.metric.name not in BUILTIN])
        a = self.assessment
        if a is None:
            why = self.error or "no evidence"
            failures = "; ".join(m for m in (others.message,) if m)
            message = f"sequential judge: {why}" + (f"; {failures}" if failures else "")
            return CheckOutcome(False, message, others.metrics)
        metrics = others.metrics + a.metrics
        if a.verdict is Verdict.FAIL:
            return CheckOutcome(False, a.message, metrics, Verdict.FAIL)
        if not others.ok:
            return CheckOutcome(False, others.message, metrics, no_data=others.no_data)
        return CheckOutcome(True, a.message, metrics, a.verdict)


JUDGES: Registry[Judge] = Registry("judge")
JUDGES.register("threshold", ThresholdJudge)
JUDGES.register("sequential", SequentialJudge)
