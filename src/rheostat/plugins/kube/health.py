"""An object's health read from its status, as kstatus reads it: Deployments, StatefulSets, DaemonSets, Jobs,
Flagger's Canaries, and any object with Ready / Stalled / Reconciling conditions (a HelmRelease, a custom
resource)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rheostat.plugins.kube.api import Obj


def _conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, Mapping)}


def _true(c: Mapping[str, Any] | None) -> bool:
    return c is not None and c.get("status") == "True"


def health_of(obj: Obj | None) -> tuple[bool | None, str]:
    """(True, "") when current, (None, why) while in progress, (False, why) when failed, as kstatus says."""
    if obj is None:
        return False, "not found in the cluster"
    kind = obj.get("kind", "")
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    conds = _conditions(status)
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        return None, f"generation {generation} not observed yet (observed {observed})"
    if _true(conds.get("Stalled")):
        return False, str(conds["Stalled"].get("message", "stalled"))
    if kind == "Deployment":
        want = int(spec.get("replicas", 1))
        progressing = conds.get("Progressing") or {}
        if progressing.get("reason") == "ProgressDeadlineExceeded":
            return False, str(progressing.get("message", "progress deadline exceeded"))
        if observed is None and want:
            return None, "not observed by the Deployment controller yet"
        updated, available = int(status.get("updatedReplicas", 0)), int(status.get("availableReplicas", 0))
        if updated < want:
            return None, f"{updated} of {want} replicas updated"
        if int(status.get("replicas", 0)) > updated:
            return None, "old replicas are still terminating"
        if available < want:
            return None, f"{available} of {want} replicas available"
        return True, ""
    if kind == "StatefulSet":
        want = int(spec.get("replicas", 1))
        if int(status.get("readyReplicas", 0)) < want:
            return None, f"{status.get('readyReplicas', 0)} of {want} replicas ready"
        if status.get("updateRevision") and status.get("currentRevision") != status.get("updateRevision"):
            return None, "rolling update in progress"
        return True, ""
    if kind == "DaemonSet":
        want = int(status.get("desiredNumberScheduled", 0))
        if (
            int(status.get("numberAvailable", 0)) < want
            or int(status.get("updatedNumberScheduled", 0)) < want
        ):
            return None, f"{status.get('numberAvailable', 0)} of {want} pods available"
        return True, ""
    if kind == "Job":
        if _true(conds.get("Failed")):
            return False, str(conds["Failed"].get("message", "job failed"))
        if _true(conds.get("Complete")):
            return True, ""
        return None, "job running"
    if kind == "Canary" and "phase" in status:
        phase = str(status["phase"])
        if phase in ("Initialized", "Succeeded"):
            return True, ""
        if phase == "Failed":
            return False, f"canary failed: {conds.get('Promoted', {}).get('message', '')}".rstrip(": ")
        return None, f"canary {phase}"
    ready = conds.get("Ready")
    if ready is not None:
        if ready.get("status") == "True":
            return True, ""
        if ready.get("status") == "False" and not _true(conds.get("Reconciling")):
            return False, str(ready.get("message", "not ready"))
        return None, str(ready.get("message", "reconciling"))
    if _true(conds.get("Reconciling")):
        return None, str(conds["Reconciling"].get("message", "reconciling"))
    if kind in ("Canary", "HelmRelease") or (
        kind != "Namespace" and observed is None and "conditions" in status
    ):
        return None, "no status yet"
    return True, ""
