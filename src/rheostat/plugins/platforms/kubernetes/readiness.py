"""Readiness of a Deployment or DaemonSet from its status, with Flagger's rules (pure).

`not_ready_since` is left to the platform, which remembers when it first saw a group not ready.
"""

from __future__ import annotations

from typing import Any

from rheostat.plugins.kube.api import Obj
from rheostat.plugins.platforms.base import Readiness


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)


def _generation_seen(obj: Obj) -> bool:
    generation = int(obj["metadata"].get("generation") or 0)
    return int((obj.get("status") or {}).get("observedGeneration") or 0) >= generation


def deployment(obj: Obj, threshold: int, *, primary: bool) -> Readiness:
    name = obj["metadata"]["name"]
    status = obj.get("status") or {}
    if not _generation_seen(obj):
        return Readiness(False, f"{name}: waiting for the rollout to start (generation not observed yet)")
    progressing = _condition(status, "Progressing")
    if progressing is not None and progressing.get("reason") == "ProgressDeadlineExceeded":
        return Readiness(False, f"{name} exceeded its progress deadline", fatal=True)
    wanted = int(obj["spec"].get("replicas", 1))
    if primary and wanted == 0:
        return Readiness(False, f"{name} is scaled to zero")
    updated = int(status.get("updatedReplicas") or 0)
    if updated < wanted:
        return Readiness(False, f"{name}: {updated} of {wanted} replicas updated")
    old = int(status.get("replicas") or 0) - updated
    if old > 0:
        return Readiness(False, f"{name}: {old} old replicas pending termination")
    needed = updated * threshold // 100
    available = int(status.get("availableReplicas") or 0)
    if available < needed:
        return Readiness(
            False, f"{name}: {available} of {needed} updated replicas available (readyThreshold {threshold}%)"
        )
    return Readiness(True)


def daemonset(obj: Obj, threshold: int) -> Readiness:
    name = obj["metadata"]["name"]
    status = obj.get("status") or {}
    if not _generation_seen(obj):
        return Readiness(False, f"{name}: waiting for the rollout to start (generation not observed yet)")
    desired = int(status.get("desiredNumberScheduled") or 0)
    updated = int(status.get("updatedNumberScheduled") or 0)
    if updated < desired:
        return Readiness(False, f"{name}: {updated} of {desired} pods updated")
    needed = desired * threshold // 100
    available = int(status.get("numberAvailable") or 0)
    if available < needed:
        return Readiness(
            False, f"{name}: {available} of {needed} pods available (readyThreshold {threshold}%)"
        )
    return Readiness(True)
