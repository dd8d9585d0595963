"""What is reviewed: an object, or an AdmissionReview's request, as Gatekeeper's `input.review` shows it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

JsonObject = dict[str, Any]

ADMISSION_GROUPS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class ReviewError(ValueError):
    """An object that cannot be reviewed (no kind, no apiVersion, an AdmissionReview without an object)."""


def split_api_version(api_version: str) -> tuple[str, str]:
    """`apps/v1` -> ("apps", "v1"); `v1` -> ("", "v1")."""
    group, _, version = api_version.rpartition("/")
    return group, version


def plain(value: object) -> Any:
    """A JSON-shaped copy: YAML dates and other scalars become strings, as a Kubernetes API would send them."""
    return json.loads(json.dumps(value, default=str))


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


@dataclass(frozen=True)
class Review:
    """One admission request: the object (or, on DELETE, the old object) and what is known about it."""

    object: JsonObject
    old_object: JsonObject | None = None
    operation: str = ""
    user_info: JsonObject = field(default_factory=dict)
    from_admission: bool = False
    # The rest of the AdmissionRequest (uid, resource, subResource, dryRun, options, ...), as Gatekeeper
    # passes it on in `input.review`; empty for a plain object.
    request: JsonObject = field(default_factory=dict)

    @property
    def api_version(self) -> str:
        return str(self.object.get("apiVersion", ""))

    @property
    def group(self) -> str:
        return split_api_version(self.api_version)[0]

    @property
    def version(self) -> str:
        return split_api_version(self.api_version)[1]

    @property
    def kind(self) -> str:
        return str(self.object.get("kind", ""))

    @property
    def name(self) -> str:
        # A CREATE with generateName has no name yet; the request's own fields fill in what the object lacks.
        return str(_meta(self.object).get("name") or self.request.get("name") or "")

    @property
    def namespace(self) -> str:
        return str(_meta(self.object).get("namespace") or self.request.get("namespace") or "")

    @property
    def labels(self) -> dict[str, str]:
        labels = _meta(self.object).get("labels")
        return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {}

    @property
    def is_namespace(self) -> bool:
        return self.kind == "Namespace" and self.group == ""

    def as_input(self) -> JsonObject:
        """Gatekeeper's `input.review`: an AdmissionRequest with the object inlined (on DELETE, the old one)."""
        out: JsonObject = {
            **self.request,
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "name": self.name,
            "object": self.object,
        }
        if self.namespace:
            out["namespace"] = self.namespace
        if self.old_object is not None:
            out["oldObject"] = self.old_object
        if self.operation:
            out["operation"] = self.operation
        if self.user_info:
            out["userInfo"] = self.user_info
        return out

    @cached_property
    def input_json(self) -> str:
        return json.dumps(self.as_input(), separators=(",", ":"))


def make_review(doc: Mapping[str, Any]) -> Review:
    """A Review of a plain object, or of the request inside an `admission.k8s.io` AdmissionReview."""
    data = plain(doc)
    if not isinstance(data, dict):
        raise ReviewError("expected a mapping")
    if data.get("kind") == "AdmissionReview" and data.get("apiVersion") in ADMISSION_GROUPS:
        return _from_admission(data)
    _require_type(data, "object")
    return Review(object=data)


def _from_admission(doc: JsonObject) -> Review:
    request = doc.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request")
    obj = request.get("object")
    old = request.get("oldObject")
    operation = str(request.get("operation") or "")
    if not isinstance(obj, dict) and not isinstance(old, dict):
        raise ReviewError('AdmissionReview request has neither "object" nor "oldObject" to review')
    if operation == "DELETE":
        if not isinstance(old, dict):
            raise ReviewError("a DELETE AdmissionReview needs oldObject")
        obj = old  # Gatekeeper reviews the old object on DELETE
    if not isinstance(obj, dict):
        raise ReviewError('AdmissionReview request has no "object"')
    _require_type(obj, "request.object")
    user = request.get("userInfo")
    return Review(
        object=obj,
        old_object=old if isinstance(old, dict) else None,
        operation=operation,
        user_info=user if isinstance(user, dict) else {},
        from_admission=True,
        request={k: v for k, v in request.items() if k not in _INLINED},
    )


_INLINED = ("object", "oldObject", "kind", "operation", "userInfo")  # kept apart, as fields


def _require_type(obj: JsonObject, where: str) -> None:
    for key in ("apiVersion", "kind"):
        if not isinstance(obj.get(key), str) or not obj.get(key):
            raise ReviewError(f"{where} has no {key}")
