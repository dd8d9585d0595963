"""Ownership of the routing objects a Kubernetes router writes: create, update, take over, give back.

Shared by the Istio and Gateway API routers (nothing in it is Istio-specific). An object is ours when it
carries the `managed-by: rheostat` label and the `rheostat.dev/canary` annotation of the canary. An object
found without them was made by someone else: it is taken over whole (its spec replaced, as Flagger does),
and what it was is kept in an annotation so that `revertOnDeletion` can give it back.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import Kind, KubeAPI, KubeError, NotInstalled, Obj
from rheostat.plugins.routers.base import RouterError, ServiceRoute
from rheostat.plugins.routers.kubernetes_common import (
    CANARY_ANNOTATION,
    MANAGED_BY,
    ORIGINAL_ANNOTATION,
    owner,
)

MANAGER = "rheostat"

T = TypeVar("T")


async def call(op: Awaitable[T]) -> T:
    """Await an API call; any KubeError becomes a RouterError with the message kept (verb, resource, CRD)."""
    try:
        return await op
    except KubeError as exc:
        raise RouterError(str(exc)) from exc


def namespace_of(key: ObjectKey) -> str:
    return key.partition("/")[0]


def apex_of(route: ServiceRoute) -> str:
    """`service.name`, else the target's name, else the canary's (Flagger's apex Service name)."""
    if route.service is not None and route.service.name:
        return route.service.name
    if route.target:
        return route.target.rpartition("/")[2]
    return route.key.partition("/")[2]


def backends(route: ServiceRoute) -> tuple[str, str]:
    """The primary and canary Service names the platform reports (`<apex>-primary`, `<apex>-canary`)."""
    apex = apex_of(route)
    primary = route.primary[0].host if route.primary else f"{apex}-primary"
    canary = route.canary[0].host if route.canary else f"{apex}-canary"
    return primary, canary


def meta(obj: Obj) -> dict[str, Any]:
    found = obj.get("metadata") or {}
    assert isinstance(found, dict)
    return found


owner_of = owner  # the canary (ns/name) that owns an object, or None when Rheostat did not make or take it


def new_object(
    kind: Kind, namespace: str, name: str, key: ObjectKey, spec: Obj, extra: Obj | None = None
) -> Obj:
    """The object as Rheostat writes it; `extra` holds `labels` / `annotations` to add (apex metadata)."""
    extra = extra or {}
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**(extra.get("labels") or {}), MANAGED_BY: MANAGER},
            "annotations": {**(extra.get("annotations") or {}), CANARY_ANNOTATION: key},
        },
        "spec": spec,
    }


def _needs_write(existing: Obj, desired: Obj) -> bool:
    have, want = meta(existing), meta(desired)
    for field in ("labels", "annotations"):
        current = have.get(field) or {}
        if any(current.get(k) != v for k, v in (want.get(field) or {}).items()):
            return True
    return bool(existing.get("spec") != desired["spec"])


async def write(api: KubeAPI, kind: Kind, key: ObjectKey, existing: Obj | None, desired: Obj) -> Obj:
    """Create, update (only when something changed) or take over `desired`; one write at most."""
    name = meta(desired)["name"]
    if existing is None:
        return await call(api.apply(desired))
    owner = owner_of(existing)
    if owner == key:
        if not _needs_write(existing, desired):
            return existing
        original = (meta(existing).get("annotations") or {}).get(ORIGINAL_ANNOTATION)
        if original is not None:  # carried on every write so a later revert still finds it
            meta(desired)["annotations"][ORIGINAL_ANNOTATION] = original
        return await call(api.apply(desired, force=True))
    if owner is not None:
        raise RouterError(f"{kind.kind} {namespace_of(key)}/{name} belongs to canary {owner}, not {key}")
    # Taken over: the spec is replaced whole (foreign routes would shadow ours), foreign metadata is kept.
    m = meta(existing)
    labels: dict[str, str] = m.get("labels") or {}
    annotations: dict[str, str] = m.get("annotations") or {}
    kept = {"spec": existing.get("spec"), "labels": labels, "annotations": annotations}
    taken = dict(existing, spec=desired["spec"])
    taken["metadata"] = dict(
        m,
        labels={**labels, **meta(desired)["labels"]},
        annotations={
            **annotations,
            **meta(desired)["annotations"],
            ORIGINAL_ANNOTATION: json.dumps(kept, sort_keys=True),
        },
    )
    return await call(api.replace(taken))


async def release(api: KubeAPI, kind: Kind, key: ObjectKey, *, revert: bool) -> None:
    """Delete the objects of `kind` this canary made; give back (revert) or leave the ones it took over."""
    namespace = namespace_of(key)
    try:
        found = await api.list(kind, namespace, {MANAGED_BY: MANAGER})
    except NotInstalled:
        return  # no CRD: nothing of this kind can have been made
    except KubeError as exc:
        raise RouterError(str(exc)) from exc
    for obj in found:
        if owner_of(obj) != key:
            continue
        m = meta(obj)
        original = (m.get("annotations") or {}).get(ORIGINAL_ANNOTATION)
        if original is None:
            await call(api.delete(kind, namespace, m["name"]))
        elif revert:
            await call(api.replace(restored(obj, json.loads(original))))
        # taken over without revertOnDeletion: left routing as it is, like Flagger


def restored(obj: Obj, original: dict[str, Any]) -> Obj:
    out = {k: v for k, v in obj.items() if k not in ("spec", "status")}
    if original.get("spec") is not None:
        out["spec"] = original["spec"]
    out["metadata"] = dict(meta(obj), labels=original["labels"], annotations=original["annotations"])
    return out
