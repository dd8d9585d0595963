"""Pure rendering of Envoy's bootstrap and filesystem-xDS resources (LDS, CDS, one RDS per listener).

Everything here is a dict in, dict out: no I/O, so it can be tested and reasoned about on its own.
The route config is also parsed back (`routes_from_config`) so the router can report what Envoy runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, Retries, StringMatch
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, StickyCookie, Upstream
from rheostat.plugins.routers.envoy import service as svc
from rheostat.util.durations import parse_duration

Json = dict[str, Any]

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

GROUPS = ("primary", "canary")
DEFAULT_ROUTE = "default"
STICKY_ROUTE = "sticky"
PRIMARY_STICKY_ROUTE = "sticky-primary"
METADATA_KEY = "rheostat"
AB_ROUTE_PREFIX = "ab-"


def _geometric_buckets(low: float, high: float, ratio: float) -> list[float]:
    # Bucket width of 10% keeps an interpolated quantile well inside 10% of the true value.
    bounds: list[float] = []
    value = low
    while value < high:
        bounds.append(round(value, 3 if value < 10 else 1 if value < 1000 else 0))
        value *= ratio
    bounds.append(high)
    return sorted(set(bounds))


RQ_TIME_BUCKETS_MS = _geometric_buckets(0.5, 60_000.0, 1.1)

# What a mesh gives by default (docs/rollouts.md#resilience). A request that never reached the app, or was cut
# before an answer, is tried again on another endpoint, but only for idempotent methods (RFC 9110 9.2.2):
# a POST may have been acted on. `service.retries` replaces this policy, for every method.
DEFAULT_RETRY_ON = "connect-failure,reset,refused-stream"
DEFAULT_RETRIES = 2
IDEMPOTENT_METHODS = ("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE")
RETRY_BACK_OFF = {"base_interval": "0.010s", "max_interval": "0.100s"}
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    },
}
# Passive outlier detection: an endpoint that refuses connections (local origin) or keeps answering 5xx is
# taken out for a while; at most half of a group, and a group of one keeps its endpoint (Envoy's panic mode).
OUTLIER_DETECTION: Json = {
    "split_external_local_origin_errors": True,
    "consecutive_local_origin_failure": 3,
    "enforcing_consecutive_local_origin_failure": 100,
    "consecutive_gateway_failure": 3,
    "enforcing_consecutive_gateway_failure": 100,
    "consecutive_5xx": 5,
    "enforcing_consecutive_5xx": 100,
    "enforcing_success_rate": 0,
    "enforcing_local_origin_success_rate": 0,
    "interval": "1s",
    "base_ejection_time": "10s",
    "max_ejection_time": "60s",
    "max_ejection_percent": 50,
}
# Envoy allows 3 retries in flight per cluster by default; a budget scales with the traffic instead.
CIRCUIT_BREAKERS: Json = {
    "thresholds": [
        {
            "priority": "DEFAULT",
            "retry_budget": {"budget_percent": {"value": 25.0}, "min_retry_concurrency": 10},
        }
    ]
}


@dataclass(frozen=True)
class Layout:
    """Where the files Envoy reads live under the data dir."""

    root: Path

    @property
    def bootstrap(self) -> Path:
        return self.root / "bootstrap.json"

    @property
    def lds(self) -> Path:
        return self.root / "xds" / "lds.json"

    @property
    def cds(self) -> Path:
        return self.root / "xds" / "cds.json"

    def rds(self, key: ObjectKey) -> Path:
        return self.root / "xds" / "rds" / f"{resource_name(key)}.json"

    @property
    def tmp(self) -> Path:
        # Temp files live outside the watched directories so writing them never triggers a reload.
        return self.root / "tmp"

    @property
    def log(self) -> Path:
        return self.root / "envoy.log"


def resource_name(key: ObjectKey) -> str:
    """`ns/name` -> `ns-name`: the listener, route config and stat prefix name."""
    return key.replace("/", "-")


def cluster_name(key: ObjectKey, group: str) -> str:
    return f"{resource_name(key)}-{group}"


STATS_LISTENER = "rheostat-prometheus-stats"
ADMIN_CLUSTER = "rheostat-admin"
PROMETHEUS_PATH = "/stats/prometheus"


def stats_resources(admin_socket: Path, port: int) -> Json:
    """A listener on 127.0.0.1:<port> that serves only GET /stats/prometheus, proxied to the admin socket.

    Prometheus can scrape Envoy while the admin interface itself stays a 0600 unix socket: nothing else of
    it (config dumps, /quitquitquit, runtime changes) is reachable over TCP.
    """
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": STATS_LISTENER,
        "route_config": {
            "name": STATS_LISTENER,
            "virtual_hosts": [
                {
                    "name": STATS_LISTENER,
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {
                                "path": PROMETHEUS_PATH,
                                "headers": [_header(":method", {"exact": "GET"})],
                            },
                            "route": {"cluster": ADMIN_CLUSTER, "timeout": "5s"},
                        },
                        {"match": {"prefix": "/"}, "direct_response": {"status": 404}},
                    ],
                }
            ],
        },
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    return {
        "listeners": [
            {
                "name": STATS_LISTENER,
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [
                    {
                        "filters": [
                            {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                        ]
                    }
                ],
            }
        ],
        "clusters": [
            {
                "name": ADMIN_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": ADMIN_CLUSTER,
                    "endpoints": [
                        {"lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(admin_socket)}}}}]}
                    ],
                },
            }
        ],
    }


def bootstrap(
    layout: Layout, admin_socket: Path, *, stats_flush_s: float = 1.0, stats_port: int | None = None
) -> Json:
    extra: Json = (
        {} if stats_port is None else {"static_resources": stats_resources(admin_socket, stats_port)}
    )
    return {
        **extra,
        "node": {"id": "rheostat", "cluster": "rheostat"},
        "admin": {"address": {"pipe": {"path": str(admin_socket), "mode": 0o600}}},
        "stats_flush_interval": _duration(stats_flush_s),
        "stats_config": {
            "histogram_bucket_settings": [
                {"match": {"suffix": "upstream_rq_time"}, "buckets": RQ_TIME_BUCKETS_MS},
            ]
        },
        "dynamic_resources": {
            "lds_config": _file_source(layout.lds),
            "cds_config": _file_source(layout.cds),
        },
    }


def listeners(ports: Mapping[ObjectKey, int], layout: Layout, version: str) -> Json:
    return {
        "version_info": version,
        "resources": [_listener(key, port, layout) for key, port in sorted(ports.items())],
    }


def clusters(services: Iterable[ServiceRoute], version: str) -> Json:
    resources = [
        svc.cluster_fields(
            _cluster(cluster_name(s.key, group), getattr(s, group)),
            s.service.trafficPolicy if s.service is not None else None,
        )
        for s in sorted(services, key=lambda s: s.key)
        for group in GROUPS
    ]
    return {"version_info": version, "resources": resources}


def route_config(service: ServiceRoute, routes: Routes, version: str) -> Json:
    """The split's virtual host (any Host) and the two group hosts.

    The split's routes, first match wins: A/B rules, the canary's sticky cookie, the primary's cookie, then
    the weighted default. With `service.match`, each of them exists once per match entry and a request that
    matches no entry gets Envoy's 404, as from a VirtualService whose routes all have matches.
    """
    name = resource_name(service.key)
    primary, canary = cluster_name(service.key, "primary"), cluster_name(service.key, "canary")
    spec = service.service
    policy = spec.trafficPolicy if spec is not None else None
    retry = retry_policy(service.retries)
    group_extras: Json = {**svc.hash_policy(policy)}
    if service.timeout_s is not None:
        group_extras["timeout"] = _duration(service.timeout_s)
    action_extras: Json = {**group_extras, **svc.rewrite_action(spec.rewrite if spec is not None else None)}
    conditions = svc.route_matches(spec)

    entries: list[Json] = []
    for index, match in enumerate(routes.match):
        ab = _match(match)
        for condition in conditions:
            entries.append(
                {
                    "name": f"{AB_ROUTE_PREFIX}{index}",
                    "match": svc.with_conditions(
                        condition, ab.get("headers", []), ab.get("query_parameters")
                    ),
                    "route": {"cluster": canary, **action_extras},
                    "metadata": _metadata({"match": match.model_dump(mode="json", exclude_none=True)}),
                }
            )
    # A sticky client only goes to the canary while it takes traffic; at 0% everyone is back on primary.
    if routes.sticky is not None and routes.canary > 0:
        cookie = _header("cookie", {"safe_regex": {"regex": _cookie_regex(routes.sticky)}})
        for condition in conditions:
            entries.append(
                {
                    "name": STICKY_ROUTE,
                    "match": svc.with_conditions(condition, [cookie]),
                    "route": {"cluster": canary, **action_extras},
                }
            )
    primary_sticky = _primary_cookie(service, routes)
    if primary_sticky is not None:
        cookie = _header("cookie", {"safe_regex": {"regex": _cookie_regex(primary_sticky)}})
        for condition in conditions:
            entries.append(
                {
                    "name": PRIMARY_STICKY_ROUTE,
                    "match": svc.with_conditions(condition, [cookie]),
                    "route": {"cluster": primary, **action_extras},
                }
            )

    primary_weighted: Json = {"name": primary, "weight": routes.primary}
    if primary_sticky is not None:
        primary_weighted["response_headers_to_add"] = [_set_cookie_header(primary_sticky)]
    canary_weighted: Json = {"name": canary, "weight": routes.canary}
    if routes.sticky is not None:
        canary_weighted["response_headers_to_add"] = [_set_cookie_header(routes.sticky)]
    default_action: Json = {
        "weighted_clusters": {"clusters": [primary_weighted, canary_weighted]},
        **action_extras,
    }
    if routes.mirror:
        default_action["request_mirror_policies"] = [
            {
                "cluster": canary,
                "runtime_fraction": {
                    "default_value": {"numerator": routes.mirror_weight, "denominator": "HUNDRED"}
                },
            }
        ]
    for condition in conditions:
        entries.append({"name": DEFAULT_ROUTE, "match": condition, "route": default_action})

    return {
        "version_info": version,
        "resources": [
            {
                "@type": ROUTE_TYPE,
                "name": name,
                "virtual_hosts": [  # exact domains win over "*", whatever the order
                    {"name": name, "domains": ["*"], "routes": entries, **retry, **svc.vhost_extras(spec)},
                    *(dict(v, **retry) for v in _group_hosts(service, group_extras)),
                ],
                # What the route was rendered from, so an adopted Envoy's routes can be rendered again as they are.
                "metadata": _metadata(_service_record(service)),
            }
        ],
    }


def _primary_cookie(service: ServiceRoute, routes: Routes) -> StickyCookie | None:
    """`sessionAffinity.primaryCookieName`: while the canary takes traffic, a client the split sent to the primary
    stays there until the next weight step. The value changes with the weight, so at each step the holders of
    an older cookie are split again by the new weights (as Flagger does)."""
    if service.primary_cookie is None or routes.canary == 0:
        return None
    revision = f"{routes.sticky.value}-" if routes.sticky is not None else ""
    max_age = routes.sticky.max_age if routes.sticky is not None else StickyCookie("", "").max_age
    return StickyCookie(service.primary_cookie, f"{revision}w{routes.canary}", max_age)


def _set_cookie_header(sticky: StickyCookie) -> Json:
    return {
        "header": {"key": "set-cookie", "value": _set_cookie(sticky)},
        "append_action": "APPEND_IF_EXISTS_OR_ADD",
    }


def _metadata(record: Json) -> Json:
    return {"filter_metadata": {METADATA_KEY: record}}


def _service_record(service: ServiceRoute) -> Json:
    record: Json = {}
    if service.service is not None:
        record["service"] = service.service.model_dump(mode="json", by_alias=True, exclude_none=True)
    if service.primary_cookie is not None:
        record["primary_cookie"] = service.primary_cookie
    if service.retries is not None:
        record["retries"] = service.retries.model_dump(mode="json", exclude_none=True)
    return record


def service_record(route_config: Json) -> Json:
    """What `_service_record` stored in a live or on-disk route config (empty for older files)."""
    metadata = route_config.get("metadata", {}).get("filter_metadata", {})
    record = metadata.get(METADATA_KEY, {})
    return record if isinstance(record, dict) else {}


def retry_policy(retries: Retries | None) -> Json:
    """The virtual host's `retry_policy`: the default for idempotent methods, or `service.retries` as given."""
    if retries is None:
        return {
            "retry_policy": {
                **_retry(DEFAULT_RETRY_ON, DEFAULT_RETRIES),
                "retriable_request_headers": [
                    _header(":method", {"safe_regex": {"regex": "|".join(IDEMPOTENT_METHODS)}})
                ],
            }
        }
    attempts = DEFAULT_RETRIES if retries.attempts is None else retries.attempts
    if attempts == 0:
        return {}
    policy = _retry(retries.retryOn or DEFAULT_RETRY_ON, attempts)
    if retries.perTryTimeout is not None:
        policy["per_try_timeout"] = _duration(parse_duration(retries.perTryTimeout))
    return {"retry_policy": policy}


