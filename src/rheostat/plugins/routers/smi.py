"""SMI `TrafficSplit` (split.smi-spec.io v1alpha2 / v1alpha3): Linkerd, OSM and other SMI meshes.

One TrafficSplit `<apex>` whose root service is the apex (or `service.hosts[0]`, as Flagger does), with the
backends `<apex>-primary` and `<apex>-canary` weighted in integers. Flagger's `linkerd` provider writes the
older v1alpha1 (Quantity weights); Linkerd's SMI extension serves v1alpha2, which this router writes for
`linkerd`. SMI has no mirroring and no session affinity; header matches would need an HTTPRouteGroup
(specs.smi-spec.io), which Rheostat does not write, so A/B is refused too.
"""

from __future__ import annotations

import contextlib
import json
from typing import Literal

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import Kind, KubeAPI, Obj
from rheostat.plugins.kube.kinds import TRAFFIC_SPLIT_V1ALPHA2, TRAFFIC_SPLIT_V1ALPHA3
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, reconciled
from rheostat.plugins.routers.kubernetes_common import (
    MANAGED_BY,
    ORIGINAL_ANNOTATION,
    apex_name,
    kube_errors,
    marks,
    owner,
    refuse_routes,
    refuse_service_fields,
    split_key,
    subset,
)

SmiVersion = Literal["v1alpha2", "v1alpha3"]
KINDS: dict[str, Kind] = {"v1alpha2": TRAFFIC_SPLIT_V1ALPHA2, "v1alpha3": TRAFFIC_SPLIT_V1ALPHA3}


