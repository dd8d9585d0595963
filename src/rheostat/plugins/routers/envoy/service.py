"""The Canary's `spec.service` on the Envoy listener: what is honoured, rendered, and what is refused by name.

Honoured: headers, rewrite, corsPolicy, match, trafficPolicy (connection pool, load balancer, outlier
detection), besides port, timeout and retries (config.py). Refused: what a local listener cannot express
(gateways, hosts, TLS to the replicas, ...). Harmless metadata (names, labels) is accepted as it is.
"""

from __future__ import annotations

import re
from typing import Any

from rheostat.model.canary import (
    ConnectionPool,
    CorsPolicy,
    HeaderOps,
    LoadBalancer,
    OutlierDetection,
    Rewrite,
    Service,
    ServiceMatch,
    StringMatch,
    TrafficPolicy,
)
from rheostat.plugins.routers.base import RouterError, ServiceRoute
from rheostat.util.durations import parse_duration

Json = dict[str, Any]

ROUTER = "envoy"
CORS_FILTER = "envoy.filters.http.cors"
CORS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"
CORS_POLICY_TYPE = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"
HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HTTP_OPTIONS_TYPE = f"type.googleapis.com/{HTTP_OPTIONS}"

# Fields that would change where or how traffic flows in a mesh or a gateway, with no meaning for one local
# listener: refused by name rather than silently dropped.
REFUSED = {
    "hosts": "the listener answers every Host; there is no virtual service to restrict",
    "gateways": "there is no gateway in front of the local listener",
    "gatewayRefs": "there is no gateway in front of the local listener",
    "delegation": "there is no root virtual service to delegate from",
    "meshName": "there is no mesh",
    "backends": "there is no mesh egress to open",
    "trafficDistribution": "local replicas have no zone or node to prefer",
    "headless": "there is no cluster DNS; the listener is the only address",
    "mirror": "only the canary can be mirrored (analysis.mirror)",
    "backendTimeout": "use service.retries.perTryTimeout",
}
# Honoured here or in config.py (port, timeout, retries), or accepted without effect because they do not
# change what a request meets: names and metadata of the Kubernetes objects Flagger would generate, and the
# port the replicas listen on (the platform chooses it). Every field of Service is in exactly one of
# HONOURED, HARMLESS and REFUSED (a test holds this, so a new field of the model needs a decision).
HONOURED = frozenset(
    {"port", "timeout", "retries", "match", "rewrite", "headers", "corsPolicy", "trafficPolicy"}
)
HARMLESS = frozenset(
    {"name", "portName", "targetPort", "portDiscovery", "appProtocol", "apex", "primary", "canary"}
    | {"unmanagedMetadata"}
)
LB_SIMPLE = {
    "ROUND_ROBIN": "ROUND_ROBIN",
    "LEAST_REQUEST": "LEAST_REQUEST",
    "LEAST_CONN": "LEAST_REQUEST",  # Istio's older name
    "RANDOM": "RANDOM",
}
REWRITE_TYPES = (None, "ReplacePrefixMatch", "ReplaceFullPath")


def refuse(field: str, why: str) -> RouterError:
    return RouterError(f"service.{field} is not supported by the {ROUTER} router ({why})")


def check(route: ServiceRoute) -> None:
    """RouterError naming the first field of `route.service` this router cannot express."""
    service = route.service
    if service is None:
        return
    for name, why in REFUSED.items():
        if getattr(service, name):
            raise refuse(name, why)
    if service.appProtocol is not None and service.appProtocol.lower() != "http":
        raise refuse("appProtocol", f"{service.appProtocol!r}: the listener proxies HTTP/1.1 only")
    for index, match in enumerate(service.match or []):
        _check_match(f"match[{index}]", match, route.port)
    if service.headers is not None:
        for direction in ("request", "response"):
            ops = getattr(service.headers, direction)
            if ops is not None:
                _check_headers(f"headers.{direction}", ops)
    if service.rewrite is not None and service.rewrite.type not in REWRITE_TYPES:
        raise refuse("rewrite.type", f"{service.rewrite.type!r}: use ReplacePrefixMatch or ReplaceFullPath")
    if service.corsPolicy is not None and service.corsPolicy.maxAge is not None:
        _seconds("corsPolicy.maxAge", service.corsPolicy.maxAge)
    if service.trafficPolicy is not None:
        _check_traffic(service.trafficPolicy)


def _check_match(field: str, match: ServiceMatch, port: int) -> None:
    for name in ("sourceLabels", "sourceNamespace", "gateways"):
        if getattr(match, name):
            raise refuse(f"{field}.{name}", "requests come from local clients, not from labelled pods")
    if match.port is not None and match.port != port:
        raise refuse(f"{field}.port", f"the listener has only port {port}")


