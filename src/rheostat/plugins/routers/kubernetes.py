"""Flagger's `kubernetes` provider: blue/green at L4, with plain Services and no weights.

Flagger's own router for it does nothing (the apex Service always selects the primary, and promotion copies
the canary's template into the primary, so the switch happens by rolling the primary). Here the cut-over is
real: 0/100 points the apex Service's selector at the canary pods (the selector of `<apex>-canary`) and
100/0 back at the primary's (`<apex>-primary`), in one write. So during the primary's rollout the clients
stay on the analysed canary, as with a mesh, and `get_routes` reads the split back from the apex Service.
Anything between, A/B matches, mirroring and sticky sessions cannot be said with a Service selector.
"""

from __future__ import annotations

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import KubeAPI, Obj
from rheostat.plugins.kube.kinds import SERVICE
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, reconciled
from rheostat.plugins.routers.kubernetes_common import (
    apex_name,
    for_update,
    kube_errors,
    refuse_routes,
    refuse_service_fields,
    split_key,
)

ROUTER = "kubernetes"
BLUE_GREEN_ONLY = "the kubernetes provider supports blue/green only: all traffic on the primary or the canary"


class KubernetesRouter:
    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._routes: dict[ObjectKey, ServiceRoute] = {}

    async def reconcile(self, route: ServiceRoute) -> None:
        refuse_service_fields(route, ROUTER)
        namespace, _ = split_key(route.key)
        await self._service(namespace, apex_name(route))  # the platform makes it; missing is an error here
        self._routes[route.key] = route

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        refuse_routes(routes, ROUTER, why=BLUE_GREEN_ONLY)
        if routes.canary not in (0, 100):
            raise RouterError(f"a {routes.canary}% canary weight: {BLUE_GREEN_ONLY}")
        route = self._route(key)
        namespace, _ = split_key(key)
        group = route.canary[0].host if routes.canary == 100 else route.primary[0].host
        selector = _selector(await self._service(namespace, group))
        apex = await self._service(namespace, apex_name(route))
        await self._point(apex, selector)

    async def get_routes(self, key: ObjectKey) -> Routes:
        route = self._route(key)
        namespace, _ = split_key(key)
        apex = _selector(await self._service(namespace, apex_name(route)))
        if apex == _selector(await self._service(namespace, route.primary[0].host)):
            return Routes(100, 0)
        if apex == _selector(await self._service(namespace, route.canary[0].host)):
            return Routes(0, 100)
        raise RouterError(
            f"Service {namespace}/{apex_name(route)} selects {apex}, neither the primary nor the canary pods"
        )

    async def finalize(self, key: ObjectKey) -> None:
        """The apex goes back to the primary pods (the platform decides what becomes of the Services)."""
        route = self._routes.pop(key, None)
        if route is None:
            return
        namespace, _ = split_key(key)
        with kube_errors():
            apex = await self.api.get(SERVICE, namespace, apex_name(route))
            primary = await self.api.get(SERVICE, namespace, route.primary[0].host)
        if apex is not None and primary is not None:
            await self._point(apex, _selector(primary))

    # -- helpers -----------------------------------------------------------------------------------

    def _route(self, key: ObjectKey) -> ServiceRoute:
        return reconciled(self._routes, key, "kubernetes")

    async def _service(self, namespace: str, name: str) -> Obj:
        with kube_errors():
            found = await self.api.get(SERVICE, namespace, name)
        if found is None:
            raise RouterError(f"Service {namespace}/{name} not found (the kubernetes platform creates it)")
        return found

    async def _point(self, apex: Obj, selector: dict[str, str]) -> None:
        if _selector(apex) == selector:
            return
        changed = for_update(apex)
        changed["spec"] = {**apex.get("spec", {}), "selector": selector}
        with kube_errors():  # a PUT on the version read: a concurrent change is a Conflict, not a blend
            await self.api.replace(changed)


def _selector(service: Obj) -> dict[str, str]:
    found = (service.get("spec") or {}).get("selector") or {}
    return {str(k): str(v) for k, v in found.items()}
