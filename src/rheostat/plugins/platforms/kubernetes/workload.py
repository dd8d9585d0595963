"""The primary workload built from the target (pure), and the revision a target declares."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rheostat.plugins.kube.api import Obj
from rheostat.plugins.kube.kinds import DAEMONSET
from rheostat.plugins.platforms.kubernetes.configs import ConfigRef, rewrite
from rheostat.plugins.platforms.kubernetes.labels import (
    INITIALIZED_ANNOTATION,
    REVISION_ANNOTATION,
    SELECTOR_LABELS,
    copied,
    marks,
    primary_labels,
    selector_label,
)
from rheostat.plugins.platforms.kubernetes.settings import Bound

# Flagger's way to run a DaemonSet on no node; the same key, so a DaemonSet Flagger scaled down is known.
SCALE_TO_ZERO = ("flagger.app/scale-to-zero", "true")
DEPLOYMENT_FIELDS = ("progressDeadlineSeconds", "minReadySeconds", "revisionHistoryLimit", "strategy")
DAEMONSET_FIELDS = ("minReadySeconds", "revisionHistoryLimit", "updateStrategy")


def without_scale_to_zero(template: Mapping[str, Any]) -> dict[str, Any]:
    """The pod template as declared: without the node selector that parks a DaemonSet."""
    out = copy.deepcopy(dict(template))
    pod = out.get("spec") or {}
    selector = pod.get("nodeSelector")
    if isinstance(selector, dict) and SCALE_TO_ZERO[0] in selector:
        del selector[SCALE_TO_ZERO[0]]
        if not selector:
            del pod["nodeSelector"]
    return out


def revision_of(target: Obj, checksums: Mapping[ConfigRef, str]) -> str:
    """A hash of the pod template and of the data of the tracked configs: either changing is a revision."""
    doc = {
        "template": without_scale_to_zero(target["spec"].get("template") or {}),
        "configs": {str(ref): value for ref, value in sorted(checksums.items())},
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _rename_selectors(pod: dict[str, Any], target: str) -> None:
    """Spread constraints and anti-affinity that select the target's pods by name select the primary's."""

    def fix(selector: Any) -> None:
        if not isinstance(selector, dict):
            return
        for key, value in (selector.get("matchLabels") or {}).items():
            if key in SELECTOR_LABELS and value == target:
                selector["matchLabels"][key] = f"{target}-primary"
        for expr in selector.get("matchExpressions") or []:
            if expr.get("key") in SELECTOR_LABELS:
                expr["values"] = [f"{v}-primary" if v == target else v for v in expr.get("values") or []]

    for constraint in pod.get("topologySpreadConstraints") or []:
        fix(constraint.get("labelSelector"))
    anti = (pod.get("affinity") or {}).get("podAntiAffinity") or {}
    for term in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        fix((term.get("podAffinityTerm") or {}).get("labelSelector"))
    for term in anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []:
        fix(term.get("labelSelector"))


def primary_of(
    b: Bound,
    target: Obj,
    tracked: set[ConfigRef],
    revision: str,
    *,
    replicas: int | None,
    initialized: bool,
) -> Obj:
    """The whole `<target>-primary` as Rheostat applies it (server-side apply: what is left out is removed).

    Selector and pod labels carry `<value>-primary`; the pod template is the target's with references to
    tracked configs renamed; the revision is annotated on the object and its pods, so a config-only change
    still rolls the primary's pods.
    """
    key, value = selector_label(target, b.what)
    label = f"{value}-primary"
    spec = target["spec"]
    template = without_scale_to_zero(spec.get("template") or {})
    pod = rewrite(template.get("spec") or {}, tracked)
    _rename_selectors(pod, b.target)
    tmeta = template.get("metadata") or {}
    ours_labels, ours_annotations = marks(b.canary)
    annotations = {**copied(target["metadata"].get("annotations")), **ours_annotations}
    annotations[REVISION_ANNOTATION] = revision
    if initialized:
        annotations[INITIALIZED_ANNOTATION] = "true"
    out_spec: dict[str, Any] = {
        "selector": {"matchLabels": {key: label}},
        "template": {
            "metadata": {
                "labels": primary_labels(tmeta.get("labels"), key, label),
                "annotations": {**copied(tmeta.get("annotations")), REVISION_ANNOTATION: revision},
            },
            "spec": pod,
        },
    }
    for field in DAEMONSET_FIELDS if b.kind is DAEMONSET else DEPLOYMENT_FIELDS:
        if spec.get(field) is not None:
            out_spec[field] = copy.deepcopy(spec[field])
    if replicas is not None and b.kind is not DAEMONSET:
        out_spec["replicas"] = replicas
    return {
        "apiVersion": b.kind.api_version,
        "kind": b.kind.kind,
        "metadata": {
            "name": b.primary,
            "namespace": b.namespace,
            # Flagger copies no target label by default (`-include-label-prefix` is empty): only the selector's.
            "labels": {key: label, **ours_labels},
            "annotations": annotations,
        },
        "spec": out_spec,
    }


def declared_replicas(target: Obj) -> int | None:
    value = target["spec"].get("replicas")
    return int(value) if value is not None else None
