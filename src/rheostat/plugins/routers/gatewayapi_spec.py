"""Pure rendering of a canary's Gateway API `HTTPRoute`, and reading a split back from one.

Rules, in order (each named): `ab` (requests matching `Routes.match` go to the canary), `sticky` /
`sticky-primary` (a client holding the session cookie stays where it was sent), `default` (the weighted
split, the RequestMirror filter, and the `Set-Cookie` response filter on the canary backend).
"""

from __future__ import annotations

import re
from typing import Any

from rheostat.model.canary import AnalysisMatch, Service, StringMatch
from rheostat.plugins.kube.api import Obj
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute
from rheostat.plugins.routers.istio_spec import (
    AB_ROUTE,
    DEFAULT_ROUTE,
    PRIMARY_COOKIE_MAX_AGE_S,
    SET_COOKIE,
    STICKY_PRIMARY_ROUTE,
    STICKY_ROUTE,
    Names,
    cookie_regex,
    parse_set_cookie,
    set_cookie,
)
from rheostat.util.durations import parse_duration

COOKIE = "Cookie"
ROOT = {"path": {"type": "PathPrefix", "value": "/"}}
DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")  # GEP-2257, as the CRD checks it


def refused(field: str, why: str = "") -> RouterError:
    return RouterError(
        f"service.{field} is not supported by the gatewayapi router" + (f" ({why})" if why else "")
    )


def check_service(service: Service | None) -> None:
    """Refuse by name the `spec.service` fields an HTTPRoute cannot express (platform-only fields pass)."""
    if service is None or not service.gatewayRefs:
        raise RouterError("service.gatewayRefs is required by the gatewayapi router (the parent Gateways)")
    for field in ("retries", "trafficPolicy", "gateways", "delegation", "meshName", "backends"):
        if getattr(service, field):
            raise refused(field)
    if (service.appProtocol or "").lower() == "tcp":
        raise refused("appProtocol", "TCP routes")
    if service.corsPolicy is not None and service.corsPolicy.allowOrigins:
        raise refused("corsPolicy.allowOrigins", "use corsPolicy.allowOrigin")
    rewrite = service.rewrite
    if rewrite is not None and rewrite.type not in (None, "ReplaceFullPath", "ReplacePrefixMatch"):
        raise refused("rewrite.type", f"{rewrite.type!r}; use ReplaceFullPath or ReplacePrefixMatch")
    for field, value in (("timeout", service.timeout), ("backendTimeout", service.backendTimeout)):
        if value is not None and parse_duration(value) < 0.001:
            raise refused(field, f"{value!r} is below 1ms")
    service_matches(service)  # refuses what cannot be matched


def _string(match: StringMatch, types: tuple[str, str]) -> tuple[str, str]:
    """(type, value) of an exact or regex match; prefix and suffix become regular expressions."""
    exact, regex = types
    if match.exact is not None:
        return exact, match.exact
    if match.regex is not None:
        return regex, match.regex
    if match.prefix is not None:
        return regex, f"^{re.escape(match.prefix)}.*"
    assert match.suffix is not None
    return regex, f".*{re.escape(match.suffix)}$"


def _pairs(values: dict[str, StringMatch] | None) -> list[Obj]:
    out = []
    for name, m in sorted((values or {}).items()):
        kind, value = _string(m, ("Exact", "RegularExpression"))
        out.append({"name": name, "type": kind, "value": value})
    return out


def service_matches(service: Service | None) -> list[Obj]:
    """`service.match` as HTTPRouteMatches; refuses by name what Gateway API cannot match on."""
    out: list[Obj] = []
    for i, m in enumerate(service.match or [] if service is not None else []):
        where = f"match[{i}]"
        for field in ("scheme", "authority", "withoutHeaders", "port", "sourceLabels", "sourceNamespace"):
            if getattr(m, field) is not None:
                raise refused(f"{where}.{field}")
        if m.gateways or m.ignoreUriCase:
            raise refused(f"{where}.{'gateways' if m.gateways else 'ignoreUriCase'}")
        match: Obj = {}
        if m.uri is not None:
            if m.uri.exact is not None:
                match["path"] = {"type": "Exact", "value": m.uri.exact}
            elif m.uri.prefix is not None:
                match["path"] = {"type": "PathPrefix", "value": m.uri.prefix}
            else:
                _, value = _string(m.uri, ("", ""))
                match["path"] = {"type": "RegularExpression", "value": value}
        if m.method is not None:
            if m.method.exact is None:
                raise refused(f"{where}.method", "only exact")
            match["method"] = m.method.exact
        if m.headers:
            match["headers"] = _pairs(m.headers)
        if m.queryParams:
            match["queryParams"] = _pairs(m.queryParams)
        out.append(match)
    return out or [dict(ROOT)]


