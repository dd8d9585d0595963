"""kstatus-style conditions: Ready, Reconciling, Stalled (present only while True), with reasons."""

from __future__ import annotations

from typing import Any


def set_condition(
    state: dict[str, Any], type_: str, status: str, reason: str, message: str, now: float
) -> None:
    conditions: list[dict[str, Any]] = state.setdefault("conditions", [])
    for c in conditions:
        if c["type"] == type_:
            if (c["status"], c["reason"], c["message"]) != (status, reason, message):
                if c["status"] != status:
                    c["lastTransitionTime"] = now
                c.update(status=status, reason=reason, message=message)
            return
    conditions.append(
        {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": now}
    )


def drop_condition(state: dict[str, Any], type_: str) -> None:
    state["conditions"] = [c for c in state.get("conditions", []) if c["type"] != type_]


def condition(state: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in (state or {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return None


def is_ready(state: dict[str, Any] | None) -> bool:
    c = condition(state, "Ready")
    return c is not None and c["status"] == "True"


def ready(state: dict[str, Any], reason: str, message: str, now: float) -> None:
    set_condition(state, "Ready", "True", reason, message, now)
    drop_condition(state, "Reconciling")
    drop_condition(state, "Stalled")


def failed(state: dict[str, Any], reason: str, message: str, now: float, *, stalled: bool = False) -> None:
    """Ready=False; Stalled when retrying cannot help without a change, Reconciling (with retry) otherwise."""
    set_condition(state, "Ready", "False", reason, message, now)
    if stalled:
        set_condition(state, "Stalled", "True", reason, message, now)
        drop_condition(state, "Reconciling")
    else:
        set_condition(state, "Reconciling", "True", "ProgressingWithRetry", message, now)
        drop_condition(state, "Stalled")


def progressing(state: dict[str, Any], message: str, now: float) -> None:
    set_condition(state, "Ready", "Unknown", "Progressing", message, now)
    set_condition(state, "Reconciling", "True", "Progressing", message, now)
    drop_condition(state, "Stalled")
