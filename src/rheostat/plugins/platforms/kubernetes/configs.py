"""ConfigMaps and Secrets a pod spec references: found, checksummed, copied as `<name>-primary`, and the
primary's references rewritten to the copies (Flagger's config tracking)."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rheostat.plugins.kube.api import Kind, Obj
from rheostat.plugins.kube.kinds import CONFIGMAP, SECRET
from rheostat.plugins.platforms.kubernetes.labels import copied

TRACKING_ANNOTATION = "flagger.app/config-tracking"  # "disabled" opts one object out, as in Flagger
# Registry credentials and service-account tokens belong to the namespace, not to a revision.
TRACKED_SECRET_TYPES = ("Opaque", "kubernetes.io/basic-auth", "kubernetes.io/ssh-auth", "kubernetes.io/tls")


@dataclass(frozen=True, order=True)
class ConfigRef:
    kind: str  # "configmap" or "secret", as Flagger's trackedConfigs keys them
    name: str

    @property
    def api_kind(self) -> Kind:
        return CONFIGMAP if self.kind == "configmap" else SECRET

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def _slots(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Every place in a pod spec that names a ConfigMap or Secret: (kind, the dict holding it, its field)."""
    for volume in pod.get("volumes") or []:
        if isinstance(cm := volume.get("configMap"), dict):
            yield "configmap", cm, "name"
        if isinstance(secret := volume.get("secret"), dict):
            yield "secret", secret, "secretName"
        for source in (volume.get("projected") or {}).get("sources") or []:
            if isinstance(cm := source.get("configMap"), dict):
                yield "configmap", cm, "name"
            if isinstance(secret := source.get("secret"), dict):
                yield "secret", secret, "name"
    for container in [*(pod.get("containers") or []), *(pod.get("initContainers") or [])]:
        for env in container.get("env") or []:
            source = env.get("valueFrom") or {}
            if isinstance(ref := source.get("configMapKeyRef"), dict):
                yield "configmap", ref, "name"
            if isinstance(ref := source.get("secretKeyRef"), dict):
                yield "secret", ref, "name"
        for env_from in container.get("envFrom") or []:
            if isinstance(ref := env_from.get("configMapRef"), dict):
                yield "configmap", ref, "name"
            if isinstance(ref := env_from.get("secretRef"), dict):
                yield "secret", ref, "name"


def references(pod: dict[str, Any]) -> dict[ConfigRef, bool]:
    """The ConfigMaps and Secrets a pod spec uses, each with whether it is required (not `optional`)."""
    out: dict[ConfigRef, bool] = {}
    for kind, holder, field in _slots(pod):
        name = holder.get(field)
        if name:
            ref = ConfigRef(kind, str(name))
            out[ref] = out.get(ref, False) or not holder.get("optional", False)
    return out


def is_tracked(ref: ConfigRef, obj: Obj) -> bool:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if str(annotations.get(TRACKING_ANNOTATION, "")).startswith("disable"):
        return False
    return ref.kind == "configmap" or obj.get("type", "Opaque") in TRACKED_SECRET_TYPES


def checksum(obj: Obj) -> str:
    """What a revision depends on: the object's data, nothing of its metadata."""
    data = {k: obj.get(k) for k in ("data", "binaryData", "type") if obj.get(k) is not None}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def primary_copy(obj: Obj, canary: str, labels: dict[str, str], annotations: dict[str, str]) -> Obj:
    """`<name>-primary` with the same data, marked as ours."""
    meta = obj["metadata"]
    out: Obj = {
        "apiVersion": "v1",
        "kind": obj["kind"],
        "metadata": {
            "name": f"{meta['name']}-primary",
            "namespace": meta["namespace"],
            "labels": {**copied(meta.get("labels")), **labels},
            "annotations": annotations,
        },
    }
    for key in ("data", "binaryData", "type"):
        if obj.get(key) is not None:
            out[key] = copy.deepcopy(obj[key])
    return out


def rewrite(pod: dict[str, Any], tracked: set[ConfigRef]) -> dict[str, Any]:
    """A copy of the pod spec whose references to tracked objects name their `-primary` copies."""
    out = copy.deepcopy(pod)
    for kind, holder, field in _slots(out):
        if ConfigRef(kind, str(holder.get(field))) in tracked:
            holder[field] = f"{holder[field]}-primary"
    return out