def condition(match: AnalysisMatch) -> Obj:
    if match.sourceLabels:
        raise RouterError("analysis.match.sourceLabels is not supported by the gatewayapi router")
    out: Obj = {}
    if match.headers:
        out["headers"] = _pairs(match.headers)
    if match.queryParams:
        out["queryParams"] = _pairs(match.queryParams)
    return out


def merge_matches(conditions: list[Obj], service: list[Obj]) -> list[Obj]:
    return [{**s, **c} for c in conditions for s in service]


def _headers_filter(kind: str, ops: Any) -> Obj:
    body: Obj = {}
    for op in ("add", "set"):
        values = getattr(ops, op)
        if values:
            body[op] = [{"name": k, "value": v} for k, v in sorted(values.items())]
    if ops.remove:
        body["remove"] = list(ops.remove)
    field = kind[0].lower() + kind[1:]
    return {"type": kind, field: body}


def _duration(value: str) -> str:
    return value if DURATION.match(value) else f"{round(parse_duration(value) * 1000)}ms"


def _filters(route: ServiceRoute) -> list[Obj]:
    """Rule filters from `spec.service`: header modifiers, URL rewrite, static mirrors, CORS."""
    service = route.service
    assert service is not None
    out: list[Obj] = []
    if service.headers is not None:
        if service.headers.request is not None:
            out.append(_headers_filter("RequestHeaderModifier", service.headers.request))
        if service.headers.response is not None:
            out.append(_headers_filter("ResponseHeaderModifier", service.headers.response))
    rw = service.rewrite
    if rw is not None and (rw.uri is not None or rw.authority is not None):
        rewrite: Obj = {}
        if rw.authority is not None:
            rewrite["hostname"] = rw.authority
        if rw.uri is not None:
            if rw.type == "ReplacePrefixMatch":
                rewrite["path"] = {"type": "ReplacePrefixMatch", "replacePrefixMatch": rw.uri}
            else:  # Flagger's default for Gateway API
                rewrite["path"] = {"type": "ReplaceFullPath", "replaceFullPath": rw.uri}
        out.append({"type": "URLRewrite", "urlRewrite": rewrite})
    for mirror in service.mirror or []:
        ref = mirror.backendRef.model_dump(exclude_none=True)
        out.append({"type": "RequestMirror", "requestMirror": {"backendRef": ref}})
    cors = service.corsPolicy
    if cors is not None:
        body: Obj = {}
        for ours, theirs in (
            ("allowOrigin", "allowOrigins"),
            ("allowMethods", "allowMethods"),
            ("allowHeaders", "allowHeaders"),
            ("exposeHeaders", "exposeHeaders"),
        ):
            if getattr(cors, ours):
                body[theirs] = list(getattr(cors, ours))
        if cors.allowCredentials is not None:
            body["allowCredentials"] = cors.allowCredentials
        if cors.maxAge is not None:
            body["maxAge"] = round(parse_duration(cors.maxAge))
        out.append({"type": "CORS", "cors": body})
    return out


def _backend(route: ServiceRoute, name: str, weight: int) -> Obj:
    return {"group": "", "kind": "Service", "name": name, "port": route.port, "weight": weight}


def _rule(route: ServiceRoute, name: str, matches: list[Obj], backends: list[Obj]) -> Obj:
    service = route.service
    assert service is not None
    rule: Obj = {"name": name, "matches": matches}
    filters = _filters(route)
    if filters:
        rule["filters"] = filters
    rule["backendRefs"] = backends
    timeouts: Obj = {}
    if service.timeout is not None:
        timeouts["request"] = _duration(service.timeout)
    if service.backendTimeout is not None:
        timeouts["backendRequest"] = _duration(service.backendTimeout)
    if timeouts:
        rule["timeouts"] = timeouts
    rewrite = service.rewrite
    prefix_rewrite = rewrite is not None and rewrite.uri is not None and rewrite.type == "ReplacePrefixMatch"
    if prefix_rewrite and (len(matches) != 1 or matches[0].get("path", {}).get("type") != "PathPrefix"):
        raise refused("rewrite.type", "ReplacePrefixMatch needs exactly one PathPrefix match per rule")
    return rule


def _response_cookie(value: str) -> list[Obj]:
    return [
        {
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"add": [{"name": SET_COOKIE, "value": value}]},
        }
    ]


