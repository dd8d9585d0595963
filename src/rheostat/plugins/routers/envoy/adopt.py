"""Read back what an adopted Envoy runs from the xDS files on disk (the router keeps disk == Envoy).

The files are the router's own rendering (config.py), so each canary's key is recovered from its route
config: the group virtual host `<ns>-<name>-primary` answers `<name>-primary` and `<name>-primary.<ns>`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Retries, Service
from rheostat.plugins.routers.base import Routes, ServiceRoute, Upstream
from rheostat.plugins.routers.envoy import config

log = logging.getLogger(__name__)


@dataclass
class View:
    """The router's memory rebuilt from disk: files as accepted, listeners, clusters and routes per canary."""

    files: dict[Path, bytes] = field(default_factory=dict)
    ports: dict[ObjectKey, int] = field(default_factory=dict)
    services: dict[ObjectKey, ServiceRoute] = field(default_factory=dict)
    routes: dict[ObjectKey, Routes] = field(default_factory=dict)


def key_of(route_config: dict[str, Any]) -> ObjectKey | None:
    name = route_config.get("name")
    for vhost in route_config.get("virtual_hosts", []):
        domains = vhost.get("domains", [])
        if vhost.get("name") == f"{name}-primary" and len(domains) >= 2:
            host = str(domains[0])
            namespace = str(domains[1])[len(host) + 1 :]
            key = ObjectKey(f"{namespace}/{host.removesuffix('-primary')}")
            return key if config.resource_name(key) == name else None
    return None


def _timeout(route_config: dict[str, Any]) -> float | None:
    for vhost in route_config.get("virtual_hosts", []):
        for route in vhost.get("routes", []):
            if route.get("name") == config.DEFAULT_ROUTE and "timeout" in route.get("route", {}):
                return float(str(route["route"]["timeout"]).removesuffix("s"))
    return None


def _upstreams(cluster: dict[str, Any]) -> tuple[Upstream, ...]:
    out = []
    for locality in cluster.get("load_assignment", {}).get("endpoints", []):
        for lb in locality.get("lb_endpoints", []):
            address = lb["endpoint"]["address"]["socket_address"]
            out.append(Upstream(str(address["address"]), int(address["port_value"])))
    return tuple(out)


def load_view(layout: config.Layout) -> View:
    """Raises OSError, ValueError (a pydantic ValidationError too) or KeyError when the files are not the router's; the caller starts afresh."""
    view = View()
    keys: dict[str, ObjectKey] = {}
    timeouts: dict[ObjectKey, float | None] = {}
    records: dict[ObjectKey, dict[str, Any]] = {}
    for path in sorted(layout.rds(ObjectKey("x/x")).parent.glob("*.json")):
        content = path.read_bytes()
        route_config = json.loads(content)["resources"][0]
        key = key_of(route_config)
        if key is None or layout.rds(key) != path:
            log.warning("%s is not a route file of this router; ignored", path)
            continue
        keys[config.resource_name(key)] = key
        view.files[path] = content
        view.routes[key] = config.routes_from_config(route_config, key)
        timeouts[key] = _timeout(route_config)
        records[key] = config.service_record(route_config)
    for path in (layout.lds, layout.cds):
        view.files[path] = path.read_bytes()
    for listener in json.loads(view.files[layout.lds])["resources"]:
        if listener["name"] in keys:
            view.ports[keys[listener["name"]]] = int(listener["address"]["socket_address"]["port_value"])
    clusters = {c["name"]: c for c in json.loads(view.files[layout.cds])["resources"]}
    for key in keys.values():
        groups = [clusters.get(config.cluster_name(key, group)) for group in config.GROUPS]
        if None in groups:
            continue  # routes without clusters: reconcile writes both again
        primary, canary = (_upstreams(g) for g in groups if g is not None)
        record = records[key]
        view.services[key] = ServiceRoute(
            key,
            view.ports.get(key, 0),
            primary,
            canary,
            timeouts[key],
            retries=Retries.model_validate(record["retries"]) if "retries" in record else None,
            service=Service.model_validate(record["service"]) if "service" in record else None,
            primary_cookie=record.get("primary_cookie"),
        )
    return view
