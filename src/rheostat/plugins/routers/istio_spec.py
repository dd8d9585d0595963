"""Pure rendering of a canary's Istio objects, and reading a split back from a VirtualService.

Layout (Flagger's): a VirtualService `<apex>` whose HTTP routes are, in order, the A/B route (requests
matching `Routes.match` go to the canary), the sticky routes (a client holding the session cookie stays where
it was sent), and the default route: the weighted split, with the mirror and the `Set-Cookie` that pins a
client to the canary. DestinationRules `<apex>-primary` / `<apex>-canary` carry `service.trafficPolicy`.
Routes are named so the split can be read back without guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rheostat.model.canary import AnalysisMatch, Service
from rheostat.plugins.kube.api import Obj
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, StickyCookie

AB_ROUTE = "ab"
STICKY_ROUTE = "sticky"
STICKY_PRIMARY_ROUTE = "sticky-primary"
DEFAULT_ROUTE = "default"
SET_COOKIE = "Set-Cookie"
COOKIE = "cookie"  # Istio wants header names in lower case
# Flagger gives the primary cookie a lifetime of one analysis interval, so a client sent to the primary is
# dealt again at the next step; the route contract carries no interval, so a minute stands in for it.
PRIMARY_COOKIE_MAX_AGE_S = 60
REWRITE_TYPES = (None, "ReplacePrefixMatch", "ReplaceFullPath")


@dataclass(frozen=True)
class Names:
    namespace: str
    apex: str
    primary: str
    canary: str


def refused(field: str, why: str = "") -> RouterError:
    return RouterError(f"service.{field} is not supported by the istio router" + (f" ({why})" if why else ""))


def check_service(service: Service | None) -> None:
    """Refuse by name the `spec.service` fields Istio cannot express (platform-only fields pass)."""
    if service is None:
        return
    for field in ("backendTimeout", "meshName", "backends", "mirror", "gatewayRefs"):
        if getattr(service, field):
            raise refused(field)
    if is_tcp(service):
        for field in ("retries", "timeout", "headers", "rewrite", "corsPolicy", "delegation"):
            if getattr(service, field):
                raise refused(field, "an HTTP setting on a TCP service (appProtocol TCP)")
        for i, m in enumerate(service.match or []):
            extra = sorted(m.model_fields_set - {"port", "name"})
            if extra:
                raise refused(f"match[{i}].{extra[0]}", "a TCP route matches on port only")
    if service.delegation and (service.hosts or service.gateways):
        raise RouterError("service.delegation: a delegate VirtualService cannot have hosts or gateways")
    if service.rewrite is not None and service.rewrite.type not in REWRITE_TYPES:
        raise refused("rewrite.type", f"{service.rewrite.type!r}; use ReplacePrefixMatch or ReplaceFullPath")


def is_tcp(service: Service | None) -> bool:
    """Flagger's rule: `appProtocol: TCP` makes the VirtualService route TCP, not HTTP."""
    return service is not None and (service.appProtocol or "").lower() == "tcp"


def check_routes(route: ServiceRoute, routes: Routes) -> None:
    if not is_tcp(route.service):
        return
    for what, asked in (
        ("analysis.match", routes.match),
        ("analysis.mirror", routes.mirror),
        ("analysis.sessionAffinity", routes.sticky),
    ):
        if asked:
            raise RouterError(
                f"{what} is not supported by the istio router for a TCP service (appProtocol TCP)"
            )


def _dump(model: Any) -> Any:
    return model.model_dump(exclude_none=True, by_alias=True)


def service_matches(service: Service | None) -> list[Obj]:
    return [_dump(m) for m in (service.match or [])] if service is not None else []


