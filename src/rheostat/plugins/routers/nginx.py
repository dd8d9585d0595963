"""NGINX ingress canary annotations (ingress-nginx), as Flagger's `nginx` provider writes them.

The Canary's `ingressRef` Ingress is left alone; a copy `<ingress>-canary` whose backends point at
`<apex>-canary` carries `canary: "true"` and `canary-weight`. A/B maps Flagger's way: a header condition to
`canary-by-header` with `canary-by-header-value` (exact) or `canary-by-header-pattern` (regex), and
`headers.cookie.exact: NAME` to `canary-by-cookie: NAME` (the cookie NAME=always reaches the canary). NGINX
takes one header and one cookie, each OR-ed with the weight; anything else (several headers in one condition,
prefix/suffix, query parameters, source labels), mirroring and session affinity are refused.
"""

from __future__ import annotations

import copy

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, StringMatch
from rheostat.plugins.kube.api import KubeAPI, Obj
from rheostat.plugins.kube.kinds import INGRESS
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, reconciled
from rheostat.plugins.routers.kubernetes_common import (
    MANAGED_BY,
    apex_name,
    for_update,
    kube_errors,
    marks,
    owner,
    refuse_routes,
    refuse_service_fields,
    split_key,
)

PREFIX = "nginx.ingress.kubernetes.io"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
ROUTER = "nginx"


