"""The Gateway API router: one `HTTPRoute` `<apex>` attached to `service.gatewayRefs`."""

from __future__ import annotations

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import Kind, KubeAPI, Obj
from rheostat.plugins.kube.kinds import HTTPROUTE
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, reconciled
from rheostat.plugins.routers.gatewayapi_spec import check_service, http_route_spec, routes_of
from rheostat.plugins.routers.istio import names_of
from rheostat.plugins.routers.takeover import call, new_object, owner_of, release, write


def _not_accepted(live: Obj) -> str | None:
    """Why a parent Gateway does not (yet) serve this generation of the route, or None."""
    generation = int((live.get("metadata") or {}).get("generation", 0))
    for parent in (live.get("status") or {}).get("parents") or []:
        for cond in parent.get("conditions") or []:
            if cond.get("type") != "Accepted":
                continue
            ref = (parent.get("parentRef") or {}).get("name", "?")
            if cond.get("status") != "True":
                return f"parent {ref} did not accept it: {cond.get('reason', '')} {cond.get('message', '')}".strip()
            if int(cond.get("observedGeneration", generation)) < generation:
                return f"parent {ref} has not yet seen generation {generation}"
    return None


class GatewayAPIRouter:
    """Weights, A/B matches, RequestMirror and session affinity through a Gateway API HTTPRoute."""

    name = "gatewayapi"

    def __init__(self, api: KubeAPI, *, kind: Kind = HTTPROUTE) -> None:
        self.api = api
        self.kind = kind  # gateway.networking.k8s.io/v1, or v1beta1 for older gateways
        self._routes: dict[ObjectKey, ServiceRoute] = {}
        self._written: dict[ObjectKey, Routes] = {}

    def _route(self, key: ObjectKey) -> ServiceRoute:
        return reconciled(self._routes, key, "gatewayapi")

    def _http_route(self, route: ServiceRoute, routes: Routes) -> Obj:
        names = names_of(route)
        apex = route.service.apex if route.service is not None else None
        extra = apex.model_dump(exclude_none=True) if apex is not None else None
        spec = http_route_spec(route, routes, names)
        return new_object(self.kind, names.namespace, names.apex, route.key, spec, extra)

    async def _live(self, route: ServiceRoute) -> Obj | None:
        names = names_of(route)
        return await call(self.api.get(self.kind, names.namespace, names.apex))

    async def reconcile(self, route: ServiceRoute) -> None:
        check_service(route.service)
        self._routes[route.key] = route
        live = await self._live(route)
        current = Routes()
        if live is not None and owner_of(live) == route.key:
            current = self._read(route, live)
        await write(self.api, self.kind, route.key, live, self._http_route(route, current))

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        route = self._route(key)
        desired = self._http_route(route, routes)  # the whole split, written in one apply
        await write(self.api, self.kind, key, await self._live(route), desired)
        self._written[key] = routes

    async def get_routes(self, key: ObjectKey) -> Routes:
        route = self._route(key)
        live = await self._live(route)
        names = names_of(route)
        what = f"HTTPRoute {names.namespace}/{names.apex}"
        if live is None:
            raise RouterError(f"{what} not found")
        why = _not_accepted(live)
        if why is not None:
            raise RouterError(f"{what}: {why}")
        return self._read(route, live)

    def _read(self, route: ServiceRoute, live: Obj) -> Routes:
        spec = live.get("spec") or {}
        written = self._written.get(route.key)
        # What an HTTPRoute cannot hold (a mirror percent while not mirroring) is reported as it was set.
        if written is not None and http_route_spec(route, written, names_of(route)) == spec:
            return written
        return routes_of(spec, route, names_of(route))

    async def finalize(self, key: ObjectKey) -> None:
        route = self._routes.pop(key, None)
        self._written.pop(key, None)
        await release(
            self.api, self.kind, key, revert=route.revert_on_deletion if route is not None else False
        )
