"""Judges turn the metric values of one analysis into a verdict. The threshold judge is Flagger's."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from rheostat.model.canary import Metric
from rheostat.plugins.registry import Registry
from rheostat.rollout.types import CheckOutcome, MetricValue

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN = (SUCCESS_RATE, DURATION)


@dataclass(frozen=True)
class Sample:
    """One measured metric: its declaration, and its value or why there is none."""

    metric: Metric
    value: float | None
    error: str = ""


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
        for s in samples:
            lo, hi = bounds(s.metric)
            v = MetricValue(s.metric.name, s.value, lo, hi)
            if s.value is None or math.isnan(s.value):
                why = s.error or "no values found"
                failures.append(f"metric {s.metric.name}: {why}")
                values.append(replace(v, value=None, message=why))
                continue
            if lo is not None and s.value < lo:
                failures.append(f"metric {s.metric.name} {s.value:.4g} < {lo:g}")
            elif hi is not None and s.value > hi:
                failures.append(f"metric {s.metric.name} {s.value:.4g} > {hi:g}")
            else:
                v = replace(v, ok=True)
            values.append(v)
        return CheckOutcome(not failures, "; ".join(failures), tuple(values))


JUDGES: Registry[Judge] = Registry("judge")
JUDGES.register("threshold", ThresholdJudge)
