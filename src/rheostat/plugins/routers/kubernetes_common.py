"""What the smi, nginx and kubernetes routers share: names, ownership marks, refusals, error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube.api import KubeError, Obj
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute

MANAGED_BY = "app.kubernetes.io/managed-by"
CANARY_ANNOTATION = "rheostat.dev/canary"
# What an object looked like before Rheostat took it over, as JSON: restored by `revertOnDeletion`.
ORIGINAL_ANNOTATION = "rheostat.dev/original"

# `spec.service` fields that shape the generated Services (the platform's job): no router has to honour them.
PLATFORM_FIELDS = frozenset(
    {
        "port",
        "name",
        "portName",
        "appProtocol",
        "trafficDistribution",
        "targetPort",
        "portDiscovery",
        "headless",
        "apex",
        "primary",
        "canary",
        "unmanagedMetadata",
    }
)


def split_key(key: ObjectKey) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def apex_name(route: ServiceRoute) -> str:
    """Flagger's apex: `service.name`, else the target's name."""
    if route.service is not None and route.service.name:
        return route.service.name
    name = route.target.rpartition("/")[2]
    if not name:
        raise RouterError(f"canary {route.key}: neither service.name nor a target to name the apex after")
    return name


def marks(key: ObjectKey) -> tuple[dict[str, str], dict[str, str]]:
    """The labels and annotations every object Rheostat writes carries."""
    return {MANAGED_BY: "rheostat"}, {CANARY_ANNOTATION: key}


def owner(obj: Obj) -> str | None:
    """The canary that manages `obj`, or None when Rheostat does not manage it."""
    meta = obj.get("metadata", {})
    if (meta.get("labels") or {}).get(MANAGED_BY) != "rheostat":
        return None
    found = (meta.get("annotations") or {}).get(CANARY_ANNOTATION)
    return found if isinstance(found, str) else None


def _is_set(value: Any) -> bool:
    return value is not None and value is not False and value != [] and value != {}


def refuse_service_fields(route: ServiceRoute, router: str, allowed: frozenset[str] = frozenset()) -> None:
    """RouterError naming the first `spec.service` field this router cannot express."""
    if route.primary_cookie is not None:
        raise RouterError(
            f"analysis.sessionAffinity.primaryCookieName is not supported by the {router} router"
        )
    service = route.service
    if service is None:
        return
    for field in type(service).model_fields:
        if field in PLATFORM_FIELDS or field in allowed:
            continue
        if _is_set(getattr(service, field)):
            raise RouterError(f"service.{field} is not supported by the {router} router")


def refuse_routes(routes: Routes, router: str, *, match: bool = False, why: str = "") -> None:
    """RouterError for a mirror, a sticky session or (unless `match`) an A/B match the router cannot do."""
    tail = f" ({why})" if why else ""
    if routes.mirror:
        raise RouterError(f"analysis.mirror is not supported by the {router} router{tail}")
    if routes.sticky is not None:
        raise RouterError(f"analysis.sessionAffinity is not supported by the {router} router{tail}")
    if routes.match and not match:
        raise RouterError(f"analysis.match is not supported by the {router} router{tail}")


@contextmanager
def kube_errors() -> Iterator[None]:
    """A refused or failed API call as RouterError, its message (verb, resource, CRD) kept."""
    try:
        yield
    except KubeError as exc:
        raise RouterError(str(exc)) from exc


def for_update(obj: Obj) -> Obj:
    """`obj` as read, made fit for a PUT: no status (a subresource) and no managedFields (the server's)."""
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k != "managedFields"}
    return out


def subset(want: dict[str, Any], have: dict[str, Any] | None) -> bool:
    """Every key of `want` is in `have` with the same value."""
    have = have or {}
    return all(have.get(k) == v for k, v in want.items())
