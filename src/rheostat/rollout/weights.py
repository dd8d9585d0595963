"""Weight arithmetic of the weighted canary strategy (Flagger's nextStepWeight, caps included)."""

from __future__ import annotations

from rheostat.model.canary import Analysis


def next_step_weight(a: Analysis, weight: int) -> int:
    """How much the canary weight grows from `weight` in one step; never past 100."""
    if a.stepWeight is not None:
        return min(a.stepWeight, 100 - weight)
    for w in a.stepWeights or ():
        if weight < w:
            return min(w, 100) - weight
    return 0


def schedule(a: Analysis) -> list[int]:
    """Canary weights a passing run goes through, from the first step to the one that triggers promotion."""
    out: list[int] = []
    weight = 0
    while weight < a.max_weight:
        step = next_step_weight(a, weight)
        if step <= 0:
            break
        weight += step
        out.append(weight)
    return out
