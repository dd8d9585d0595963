"""The base every declared kind builds on: unknown fields are errors, values are frozen."""

from __future__ import annotations

from typing import NewType

from pydantic import BaseModel, ConfigDict, Field

ObjectKey = NewType("ObjectKey", str)  # "namespace/name"


def object_key(namespace: str, name: str) -> ObjectKey:
    return ObjectKey(f"{namespace}/{name}")


class Strict(BaseModel):
    """Fields are camelCase in YAML; anything not declared is rejected with its path."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=False)


class ObjectMeta(Strict):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    namespace: str = Field(default="default", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Fields a Kubernetes export carries; accepted so that `kubectl get -o yaml` output loads.
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    finalizers: list[str] | None = None
    managedFields: list[dict[str, object]] | None = None

    @property
    def key(self) -> ObjectKey:
        return object_key(self.namespace, self.name)