def _retry(retry_on: str, attempts: int) -> Json:
    # Istio's retryOn may hold status codes: Envoy wants those apart, under retriable-status-codes.
    names = [p.strip() for p in retry_on.split(",") if p.strip()]
    codes = [int(p) for p in names if p.isdigit()]
    names = [p for p in names if not p.isdigit()]
    if codes and "retriable-status-codes" not in names:
        names.append("retriable-status-codes")
    policy: Json = {
        "retry_on": ",".join(names),
        "num_retries": attempts,
        "retry_back_off": RETRY_BACK_OFF,
        "retry_host_predicate": [PREVIOUS_HOSTS],
        "host_selection_retry_max_attempts": 3,
    }
    if codes:
        policy["retriable_status_codes"] = codes
    return policy


def _group_hosts(service: ServiceRoute, extras: Json) -> list[Json]:
    """`Host: <canary>-canary` (or `-primary`) reaches one group directly, like Flagger's generated services:
    load tests and acceptance tests aim at the canary even while it takes no live traffic (blue/green)."""
    namespace, _, canary_name = service.key.partition("/")
    hosts = []
    for group in ("primary", "canary"):
        host = f"{canary_name}-{group}"
        hosts.append(
            {
                "name": f"{resource_name(service.key)}-{group}",
                "domains": [host, f"{host}.{namespace}", f"{host}.{namespace}.svc"],
                "routes": [
                    {
                        "name": f"group-{group}",
                        "match": {"prefix": "/"},
                        "route": {"cluster": cluster_name(service.key, group), **extras},
                    }
                ],
            }
        )
    return hosts


