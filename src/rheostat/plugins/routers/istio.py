"""The Istio router: a VirtualService `<apex>` and DestinationRules `<apex>-primary` / `<apex>-canary`."""

from __future__ import annotations

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import KubeAPI, Obj
from rheostat.plugins.kube.kinds import DESTINATION_RULE, VIRTUAL_SERVICE
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, reconciled
from rheostat.plugins.routers.istio_spec import (
    Names,
    check_service,
    destination_rule_spec,
    routes_of,
    virtual_service_spec,
)
from rheostat.plugins.routers.takeover import (
    apex_of,
    backends,
    call,
    namespace_of,
    new_object,
    owner_of,
    release,
    write,
)


def names_of(route: ServiceRoute) -> Names:
    primary, canary = backends(route)
    return Names(namespace_of(route.key), apex_of(route), primary, canary)


class IstioRouter:
    """Weights, A/B matches, mirroring and session affinity through Istio's networking API."""

    name = "istio"

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._routes: dict[ObjectKey, ServiceRoute] = {}
        self._written: dict[ObjectKey, Routes] = {}  # the last split set, to report it exactly when in force
        # The VirtualService as reconcile() left it: a tick reads the routes right after reconcile, so
        # reconcile's GET serves both; get_routes() takes it (once), anything later reads the live one.
        self._fresh: dict[ObjectKey, Obj] = {}

    def _route(self, key: ObjectKey) -> ServiceRoute:
        return reconciled(self._routes, key, "istio")

    def _virtual_service(self, route: ServiceRoute, routes: Routes) -> Obj:
        names = names_of(route)
        apex = route.service.apex if route.service is not None else None
        extra = apex.model_dump(exclude_none=True) if apex is not None else None
        spec = virtual_service_spec(route, routes, names)
        return new_object(VIRTUAL_SERVICE, names.namespace, names.apex, route.key, spec, extra)

    async def _live(self, route: ServiceRoute) -> Obj | None:
        names = names_of(route)
        return await call(self.api.get(VIRTUAL_SERVICE, names.namespace, names.apex))

    async def reconcile(self, route: ServiceRoute) -> None:
        check_service(route.service)
        names = names_of(route)
        for host in (names.primary, names.canary):
            rule = new_object(
                DESTINATION_RULE, names.namespace, host, route.key, destination_rule_spec(route, host)
            )
            existing = await call(self.api.get(DESTINATION_RULE, names.namespace, host))
            await write(self.api, DESTINATION_RULE, route.key, existing, rule)
        self._routes[route.key] = route
        live = await self._live(route)
        current = Routes()
        if live is not None and owner_of(live) == route.key:
            current = self._read(route, live)
        desired = self._virtual_service(route, current)
        self._fresh[route.key] = await write(self.api, VIRTUAL_SERVICE, route.key, live, desired)

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        route = self._route(key)
        desired = self._virtual_service(route, routes)  # the whole split, written in one apply
        self._fresh.pop(key, None)
        await write(self.api, VIRTUAL_SERVICE, key, await self._live(route), desired)
        self._written[key] = routes

    async def get_routes(self, key: ObjectKey) -> Routes:
        route = self._route(key)
        live = self._fresh.pop(key, None) or await self._live(route)
        names = names_of(route)
        if live is None:
            raise RouterError(f"VirtualService {names.namespace}/{names.apex} not found")
        return self._read(route, live)

    def _read(self, route: ServiceRoute, live: Obj) -> Routes:
        spec = live.get("spec") or {}
        written = self._written.get(route.key)
        # What Istio cannot hold (a mirror percentage while not mirroring) is reported as it was set.
        if written is not None and virtual_service_spec(route, written, names_of(route)) == spec:
            return written
        return routes_of(spec, route, names_of(route))

    async def finalize(self, key: ObjectKey) -> None:
        route = self._routes.pop(key, None)
        self._written.pop(key, None)
        self._fresh.pop(key, None)
        revert = route.revert_on_deletion if route is not None else False
        for kind in (VIRTUAL_SERVICE, DESTINATION_RULE):
            await release(self.api, kind, key, revert=revert)