def http_route_spec(route: ServiceRoute, routes: Routes, names: Names) -> Obj:
    service = route.service
    assert service is not None and service.gatewayRefs
    svc = service_matches(service)
    rules: list[Obj] = []
    if routes.match:
        conditions = [condition(m) for m in routes.match]
        rules.append(
            _rule(route, AB_ROUTE, merge_matches(conditions, svc), [_backend(route, names.canary, 100)])
        )
    sticky = routes.sticky
    if sticky is not None and routes.canary > 0:
        cookie = {
            "headers": [
                {
                    "name": COOKIE,
                    "type": "RegularExpression",
                    "value": cookie_regex(sticky.name, sticky.value),
                }
            ]
        }
        rules.append(
            _rule(route, STICKY_ROUTE, merge_matches([cookie], svc), [_backend(route, names.canary, 100)])
        )
        if route.primary_cookie:
            regex = cookie_regex(route.primary_cookie, sticky.value)
            cookie = {"headers": [{"name": COOKIE, "type": "RegularExpression", "value": regex}]}
            rules.append(
                _rule(
                    route,
                    STICKY_PRIMARY_ROUTE,
                    merge_matches([cookie], svc),
                    [_backend(route, names.primary, 100)],
                )
            )
    primary = _backend(route, names.primary, routes.primary)
    canary = _backend(route, names.canary, routes.canary)
    if sticky is not None:
        canary["filters"] = _response_cookie(set_cookie(sticky.name, sticky.value, sticky.max_age))
        if route.primary_cookie and routes.canary > 0:
            primary["filters"] = _response_cookie(
                set_cookie(route.primary_cookie, sticky.value, PRIMARY_COOKIE_MAX_AGE_S)
            )
    default = _rule(route, DEFAULT_ROUTE, svc, [primary, canary])
    if routes.mirror:
        mirror = {
            "backendRef": {"group": "", "kind": "Service", "name": names.canary, "port": route.port},
            "percent": routes.mirror_weight,
        }
        default.setdefault("filters", []).append({"type": "RequestMirror", "requestMirror": mirror})
    rules.append(default)
    spec: Obj = {"parentRefs": [ref.model_dump(exclude_none=True) for ref in service.gatewayRefs]}
    if service.hosts:
        spec["hostnames"] = list(service.hosts)
    spec["rules"] = rules
    return spec


def _by_name(spec: Obj, name: str) -> Obj | None:
    return next((r for r in spec.get("rules") or [] if r.get("name") == name), None)


def _string_match(pair: Obj) -> StringMatch:
    if pair.get("type", "Exact") == "Exact":
        return StringMatch(exact=pair["value"])
    return StringMatch(regex=pair["value"])


def _conditions(route: ServiceRoute, matches: list[Obj]) -> tuple[AnalysisMatch, ...]:
    svc = service_matches(route.service)
    out = []
    for merged in matches[:: len(svc)]:
        cond: Obj = {}
        for field in ("headers", "queryParams"):
            if merged.get(field) != svc[0].get(field):
                cond[field] = {p["name"]: _string_match(p) for p in merged.get(field) or []}
        out.append(AnalysisMatch.model_validate(cond))
    return tuple(out)


def routes_of(spec: Obj, route: ServiceRoute, names: Names) -> Routes:
    """The split in force in an HTTPRoute spec this router wrote."""
    default = _by_name(spec, DEFAULT_ROUTE)
    if default is None:
        raise RouterError(f"HTTPRoute {names.namespace}/{names.apex} has no rule named {DEFAULT_ROUTE!r}")
    weights = {b["name"]: int(b.get("weight", 1)) for b in default.get("backendRefs") or []}
    primary, canary = weights.get(names.primary, 0), weights.get(names.canary, 0)
    if primary + canary != 100:
        raise RouterError(
            f"HTTPRoute {names.namespace}/{names.apex}: weights {primary}/{canary} "
            f"of {names.primary}/{names.canary} do not sum to 100"
        )
    sticky = None
    for b in default.get("backendRefs") or []:
        for f in b.get("filters") or []:
            for h in (f.get("responseHeaderModifier") or {}).get("add") or []:
                if b["name"] == names.canary and h["name"] == SET_COOKIE:
                    sticky = parse_set_cookie(h["value"])
    mirrors = [
        f["requestMirror"]
        for f in default.get("filters") or []
        if f.get("type") == "RequestMirror" and f["requestMirror"]["backendRef"]["name"] == names.canary
    ]
    ab = _by_name(spec, AB_ROUTE)
    return Routes(
        primary=primary,
        canary=canary,
        mirror=bool(mirrors),
        mirror_weight=int(mirrors[0].get("percent", 100)) if mirrors else 100,
        match=_conditions(route, ab.get("matches") or []) if ab is not None else (),
        sticky=sticky,
    )