def routes_from_config(config: Json, key: ObjectKey) -> Routes:
    """Read a live RouteConfiguration (as `/config_dump` shows it) back into Routes."""
    primary, canary = cluster_name(key, "primary"), cluster_name(key, "canary")
    entries = [r for vhost in config.get("virtual_hosts", []) for r in vhost.get("routes", [])]
    default = next((r for r in entries if r.get("name") == DEFAULT_ROUTE), None)
    if default is None:
        raise RouterError(f"route config for {key} has no default route")
    action = default.get("route", {})
    weights = {
        c["name"]: int(c.get("weight", 0)) for c in action.get("weighted_clusters", {}).get("clusters", [])
    }
    sticky = None
    for weighted in action.get("weighted_clusters", {}).get("clusters", []):
        if weighted["name"] == canary:
            for added in weighted.get("response_headers_to_add", []):
                if added["header"]["key"].lower() == "set-cookie":
                    sticky = _parse_set_cookie(added["header"]["value"])
    mirrors = [m for m in action.get("request_mirror_policies", []) if m.get("cluster") == canary]
    mirror_weight = 100
    if mirrors:
        mirror_weight = int(
            mirrors[0].get("runtime_fraction", {}).get("default_value", {}).get("numerator", 0)
        )
    # One A/B rule is one route per service.match entry, all of the same name: read each rule once.
    ab_routes = {r["name"]: r for r in reversed(entries) if r.get("name", "").startswith(AB_ROUTE_PREFIX)}
    matches = tuple(_ab_match(r) for _, r in sorted(ab_routes.items(), key=lambda kv: entries.index(kv[1])))
    # Weights need not sum to 100 in Envoy; report the split in force as percentages.
    total = weights.get(primary, 0) + weights.get(canary, 0)
    canary_percent = round(100 * weights.get(canary, 0) / total) if total else 0
    return Routes(
        primary=100 - canary_percent,
        canary=canary_percent,
        mirror=bool(mirrors),
        mirror_weight=mirror_weight,
        match=matches,
        sticky=sticky,
    )