def _check_headers(field: str, ops: HeaderOps) -> None:
    names = [*(ops.add or {}), *(ops.set or {}), *(ops.remove or [])]
    for name in names:
        if name.startswith(":") or name.lower() == "host":
            raise refuse(f"{field}: {name}", "Envoy cannot change it here; use service.rewrite.authority")


def _check_traffic(policy: TrafficPolicy) -> None:
    if policy.tls is not None and policy.tls.mode not in (None, "DISABLE"):
        raise refuse("trafficPolicy.tls", "local replicas are reached over plain HTTP on loopback")
    pool = policy.connectionPool
    if pool is not None and pool.http is not None:
        if pool.http.h2UpgradePolicy == "UPGRADE":
            raise refuse(
                "trafficPolicy.connectionPool.http.h2UpgradePolicy", "replicas are spoken to in HTTP/1.1"
            )
        if pool.http.idleTimeout is not None:
            _seconds("trafficPolicy.connectionPool.http.idleTimeout", pool.http.idleTimeout)
    lb = policy.loadBalancer
    if lb is not None:
        if lb.localityLbSetting is not None and (
            lb.localityLbSetting.enabled or lb.localityLbSetting.distribute or lb.localityLbSetting.failover
        ):
            raise refuse("trafficPolicy.loadBalancer.localityLbSetting", "local replicas have no locality")
        if lb.simple is not None and lb.simple not in LB_SIMPLE and lb.simple != "UNSPECIFIED":
            raise refuse(f"trafficPolicy.loadBalancer.simple {lb.simple}", "there is no original destination")
        if lb.consistentHash is not None:
            if lb.simple not in (None, "UNSPECIFIED"):
                raise refuse("trafficPolicy.loadBalancer", "set simple or consistentHash, not both")
            _check_hash(lb)
        if lb.warmupDurationSecs is not None:
            if lb.consistentHash is not None or lb.simple == "RANDOM":
                raise refuse(
                    "trafficPolicy.loadBalancer.warmupDurationSecs", "only with ROUND_ROBIN or LEAST_REQUEST"
                )
            _seconds("trafficPolicy.loadBalancer.warmupDurationSecs", lb.warmupDurationSecs)
    outlier = policy.outlierDetection
    if outlier is not None:
        for name in ("interval", "baseEjectionTime"):
            value = getattr(outlier, name)
            if value is not None:
                _seconds(f"trafficPolicy.outlierDetection.{name}", value)


def _check_hash(lb: LoadBalancer) -> None:
    ch = lb.consistentHash
    assert ch is not None
    keys = [
        ch.httpCookie is not None,
        bool(ch.httpHeaderName),
        bool(ch.httpQueryParameterName),
        bool(ch.useSourceIp),
    ]
    if sum(keys) != 1:
        raise refuse(
            "trafficPolicy.loadBalancer.consistentHash",
            "set exactly one of httpCookie, httpHeaderName, httpQueryParameterName, useSourceIp",
        )
    if ch.httpCookie is not None:
        if not ch.httpCookie.name:
            raise refuse("trafficPolicy.loadBalancer.consistentHash.httpCookie", "it needs a name")
        if ch.httpCookie.ttl is not None:
            _seconds("trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl", ch.httpCookie.ttl)