def _common(route: ServiceRoute) -> Obj:
    """The fields every HTTP route of the canary shares: service match, rewrite, timeout, retries..."""
    service = route.service
    out: Obj = {}
    matches = service_matches(service)
    if matches:
        out["match"] = matches
    if service is not None and service.rewrite is not None:
        rw = service.rewrite
        rewrite: Obj = {}
        if rw.uri is not None and rw.type == "ReplaceFullPath":
            rewrite["uriRegexRewrite"] = {"match": "^.*$", "rewrite": rw.uri}
        elif rw.uri is not None:
            rewrite["uri"] = rw.uri  # Istio's own rewrite replaces the matched prefix
        if rw.authority is not None:
            rewrite["authority"] = rw.authority
        if rewrite:
            out["rewrite"] = rewrite
    timeout = service.timeout if service is not None else None
    if timeout is None and route.timeout_s is not None:
        timeout = f"{route.timeout_s:g}s"
    if timeout is not None:
        out["timeout"] = timeout
    retries = service.retries if service is not None and service.retries is not None else route.retries
    if retries is not None:
        out["retries"] = _dump(retries)
    if service is not None and service.corsPolicy is not None:
        out["corsPolicy"] = _dump(service.corsPolicy)
    if service is not None and service.headers is not None:
        out["headers"] = _dump(service.headers)
    return out


def _destination(route: ServiceRoute, host: str, weight: int) -> Obj:
    service = route.service
    destination: Obj = {"host": host}
    # Flagger: the port is named when the service is reached through a gateway (or delegated to)
    if (
        service is not None
        and service.portDiscovery
        and ((service.gateways and service.gateways[0] != "mesh") or service.delegation)
    ):
        destination["port"] = {"number": route.port}
    return {"destination": destination, "weight": weight}


def merge_matches(conditions: list[Obj], service: list[Obj]) -> list[Obj]:
    """Each condition combined with each service match (the service's uri, port... kept)."""
    if not service:
        return conditions
    return [{**s, **c} for c in conditions for s in service]


def cookie_regex(name: str, value: str) -> str:
    # RE2 full match of the whole Cookie header: the pair may be first, last or in between
    return f"^(.*?;\\s*)?{re.escape(f'{name}={value}')}(;.*)?$"


def set_cookie(name: str, value: str, max_age: int) -> str:
    return f"{name}={value}; Max-Age={max_age}"


def parse_set_cookie(value: str) -> StickyCookie:
    pair, _, attrs = value.partition(";")
    name, _, cookie_value = pair.strip().partition("=")
    max_age = 86400
    for attr in attrs.split(";"):
        k, _, v = attr.strip().partition("=")
        if k.lower() == "max-age" and v.lstrip("-").isdigit():
            max_age = int(v)
    return StickyCookie(name=name, value=cookie_value, max_age=max_age)


def analysis_match(match: AnalysisMatch) -> Obj:
    return {k: v for k, v in _dump(match).items() if v}


def _tcp_spec(route: ServiceRoute, routes: Routes, names: Names) -> list[Obj]:
    tcp: Obj = {}
    ports = [{"port": m.port} for m in (route.service.match or [] if route.service else []) if m.port]
    if ports:
        tcp["match"] = ports
    tcp["route"] = [
        {"destination": {"host": host, "port": {"number": route.port}}, "weight": weight}
        for host, weight in ((names.primary, routes.primary), (names.canary, routes.canary))
    ]
    return [tcp]