def _file_source(path: Path) -> Json:
    return {"resource_api_version": "V3", "path_config_source": {"path": str(path)}}


def _listener(key: ObjectKey, port: int, layout: Layout) -> Json:
    name = resource_name(key)
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": name,
        "strip_any_host_port": True,  # so `Host: web-canary:8080` finds the group's virtual host
        "rds": {"route_config_name": name, "config_source": _file_source(layout.rds(key))},
        # The CORS filter does nothing until a virtual host carries a policy (service.corsPolicy); it is
        # always there so that a policy is a route change, which keeps connections, not a listener change.
        "http_filters": [
            {"name": svc.CORS_FILTER, "typed_config": {"@type": svc.CORS_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
    }
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        # No SO_REUSEPORT: a second Envoy on the machine cannot silently bind the same port and split traffic.
        "enable_reuse_port": False,
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }


def _cluster(name: str, upstreams: tuple[Upstream, ...]) -> Json:
    # A group with no upstreams keeps its cluster with no endpoints: valid, and Envoy answers 503.
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": up.host, "port_value": up.port}}}}
        for up in upstreams
    ]
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "outlier_detection": OUTLIER_DETECTION,
        "circuit_breakers": CIRCUIT_BREAKERS,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": endpoints}] if endpoints else [],
        },
    }


