"""A CanaryStatus as a Canary's `status` subresource, with Flagger's field names, and back.

Flagger's CRD prunes fields it does not declare, so what Flagger has no field for (the run's start, whether
the canary is mirrored, the "waiting" alert sent) travels in one condition of our own, `RheostatRun`, whose
message is JSON. The tick counter is left out: a status at rest is written once, not every tick.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rheostat.rollout.types import AT_REST, CanaryStatus, Phase

RUN_CONDITION = "RheostatRun"
TICK_CONDITION = "RheostatTick"


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _seconds(text: object) -> float:
    if not isinstance(text, str) or not text:
        return 0.0
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _promoted(status: CanaryStatus) -> tuple[str, str]:
    """Flagger's `Promoted` condition: (status, reason)."""
    if status.phase in (Phase.INITIALIZED, Phase.SUCCEEDED):
        return "True", status.phase.value
    if status.phase is Phase.FAILED:
        return "False", "Failed"
    if status.phase in (Phase.INITIALIZING, Phase.WAITING):
        return "Unknown", status.phase.value
    return "Unknown", "Progressing"


def to_flagger(
    status: CanaryStatus,
    *,
    failure: str | None = None,
    sticky: bool = False,
    tracked: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The status subresource. `failure`: the last tick failed with this message (a 403, a missing CRD).
    `sticky`: the Canary has session affinity (else no cookie is reported; None removes it in a merge patch).
    `tracked`: the target's tracked ConfigMaps and Secrets with their checksums (Flagger's trackedConfigs)."""
    when = rfc3339(status.last_transition_time) if status.last_transition_time else rfc3339(0)
    promoted, reason = _promoted(status)
    run = {
        "mirrored": status.mirrored,
        "runStarted": status.run_started,
        "waitingAlerted": status.waiting_alerted,
        "lastTransitionTime": status.last_transition_time,
    }
    conditions = [
        {
            "type": "Promoted",
            "status": promoted,
            "reason": reason,
            "message": status.message or _default_message(status),
            "lastTransitionTime": when,
            "lastUpdateTime": when,
        },
        {
            "type": RUN_CONDITION,
            "status": "True" if status.phase not in AT_REST else "False",
            "reason": "Running" if status.phase not in AT_REST else "AtRest",
            "message": json.dumps(run, sort_keys=True),
        },
        {
            "type": TICK_CONDITION,
            "status": "False" if failure else "True",
            "reason": "TickFailed" if failure else "Ticking",
            "message": failure or "",
        },
    ]
    out: dict[str, Any] = {
        "phase": status.phase.value,
        "canaryWeight": status.canary_weight,
        "failedChecks": status.failed_checks,
        "iterations": status.iterations,
        "lastAppliedSpec": status.last_applied_spec,
        "lastPromotedSpec": status.last_promoted_spec,
        "lastTransitionTime": when,
        "conditions": conditions,
    }
    out["sessionAffinityCookie"] = status.session_cookie if sticky and status.session_cookie else None
    out["trackedConfigs"] = dict(tracked) if tracked else None
    return out


def _default_message(status: CanaryStatus) -> str:
    return {
        Phase.INITIALIZED: "Deployment initialization completed.",
        Phase.SUCCEEDED: "Canary analysis completed successfully, promotion finished.",
        Phase.FAILED: "Canary analysis failed, Deployment scaled to zero.",
    }.get(status.phase, "New revision detected, progressing canary analysis.")


def from_flagger(data: dict[str, Any]) -> CanaryStatus | None:
    """A status written by us (or by Flagger: its fields alone resume the run); None if it has no phase."""
    phase = data.get("phase")
    if not phase or phase not in Phase.__members__.values():
        return None
    conditions = {c.get("type"): c for c in data.get("conditions") or [] if isinstance(c, dict)}
    run: dict[str, Any] = {}
    if RUN_CONDITION in conditions:
        try:
            run = dict(json.loads(conditions[RUN_CONDITION].get("message") or "{}"))
        except (TypeError, ValueError):
            run = {}
    promoted = conditions.get("Promoted", {})

    def num(key: str) -> int:
        value = data.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    return CanaryStatus(
        phase=Phase(phase),
        canary_weight=num("canaryWeight"),
        failed_checks=num("failedChecks"),
        iterations=num("iterations"),
        mirrored=bool(run.get("mirrored", False)),
        last_applied_spec=str(data.get("lastAppliedSpec", "")),
        last_promoted_spec=str(data.get("lastPromotedSpec", "")),
        last_transition_time=float(run.get("lastTransitionTime") or _seconds(data.get("lastTransitionTime"))),
        message=str(promoted.get("message", "")),
        waiting_alerted=bool(run.get("waitingAlerted", False)),
        session_cookie=str(data.get("sessionAffinityCookie", "")),
        run_started=float(run.get("runStarted", 0.0)),
    )
