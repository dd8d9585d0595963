"""The primary's HorizontalPodAutoscaler, copied from `autoscalerRef` (pure)."""

from __future__ import annotations

import copy

from rheostat.plugins.kube.api import Obj
from rheostat.plugins.platforms.kubernetes.labels import copied, marks
from rheostat.plugins.platforms.kubernetes.settings import Bound


def primary_hpa(b: Bound, hpa: Obj) -> Obj:
    """`<hpa>-primary` scaling `<target>-primary`, with `primaryScalerReplicas` over the copied bounds."""
    assert b.autoscaler is not None and b.primary_hpa is not None  # only called with an autoscalerRef
    spec = hpa.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    out_spec: Obj = {
        "scaleTargetRef": {
            "apiVersion": ref.get("apiVersion", b.kind.api_version),
            "kind": ref.get("kind", b.kind.kind),
            "name": b.primary,
        },
        "maxReplicas": spec.get("maxReplicas"),
    }
    for field in ("minReplicas", "metrics", "behavior"):
        if spec.get(field) is not None:
            out_spec[field] = copy.deepcopy(spec[field])
    bounds = b.autoscaler.primaryScalerReplicas
    if bounds is not None and bounds.minReplicas is not None:
        out_spec["minReplicas"] = bounds.minReplicas
    if bounds is not None and bounds.maxReplicas is not None:
        out_spec["maxReplicas"] = bounds.maxReplicas
    labels, annotations = marks(b.canary)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": b.primary_hpa,
            "namespace": b.namespace,
            "labels": {**copied(hpa["metadata"].get("labels")), **labels},
            "annotations": annotations,
        },
        "spec": out_spec,
    }