def virtual_service_spec(route: ServiceRoute, routes: Routes, names: Names) -> Obj:
    service = route.service
    check_routes(route, routes)
    common = _common(route)
    svc_matches = service_matches(service)
    http: list[Obj] = []
    if routes.match:
        conditions = [analysis_match(m) for m in routes.match]
        http.append(
            {
                **common,
                "name": AB_ROUTE,
                "match": merge_matches(conditions, svc_matches),
                "route": [_destination(route, names.canary, 100)],
            }
        )
    sticky = routes.sticky
    if sticky is not None and routes.canary > 0:
        cookie = {"headers": {COOKIE: {"regex": cookie_regex(sticky.name, sticky.value)}}}
        http.append(
            {
                **common,
                "name": STICKY_ROUTE,
                "match": merge_matches([cookie], svc_matches),
                "route": [_destination(route, names.canary, 100)],
            }
        )
        if route.primary_cookie:
            cookie = {"headers": {COOKIE: {"regex": cookie_regex(route.primary_cookie, sticky.value)}}}
            http.append(
                {
                    **common,
                    "name": STICKY_PRIMARY_ROUTE,
                    "match": merge_matches([cookie], svc_matches),
                    "route": [_destination(route, names.primary, 100)],
                }
            )
    primary = _destination(route, names.primary, routes.primary)
    canary = _destination(route, names.canary, routes.canary)
    if sticky is not None:
        value = set_cookie(sticky.name, sticky.value, sticky.max_age)
        canary["headers"] = {"response": {"add": {SET_COOKIE: value}}}
        if route.primary_cookie and routes.canary > 0:
            value = set_cookie(route.primary_cookie, sticky.value, PRIMARY_COOKIE_MAX_AGE_S)
            primary["headers"] = {"response": {"add": {SET_COOKIE: value}}}
    default: Obj = {**common, "name": DEFAULT_ROUTE, "route": [primary, canary]}
    if routes.mirror:
        default["mirror"] = {"host": names.canary}
        default["mirrorPercentage"] = {"value": float(routes.mirror_weight)}
    http.append(default)

    delegated = service is not None and bool(service.delegation)
    hosts = list(service.hosts or []) if service is not None else []
    if names.apex not in hosts and "*" not in hosts:
        hosts.append(names.apex)
    gateways = list(service.gateways or []) if service is not None else []
    spec: Obj = {"hosts": [] if delegated else hosts, "gateways": [] if delegated else (gateways or ["mesh"])}
    if is_tcp(service):
        spec["tcp"] = _tcp_spec(route, routes, names)
    else:
        spec["http"] = http
    return spec


def destination_rule_spec(route: ServiceRoute, host: str) -> Obj:
    spec: Obj = {"host": host}
    if route.service is not None and route.service.trafficPolicy is not None:
        spec["trafficPolicy"] = _dump(route.service.trafficPolicy)
    return spec


def _by_name(spec: Obj, name: str) -> Obj | None:
    return next((r for r in spec.get("http") or [] if r.get("name") == name), None)


def _conditions(route: ServiceRoute, matches: list[Obj]) -> tuple[AnalysisMatch, ...]:
    """The A/B conditions back out of matches merged with the service matches."""
    svc = service_matches(route.service)
    stride = max(1, len(svc))
    base = svc[0] if svc else {}
    out = []
    for merged in matches[::stride]:
        cond = {
            k: merged[k] for k in ("headers", "queryParams", "sourceLabels") if merged.get(k) != base.get(k)
        }
        out.append(AnalysisMatch.model_validate(cond))
    return tuple(out)


def routes_of(spec: Obj, route: ServiceRoute, names: Names) -> Routes:
    """The split in force in a VirtualService spec this router wrote."""
    default = (spec.get("tcp") or [None])[0] if is_tcp(route.service) else _by_name(spec, DEFAULT_ROUTE)
    if default is None:
        raise RouterError(
            f"VirtualService {names.namespace}/{names.apex} has no route named {DEFAULT_ROUTE!r}"
        )
    weights = {d["destination"]["host"]: int(d.get("weight", 0)) for d in default.get("route") or []}
    primary, canary = weights.get(names.primary, 0), weights.get(names.canary, 0)
    if primary + canary != 100:
        raise RouterError(
            f"VirtualService {names.namespace}/{names.apex}: weights {primary}/{canary} "
            f"of {names.primary}/{names.canary} do not sum to 100"
        )
    sticky = None
    for d in default.get("route") or []:
        added = ((d.get("headers") or {}).get("response") or {}).get("add") or {}
        if d["destination"]["host"] == names.canary and SET_COOKIE in added:
            sticky = parse_set_cookie(added[SET_COOKIE])
    mirror = (default.get("mirror") or {}).get("host") == names.canary
    percentage = (default.get("mirrorPercentage") or {}).get("value")
    ab = _by_name(spec, AB_ROUTE)
    return Routes(
        primary=primary,
        canary=canary,
        mirror=mirror,
        mirror_weight=round(percentage) if mirror and percentage is not None else 100,
        match=_conditions(route, ab.get("match") or []) if ab is not None else (),
        sticky=sticky,
    )
