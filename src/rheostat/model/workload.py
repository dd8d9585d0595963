"""`rheostat.dev/v1alpha1` Workload: a group of local processes, the embedded platform's Deployment."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, field_validator

from rheostat.model.base import ObjectMeta, Strict

API_VERSION = "rheostat.dev/v1alpha1"


class ReadinessProbe(Strict):
    path: str = "/readyz"
    periodSeconds: float = Field(default=0.5, gt=0)
    timeoutSeconds: float = Field(default=1.0, gt=0)


class ProcessTemplate(Strict):
    """What each replica runs. `{port}` in the command or env is replaced by the replica's port."""

    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    workingDir: str | None = None
    readinessProbe: ReadinessProbe | None = None
    annotations: dict[str, str] = Field(default_factory=dict)  # change one to retry a failed release

    @field_validator("command")
    @classmethod
    def _port_placeholder(cls, v: list[str]) -> list[str]:
        if not any("{port}" in part for part in v):
            raise ValueError("the command must contain {port}, where the process is told to listen")
        return v

    def revision(self) -> str:
        """A stable hash of the template, the way a pod-template hash names a Deployment revision."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class WorkloadSpec(Strict):
    replicas: int = Field(default=1, ge=0, le=64)
    template: ProcessTemplate


class Workload(Strict):
    apiVersion: Literal["rheostat.dev/v1alpha1"]
    kind: Literal["Workload"]
    metadata: ObjectMeta
    spec: WorkloadSpec