def _duration(seconds: float) -> str:
    if seconds <= 0 or math.isinf(seconds) or math.isnan(seconds):
        raise RouterError(f"duration must be positive, got {seconds}")
    return f"{seconds:.3f}s"


def _header(name: str, string_match: Json) -> Json:
    return {"name": name, "string_match": string_match}


def _match(m: AnalysisMatch) -> Json:
    if m.sourceLabels:
        raise RouterError("the envoy router cannot match on sourceLabels (there are no pods)")
    out: Json = {}
    if m.headers:
        out["headers"] = [_header(name, svc.string_match(v)) for name, v in sorted(m.headers.items())]
    if m.queryParams:
        out["query_parameters"] = [
            {"name": name, "string_match": svc.string_match(v)} for name, v in sorted(m.queryParams.items())
        ]
    return out


def _parse_string_match(raw: Json) -> StringMatch:
    if "safe_regex" in raw:
        return StringMatch(regex=raw["safe_regex"]["regex"])
    for kind in ("exact", "prefix", "suffix"):
        if kind in raw:
            return StringMatch.model_validate({kind: raw[kind]})
    raise RouterError(f"unsupported string match in live config: {raw}")


def _ab_match(route: Json) -> AnalysisMatch:
    """The A/B rule of a route: as recorded in its metadata (its match may also hold service.match)."""
    recorded = route.get("metadata", {}).get("filter_metadata", {}).get(METADATA_KEY, {}).get("match")
    if isinstance(recorded, dict):
        return AnalysisMatch.model_validate(recorded)
    return _parse_match(route["match"])


def _parse_match(raw: Json) -> AnalysisMatch:
    headers = {h["name"]: _parse_string_match(h["string_match"]) for h in raw.get("headers", [])}
    params = {q["name"]: _parse_string_match(q["string_match"]) for q in raw.get("query_parameters", [])}
    return AnalysisMatch(headers=headers or None, queryParams=params or None)


def _cookie_regex(sticky: StickyCookie) -> str:
    # RE2 full match on the whole Cookie header: the pair may be first, last or in between.
    return f"^(.*?;\\s*)?{re.escape(f'{sticky.name}={sticky.value}')}(;.*)?$"


def _set_cookie(sticky: StickyCookie) -> str:
    return f"{sticky.name}={sticky.value}; Max-Age={sticky.max_age}"


def _parse_set_cookie(value: str) -> StickyCookie:
    pair, _, attrs = value.partition(";")
    name, _, cookie_value = pair.strip().partition("=")
    max_age = int(attrs.strip().removeprefix("Max-Age="))
    return StickyCookie(name=name, value=cookie_value, max_age=max_age)