def _seconds(field: str, value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise RouterError(f"service.{field}: {exc}") from exc
    if seconds < 0:
        raise RouterError(f"service.{field}: {value!r} must not be negative")
    return seconds


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


# -- routes -------------------------------------------------------------------------------------------


def string_match(m: StringMatch) -> Json:
    if m.exact is not None:
        return {"exact": m.exact}
    if m.prefix is not None:
        return {"prefix": m.prefix}
    if m.suffix is not None:
        return {"suffix": m.suffix}
    return {"safe_regex": {"regex": m.regex}}


def header(name: str, match: Json, *, invert: bool = False) -> Json:
    out: Json = {"name": name, "string_match": match}
    if invert:  # Istio's withoutHeaders: a request without the header does not match the rule, so passes
        out["invert_match"] = True
        out["treat_missing_header_as_empty"] = True
    return out


def route_matches(service: Service | None) -> list[Json]:
    """One Envoy RouteMatch per `service.match` entry (Istio: any entry may match); none: every request."""
    if service is None or not service.match:
        return [{"prefix": "/"}]
    return [_route_match(m) for m in service.match]


def _route_match(m: ServiceMatch) -> Json:
    out: Json = {}
    ignore_case = bool(m.ignoreUriCase)
    if m.uri is None:
        out["prefix"] = "/"
    elif m.uri.exact is not None:
        out["path"] = m.uri.exact
    elif m.uri.prefix is not None:
        out["prefix"] = m.uri.prefix
    elif m.uri.suffix is not None:  # RouteMatch has no path suffix; a full-match regex says the same
        out["safe_regex"] = {"regex": f"{'(?i)' if ignore_case else ''}.*{re.escape(m.uri.suffix)}"}
    else:
        out["safe_regex"] = {"regex": f"{'(?i)' if ignore_case else ''}{m.uri.regex}"}
    if ignore_case and "safe_regex" not in out:
        out["case_sensitive"] = False
    headers: list[Json] = []
    for pseudo, value in ((":method", m.method), (":authority", m.authority), (":scheme", m.scheme)):
        if value is not None:
            headers.append(header(pseudo, string_match(value)))
    headers += [header(name, string_match(v)) for name, v in sorted((m.headers or {}).items())]
    headers += [
        header(name, string_match(v), invert=True) for name, v in sorted((m.withoutHeaders or {}).items())
    ]
    if headers:
        out["headers"] = headers
    if m.queryParams:
        out["query_parameters"] = [
            {"name": name, "string_match": string_match(v)} for name, v in sorted(m.queryParams.items())
        ]
    return out


def with_conditions(match: Json, headers: list[Json], query: list[Json] | None = None) -> Json:
    """`match` AND the extra header and query conditions (an A/B rule or a cookie within service.match)."""
    out = dict(match)
    if headers:
        out["headers"] = [*match.get("headers", []), *headers]
    if query:
        out["query_parameters"] = [*match.get("query_parameters", []), *query]
    return out


def rewrite_action(rewrite: Rewrite | None) -> Json:
    """`service.rewrite` on a route action. As Istio: `uri` replaces the matched prefix (the whole path when
    the match was an exact path); `type: ReplaceFullPath` replaces the whole path whatever the match."""
    if rewrite is None:
        return {}
    out: Json = {}
    if rewrite.uri is not None:
        if rewrite.type == "ReplaceFullPath":
            out["regex_rewrite"] = {"pattern": {"regex": "^/.*$"}, "substitution": rewrite.uri}
        else:
            out["prefix_rewrite"] = rewrite.uri
    if rewrite.authority is not None:
        out["host_rewrite_literal"] = rewrite.authority
    return out


def hash_policy(policy: TrafficPolicy | None) -> Json:
    """`loadBalancer.consistentHash` is a cluster's ring hash plus the route's hash key."""
    lb = policy.loadBalancer if policy is not None else None
    ch = lb.consistentHash if lb is not None else None
    if ch is None:
        return {}
    if ch.httpHeaderName:
        key: Json = {"header": {"header_name": ch.httpHeaderName}}
    elif ch.httpQueryParameterName:
        key = {"query_parameter": {"name": ch.httpQueryParameterName}}
    elif ch.useSourceIp:
        key = {"connection_properties": {"source_ip": True}}
    else:
        assert ch.httpCookie is not None and ch.httpCookie.name
        cookie: Json = {"name": ch.httpCookie.name}
        if ch.httpCookie.ttl is not None:  # with a ttl Envoy sets the cookie on a client that has none
            cookie["ttl"] = _duration(parse_duration(ch.httpCookie.ttl))
        if ch.httpCookie.path is not None:
            cookie["path"] = ch.httpCookie.path
        key = {"cookie": cookie}
    return {"hash_policy": [key]}


def vhost_extras(service: Service | None) -> Json:
    """Header operations and the CORS policy of the split's virtual host (not of the group hosts)."""
    if service is None:
        return {}
    out: Json = {}
    if service.headers is not None:
        for direction, ops in (("request", service.headers.request), ("response", service.headers.response)):
            if ops is None:
                continue
            added = [
                _header_value(k, v, "APPEND_IF_EXISTS_OR_ADD") for k, v in sorted((ops.add or {}).items())
            ]
            added += [
                _header_value(k, v, "OVERWRITE_IF_EXISTS_OR_ADD") for k, v in sorted((ops.set or {}).items())
            ]
            if added:
                out[f"{direction}_headers_to_add"] = added
            if ops.remove:
                out[f"{direction}_headers_to_remove"] = list(ops.remove)
    if service.corsPolicy is not None:
        out["typed_per_filter_config"] = {CORS_FILTER: cors_policy(service.corsPolicy)}
    return out


def _header_value(key: str, value: str, action: str) -> Json:
    return {"header": {"key": key, "value": value}, "append_action": action}


def cors_policy(cors: CorsPolicy) -> Json:
    origins = [string_match(m) for m in cors.allowOrigins or []]
    origins += [{"exact": origin} for origin in cors.allowOrigin or []]  # the old field: exact origins
    out: Json = {"@type": CORS_POLICY_TYPE, "allow_origin_string_match": origins}
    if cors.allowMethods:
        out["allow_methods"] = ",".join(cors.allowMethods)
    if cors.allowHeaders:
        out["allow_headers"] = ",".join(cors.allowHeaders)
    if cors.exposeHeaders:
        out["expose_headers"] = ",".join(cors.exposeHeaders)
    if cors.maxAge is not None:
        out["max_age"] = str(int(parse_duration(cors.maxAge)))
    if cors.allowCredentials is not None:
        out["allow_credentials"] = cors.allowCredentials
    return out


# -- clusters -----------------------------------------------------------------------------------------


def cluster_fields(cluster: Json, policy: TrafficPolicy | None) -> Json:
    """`cluster` (as config.py renders it) with `trafficPolicy` applied, as a DestinationRule would."""
    if policy is None:
        return cluster
    out = dict(cluster)
    if policy.connectionPool is not None:
        out.update(_pool(policy.connectionPool, out["circuit_breakers"]))
    if policy.loadBalancer is not None:
        out.update(_load_balancer(policy.loadBalancer))
    if policy.outlierDetection is not None:
        out.update(_outlier(policy.outlierDetection, out["outlier_detection"]))
    return out


def _pool(pool: ConnectionPool, breakers: Json) -> Json:
    http = pool.http
    if http is None:
        return {}
    threshold = dict(breakers["thresholds"][0])
    for field, value in (
        ("max_pending_requests", http.http1MaxPendingRequests),
        ("max_requests", http.http2MaxRequests),
        ("max_retries", http.maxRetries),
    ):
        if value is not None:
            threshold[field] = value
    if http.maxRetries is not None:  # a retry budget would override the fixed maximum
        threshold.pop("retry_budget", None)
    out: Json = {"circuit_breakers": {"thresholds": [threshold]}}
    common: Json = {}
    if http.idleTimeout is not None:
        common["idle_timeout"] = _duration(parse_duration(http.idleTimeout))
    if http.maxRequestsPerConnection is not None and http.maxRequestsPerConnection > 0:
        common["max_requests_per_connection"] = http.maxRequestsPerConnection
    if common:
        out["typed_extension_protocol_options"] = {
            HTTP_OPTIONS: {
                "@type": HTTP_OPTIONS_TYPE,
                "common_http_protocol_options": common,
                "explicit_http_config": {"http_protocol_options": {}},
            }
        }
    return out


def _load_balancer(lb: LoadBalancer) -> Json:
    out: Json = {}
    if lb.consistentHash is not None:
        out["lb_policy"] = "RING_HASH"
        if lb.consistentHash.minimumRingSize:
            out["ring_hash_lb_config"] = {"minimum_ring_size": lb.consistentHash.minimumRingSize}
        return out
    policy = LB_SIMPLE.get(lb.simple or "", "ROUND_ROBIN")
    if policy != "ROUND_ROBIN":
        out["lb_policy"] = policy
    if lb.warmupDurationSecs is not None:
        window = {
            "slow_start_config": {"slow_start_window": _duration(parse_duration(lb.warmupDurationSecs))}
        }
        out["least_request_lb_config" if policy == "LEAST_REQUEST" else "round_robin_lb_config"] = window
    return out


def _outlier(outlier: OutlierDetection, defaults: Json) -> Json:
    """Given fields replace Rheostat's defaults; a count of 0 turns that detection off (as in Istio)."""
    out = dict(defaults)
    gateway = outlier.consecutiveGatewayErrors
    if gateway is None:
        gateway = outlier.consecutiveErrors  # Istio's deprecated name for gateway errors
    for count, field in (
        (outlier.consecutive5xxErrors, "consecutive_5xx"),
        (gateway, "consecutive_gateway_failure"),
        (outlier.consecutiveLocalOriginFailures, "consecutive_local_origin_failure"),
    ):
        if count is not None:
            out[field] = max(count, 1)
            out[f"enforcing_{field}"] = 100 if count > 0 else 0
    if outlier.splitExternalLocalOriginErrors is not None:
        out["split_external_local_origin_errors"] = outlier.splitExternalLocalOriginErrors
    if outlier.interval is not None:
        out["interval"] = _duration(max(parse_duration(outlier.interval), 0.001))
    if outlier.baseEjectionTime is not None:
        out["base_ejection_time"] = _duration(max(parse_duration(outlier.baseEjectionTime), 0.001))
    if outlier.maxEjectionPercent is not None:
        out["max_ejection_percent"] = outlier.maxEjectionPercent
    result: Json = {"outlier_detection": out}
    if outlier.minHealthPercent is not None:  # Istio: below this share of healthy hosts, ejection stops
        result["common_lb_config"] = {"healthy_panic_threshold": {"value": float(outlier.minHealthPercent)}}
    return result