class NginxRouter:
    def __init__(self, api: KubeAPI, *, annotations_prefix: str = PREFIX) -> None:
        self.api = api
        self.prefix = annotations_prefix
        self._routes: dict[ObjectKey, ServiceRoute] = {}

    def _a(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    # -- the Router port ---------------------------------------------------------------------------

    async def reconcile(self, route: ServiceRoute) -> None:
        refuse_service_fields(route, ROUTER)
        if not route.ingress:
            raise RouterError("ingressRef is required by the nginx router (the Ingress to make a canary of)")
        namespace, _ = split_key(route.key)
        with kube_errors():
            ingress = await self.api.get(INGRESS, namespace, route.ingress)
            current = await self.api.get(INGRESS, namespace, canary_name(route.ingress))
        if ingress is None:
            raise RouterError(f"ingressRef: Ingress {namespace}/{route.ingress} not found")
        if current is not None and owner(current) != route.key:
            raise RouterError(
                f"Ingress {namespace}/{canary_name(route.ingress)} exists and is not managed by canary {route.key}"
            )
        routing = self._routing(current) if current is not None else {self._a("canary-weight"): "0"}
        desired = self._render(route, ingress, routing)
        self._routes[route.key] = route
        await self._write(desired, current)

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        refuse_routes(routes, ROUTER, match=True)
        routing = {self._a("canary-weight"): str(routes.canary), **self._match_annotations(routes.match)}
        route = self._route(key)
        current = await self._get(route)
        desired = for_update(copy.deepcopy(current))
        kept = {
            k: v for k, v in (current["metadata"].get("annotations") or {}).items() if not self._not_copied(k)
        }
        desired["metadata"]["annotations"] = {**kept, self._a("canary"): "true", **routing}
        await self._write(desired, current)

    async def get_routes(self, key: ObjectKey) -> Routes:
        current = await self._get(self._route(key))
        annotations = current["metadata"].get("annotations") or {}
        name = current["metadata"]["name"]
        if annotations.get(self._a("canary")) != "true":
            raise RouterError(f'Ingress {name} is not an NGINX canary (no {self._a("canary")}: "true")')
        raw = annotations.get(self._a("canary-weight"), "0")
        try:
            weight = int(raw)
        except ValueError:
            raise RouterError(
                f"Ingress {name}: {self._a('canary-weight')} is {raw!r}, not a number"
            ) from None
        if not 0 <= weight <= 100:
            raise RouterError(f"Ingress {name}: {self._a('canary-weight')} {weight} is outside 0..100")
        return Routes(100 - weight, weight, match=self._read_match(annotations))

    async def finalize(self, key: ObjectKey) -> None:
        self._routes.pop(key, None)
        namespace, _ = split_key(key)
        with kube_errors():
            for obj in await self.api.list(INGRESS, namespace, {MANAGED_BY: "rheostat"}):
                if owner(obj) == key:
                    await self.api.delete(INGRESS, namespace, obj["metadata"]["name"])

    # -- the canary Ingress ------------------------------------------------------------------------

    def _route(self, key: ObjectKey) -> ServiceRoute:
        return reconciled(self._routes, key, "nginx")

    async def _get(self, route: ServiceRoute) -> Obj:
        namespace, _ = split_key(route.key)
        name = canary_name(route.ingress or "")
        with kube_errors():
            current = await self.api.get(INGRESS, namespace, name)
        if current is None:
            raise RouterError(f"canary Ingress {namespace}/{name} does not exist")
        if owner(current) != route.key:
            raise RouterError(f"Ingress {namespace}/{name} is not managed by canary {route.key}")
        return current

    async def _write(self, desired: Obj, current: Obj | None) -> None:
        with kube_errors():
            if current is None:
                await self.api.apply(desired)
            elif not _same(desired, current):
                # A PUT on the version read: annotations dropped here are dropped there, and a concurrent
                # change is a Conflict (the old routes stay) rather than a blend of both.
                desired["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
                await self.api.replace(desired)

    def _not_copied(self, annotation: str) -> bool:
        return annotation.startswith(self._a("canary")) or annotation == LAST_APPLIED

    def _routing(self, current: Obj) -> dict[str, str]:
        annotations = current["metadata"].get("annotations") or {}
        return {k: v for k, v in annotations.items() if self._not_copied(k) and k != LAST_APPLIED}

    def _render(self, route: ServiceRoute, ingress: Obj, routing: dict[str, str]) -> Obj:
        namespace, _ = split_key(route.key)
        apex, target = apex_name(route), route.canary[0].host
        spec = copy.deepcopy(ingress.get("spec") or {})
        found = False
        for rule in spec.get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                service = (path.get("backend") or {}).get("service")
                if service is not None and service.get("name") == apex:
                    service["name"] = target
                    found = True
        if not found:
            raise RouterError(
                f"ingressRef: Ingress {namespace}/{route.ingress} has no backend for service {apex}"
            )
        meta = ingress.get("metadata", {})
        ours_labels, ours_annotations = marks(route.key)
        kept = {k: v for k, v in (meta.get("annotations") or {}).items() if not self._not_copied(k)}
        return {
            "apiVersion": INGRESS.api_version,
            "kind": INGRESS.kind,
            "metadata": {
                "name": canary_name(meta["name"]),
                "namespace": namespace,
                "labels": {**(meta.get("labels") or {}), **ours_labels},
                "annotations": {**kept, **ours_annotations, self._a("canary"): "true", **routing},
            },
            "spec": spec,
        }

    # -- A/B ---------------------------------------------------------------------------------------

    def _match_annotations(self, matches: tuple[AnalysisMatch, ...]) -> dict[str, str]:
        header: tuple[str, StringMatch] | None = None
        cookie: str | None = None
        for m in matches:
            if m.queryParams:
                raise RouterError("analysis.match.queryParams is not supported by the nginx router")
            if m.sourceLabels:
                raise RouterError("analysis.match.sourceLabels is not supported by the nginx router")
            if not m.headers or len(m.headers) != 1:
                raise RouterError(
                    "analysis.match: the nginx router takes one header (or the cookie) per condition, "
                    f"got {sorted(m.headers or {})}"
                )
            ((name, value),) = m.headers.items()
            if name.lower() == "cookie":
                if value.exact is None or (cookie is not None and cookie != value.exact):
                    raise RouterError(
                        "analysis.match.headers.cookie: the nginx router takes one cookie name, as exact"
                    )
                cookie = value.exact
            else:
                if value.exact is None and value.regex is None:
                    raise RouterError(f"analysis.match.headers.{name}: the nginx router takes exact or regex")
                if header is not None and header != (name, value):
                    raise RouterError("analysis.match: the nginx router routes on one header only")
                header = (name, value)
        out: dict[str, str] = {}
        if header is not None:
            name, value = header
            out[self._a("canary-by-header")] = name
            if value.exact is not None:
                out[self._a("canary-by-header-value")] = value.exact
            elif value.regex is not None:
                out[self._a("canary-by-header-pattern")] = value.regex
        if cookie is not None:
            out[self._a("canary-by-cookie")] = cookie
        return out

    def _read_match(self, annotations: dict[str, str]) -> tuple[AnalysisMatch, ...]:
        """The A/B conditions in force: the header first, then the cookie."""
        out: list[AnalysisMatch] = []
        if (name := annotations.get(self._a("canary-by-header"))) is not None:
            if (exact := annotations.get(self._a("canary-by-header-value"))) is not None:
                out.append(AnalysisMatch(headers={name: StringMatch(exact=exact)}))
            elif (regex := annotations.get(self._a("canary-by-header-pattern"))) is not None:
                out.append(AnalysisMatch(headers={name: StringMatch(regex=regex)}))
            else:  # NGINX's own meaning of a bare header: the value "always"
                out.append(AnalysisMatch(headers={name: StringMatch(exact="always")}))
        if (cookie := annotations.get(self._a("canary-by-cookie"))) is not None:
            out.append(AnalysisMatch(headers={"cookie": StringMatch(exact=cookie)}))
        return tuple(out)


def canary_name(ingress: str) -> str:
    return f"{ingress}-canary"


def _same(desired: Obj, current: Obj) -> bool:
    want, have = desired["metadata"], current.get("metadata", {})
    return (
        desired.get("spec") == current.get("spec")
        and want.get("labels") == (have.get("labels") or {})
        and want.get("annotations") == (have.get("annotations") or {})
    )
