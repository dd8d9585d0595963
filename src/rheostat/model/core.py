"""Kubernetes core kinds that sit beside Flagger files in real repositories: stored, not run locally.

A Namespace, Service, ConfigMap, Secret, HorizontalPodAutoscaler or a Deployment (that no Canary targets)
must not fail a whole revision on the embedded default: it is kept in the store and reported as not run.
Only `metadata` is checked; the rest is kept as written, except a Secret's values (see `_redact`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from rheostat.model.base import ObjectMeta

CORE_KINDS: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "Service"): "Service",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Secret"): "Secret",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler",
    ("autoscaling/v2beta2", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler",
    ("autoscaling/v1", "HorizontalPodAutoscaler"): "HorizontalPodAutoscaler",
    ("apps/v1", "Deployment"): "Deployment",
}
REDACTED = "(redacted: Secret values from Git are not kept)"


class CoreObject(BaseModel):
    """One of CORE_KINDS, kept as written (its metadata checked)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    apiVersion: str
    kind: str
    metadata: ObjectMeta

    @model_validator(mode="before")
    @classmethod
    def _redact(cls, data: Any) -> Any:
        """A Secret's values never reach the store, the API or events: only its keys are kept."""
        if not isinstance(data, dict) or data.get("kind") != "Secret":
            return data
        out = dict(data)
        for name in ("data", "stringData"):
            if isinstance(out.get(name), dict):
                out[name] = dict.fromkeys(out[name], REDACTED)
        return out

    @model_validator(mode="after")
    def _known(self) -> CoreObject:
        if (self.apiVersion, self.kind) not in CORE_KINDS:
            raise ValueError(f"{self.kind} ({self.apiVersion}) is not one of the core kinds kept as written")
        return self