class SMIRouter:
    def __init__(self, api: KubeAPI, version: SmiVersion = "v1alpha2", *, name: str | None = None) -> None:
        if version not in KINDS:
            raise ValueError(f"SMI TrafficSplit version {version!r}: use one of {', '.join(KINDS)}")
        self.api = api
        self.kind = KINDS[version]
        self.name = name or f"smi:{version}"
        self._routes: dict[ObjectKey, ServiceRoute] = {}

    # -- the Router port ---------------------------------------------------------------------------

    async def reconcile(self, route: ServiceRoute) -> None:
        refuse_service_fields(route, self.name, allowed=frozenset({"hosts"}))
        if route.service is not None and route.service.hosts and len(route.service.hosts) > 1:
            raise RouterError(
                f"service.hosts: the {self.name} router splits one root service, got {route.service.hosts}"
            )
        namespace, _ = split_key(route.key)
        apex = apex_name(route)
        with kube_errors():
            current = await self.api.get(self.kind, namespace, apex)
        original: str | None = None
        weights = Routes()
        if current is not None:
            held_by = owner(current)
            if held_by is None:  # someone else's split: taken over, and kept to give back on deletion
                original = json.dumps(_configuration(current), sort_keys=True)
            elif held_by != route.key:
                raise RouterError(f"TrafficSplit {namespace}/{apex} is managed by canary {held_by}")
            else:
                original = current["metadata"].get("annotations", {}).get(ORIGINAL_ANNOTATION)
                with contextlib.suppress(RouterError):  # weights edited beyond reading: all on the primary
                    weights = self._weights(current, route)

        desired = self._render(route, weights, original)
        self._routes[route.key] = route
        with kube_errors():
            if current is not None and owner(current) is None:
                # A PUT, so that nothing of the user's spec (v1alpha3 `matches`, other backends) lingers.
                await self.api.replace(_taken_over(desired, current))
            elif current is None or not _same(desired, current):
                await self.api.apply(desired, force=True)

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        why = "SMI TrafficSplit only weighs backends"
        refuse_routes(routes, self.name, why=why)
        route = self._route(key)
        current = await self._get(route)
        original = current["metadata"].get("annotations", {}).get(ORIGINAL_ANNOTATION)
        desired = self._render(route, routes, original)
        if not _same(desired, current):
            with kube_errors():  # both weights in one write
                await self.api.apply(desired, force=True)

    async def get_routes(self, key: ObjectKey) -> Routes:
        route = self._route(key)
        return self._weights(await self._get(route), route)

    async def finalize(self, key: ObjectKey) -> None:
        route = self._routes.pop(key, None)
        namespace, _ = split_key(key)
        with kube_errors():
            found = await self.api.list(self.kind, namespace, {MANAGED_BY: "rheostat"})
        for obj in found:
            if owner(obj) != key:
                continue
            name = obj["metadata"]["name"]
            original = obj["metadata"].get("annotations", {}).get(ORIGINAL_ANNOTATION)
            with kube_errors():
                if original is None:
                    await self.api.delete(self.kind, namespace, name)
                elif route is not None and route.revert_on_deletion:
                    await self.api.replace(self._restored(obj, original))
                # else: a split taken over without revertOnDeletion stays, all traffic on the primary

    # -- helpers -----------------------------------------------------------------------------------

    def _route(self, key: ObjectKey) -> ServiceRoute:
        return reconciled(self._routes, key, self.name)

    async def _get(self, route: ServiceRoute) -> Obj:
        namespace, _ = split_key(route.key)
        apex = apex_name(route)
        with kube_errors():
            current = await self.api.get(self.kind, namespace, apex)
        if current is None:
            raise RouterError(f"TrafficSplit {namespace}/{apex} ({self.kind}) does not exist")
        if owner(current) != route.key:
            raise RouterError(f"TrafficSplit {namespace}/{apex} is not managed by canary {route.key}")
        return current

    def _render(self, route: ServiceRoute, routes: Routes, original: str | None) -> Obj:
        namespace, _ = split_key(route.key)
        apex = apex_name(route)
        hosts = route.service.hosts if route.service is not None else None
        labels, annotations = marks(route.key)
        if original is not None:
            annotations[ORIGINAL_ANNOTATION] = original
        return {
            "apiVersion": self.kind.api_version,
            "kind": self.kind.kind,
            "metadata": {"name": apex, "namespace": namespace, "labels": labels, "annotations": annotations},
            "spec": {
                "service": hosts[0] if hosts else apex,
                "backends": [
                    {"service": route.primary[0].host, "weight": routes.primary},
                    {"service": route.canary[0].host, "weight": routes.canary},
                ],
            },
        }

    def _weights(self, split: Obj, route: ServiceRoute) -> Routes:
        name = f"{split['metadata'].get('namespace')}/{split['metadata']['name']}"
        weights = {b.get("service"): b.get("weight") for b in split.get("spec", {}).get("backends") or []}
        primary, canary = weights.get(route.primary[0].host, 0), weights.get(route.canary[0].host, 0)
        if not all(isinstance(w, int | float) and w >= 0 for w in (primary, canary)) or primary + canary <= 0:
            raise RouterError(
                f"TrafficSplit {name} has no weights for {route.primary[0].host} and {route.canary[0].host}"
            )
        # SMI weights are relative; the engine speaks percent.
        percent = round(100 * canary / (primary + canary))
        return Routes(100 - percent, percent)

    def _restored(self, current: Obj, original: str) -> Obj:
        saved = json.loads(original)
        meta = saved.get("metadata", {})
        return {
            "apiVersion": self.kind.api_version,
            "kind": self.kind.kind,
            "metadata": {
                "name": current["metadata"]["name"],
                "namespace": current["metadata"]["namespace"],
                "resourceVersion": current["metadata"].get("resourceVersion"),
                "labels": meta.get("labels") or {},
                "annotations": meta.get("annotations") or {},
            },
            "spec": saved.get("spec", {}),
        }


def _configuration(obj: Obj) -> Obj:
    """What revertOnDeletion gives back: the user's labels, annotations and spec."""
    meta = obj.get("metadata", {})
    return {
        "metadata": {"labels": meta.get("labels") or {}, "annotations": meta.get("annotations") or {}},
        "spec": obj.get("spec", {}),
    }


def _taken_over(desired: Obj, current: Obj) -> Obj:
    have = current.get("metadata", {})
    meta = desired["metadata"]
    return {
        **desired,
        "metadata": {
            **meta,
            "resourceVersion": have.get("resourceVersion"),
            "labels": {**(have.get("labels") or {}), **meta["labels"]},
            "annotations": {**(have.get("annotations") or {}), **meta["annotations"]},
        },
    }


def _same(desired: Obj, current: Obj) -> bool:
    """The stored object already says what `desired` says (so no write at rest)."""
    want, have = desired["metadata"], current.get("metadata", {})
    return (
        desired["spec"] == current.get("spec")
        and subset(want["labels"], have.get("labels"))
        and subset(want["annotations"], have.get("annotations"))
    )
