"""Which router and platform roll out a Canary: `spec.provider` picks the router, `targetRef.kind` the
platform. What a controller has is explicit; an unknown or unavailable name is an error on that field."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from rheostat.model.canary import Canary
from rheostat.plugins.platforms.base import Platform
from rheostat.plugins.routers.base import Router, RouterError, ServiceRoute
from rheostat.plugins.routers.envoy import service as envoy_service

FLAG_KINDS = frozenset({"FeatureFlag", "FlagSet"})
WORKLOAD_KINDS = frozenset({"Deployment", "DaemonSet"})
T = TypeVar("T")


class Unavailable(LookupError):
    """The Canary names a provider or target kind this controller cannot drive."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Catalogue:
    """What a controller can drive, by name: checked at load (`validate`, the GitOps gate) and every tick.

    `routes` maps each provider to the target kinds it routes; `defaults` gives the provider of a Canary
    that names none, per target kind (the embedded default routes Workloads with `envoy` and flags with
    `flags`; a cluster uses its `--mesh-provider`, as Flagger does).
    """

    routes: Mapping[str, frozenset[str]]
    defaults: Mapping[str, str] = field(default_factory=dict)
    where: str = "here"  # named in messages: "in the embedded default", "in this cluster"
    hints: Mapping[str, str] = field(default_factory=dict)  # target kind -> where it can run instead
    refused: Mapping[str, str] = field(default_factory=dict)  # spec field -> why it is not honoured here
    # provider -> the fields of the Canary its router cannot express (checked at load, not first at a tick)
    checks: Mapping[str, Callable[[Canary], list[Unavailable]]] = field(default_factory=dict)

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset().union(*self.routes.values()) if self.routes else frozenset()

    def provider(self, canary: Canary) -> str:
        kind = canary.spec.targetRef.kind
        name = canary.spec.provider or self.defaults.get(kind)
        if name is None:
            raise Unavailable(
                "spec.provider", f"not set, and a {kind} target has no default provider {self.where}"
            )
        return name

    def problems(self, canary: Canary) -> list[Unavailable]:
        """Each field that names something this controller does not have, with what it has."""
        kind = canary.spec.targetRef.kind
        if kind not in self.kinds:
            known = ", ".join(sorted(self.kinds)) or "none"
            hint = f" ({self.hints[kind]})" if kind in self.hints else ""
            return [
                Unavailable(
                    "spec.targetRef.kind", f"{kind} cannot run {self.where}{hint}; supported: {known}"
                )
            ]
        try:
            name = self.provider(canary)
        except Unavailable as exc:
            return [exc]
        kinds = self.routes.get(name)
        if kinds is None:
            known = ", ".join(sorted(self.routes)) or "none"
            return [
                Unavailable("spec.provider", f"{name!r} is not available {self.where}; available: {known}")
            ]
        if kind not in kinds:
            fits = sorted(n for n, ks in self.routes.items() if kind in ks)
            return [
                Unavailable(
                    "spec.provider",
                    f"{name!r} cannot route a {kind} target; for a {kind}: {', '.join(fits) or 'none'}",
                )
            ]
        out = [
            Unavailable(f"spec.{f}", f"not supported {self.where}: {why}")
            for f, why in self.refused.items()
            if _field(canary.spec, f) is not None
        ]
        check = self.checks.get(name)
        return out + (check(canary) if check is not None else [])


def _field(obj: object, path: str) -> object:
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


# Fields of Flagger's Canary that no backend here acts on: refused by name rather than ignored.
REFUSED_EVERYWHERE = {
    "routeRef": "it names an APISIX route, and Rheostat has no APISIX router",
    "upstreamRef": "it names a Gloo upstream, and Rheostat has no Gloo router",
    "metricsServer": "set the controller's --metrics-server, or a MetricTemplate with its own address",
    **{
        f"analysis.sessionAffinity.{attr}": "the session cookies are set with their name, value and Max-Age only"
        for attr in ("domain", "httpOnly", "partitioned", "path", "sameSite", "secure")
    },
}


def envoy_fields(canary: Canary) -> list[Unavailable]:
    """What the embedded Envoy cannot express of `spec.service` (the router refuses the same at a tick)."""
    if canary.spec.service is None:
        return []
    affinity = canary.spec.the_analysis.sessionAffinity
    route = ServiceRoute(
        key=canary.metadata.key,
        port=canary.spec.service.port,
        primary=(),
        canary=(),
        service=canary.spec.service,
        primary_cookie=affinity.primaryCookieName if affinity is not None else None,
    )
    try:
        envoy_service.check(route)
    except RouterError as exc:
        field, _, why = str(exc).partition(" ")
        return [Unavailable(f"spec.{field}", why)]
    return []


EMBEDDED = Catalogue(
    {"envoy": frozenset({"Workload"}), "flags": FLAG_KINDS},
    {"Workload": "envoy", "FeatureFlag": "flags", "FlagSet": "flags"},
    "in the embedded default",
    dict.fromkeys(
        WORKLOAD_KINDS, "a Kubernetes target: run against a cluster with `rheostat run --kubeconfig`"
    ),
    {
        **REFUSED_EVERYWHERE,
        "autoscalerRef": "a Workload runs spec.replicas replicas; autoscaling needs a cluster",
        "ingressRef": "it is for the nginx provider on a cluster; the embedded default routes with Envoy",
    },
    {"envoy": envoy_fields},
)


class Backends:
    """The router and platform instances of one controller, by provider and by target kind."""

    def __init__(
        self, catalogue: Catalogue, routers: Mapping[str, Router], platforms: Mapping[str, Platform]
    ) -> None:
        self.catalogue = catalogue
        self.routers = dict(routers)
        self.platforms = dict(platforms)

    def parts(self, canary: Canary) -> tuple[Router, Platform]:
        problems = self.catalogue.problems(canary)
        if problems:
            raise problems[0]
        return self.routers[self.catalogue.provider(canary)], self.platforms[canary.spec.targetRef.kind]

    def all_routers(self) -> list[Router]:
        return _unique(self.routers.values())

    def all_platforms(self) -> list[Platform]:
        return _unique(self.platforms.values())


def _unique(items: Iterable[T]) -> list[T]:
    out: list[T] = []
    for item in items:
        if not any(item is seen for seen in out):
            out.append(item)
    return out


def embedded(router: Router, platform: Platform, flags: tuple[Router, Platform] | None = None) -> Backends:
    """The embedded default: Workloads behind Envoy (or the router given), flags through the flag store."""
    routers: dict[str, Router] = {"envoy": router}
    platforms: dict[str, Platform] = {"Workload": platform}
    if flags is not None:
        routers["flags"] = flags[0]
        platforms.update(dict.fromkeys(FLAG_KINDS, flags[1]))
    routes = {k: v for k, v in EMBEDDED.routes.items() if k in routers}
    return Backends(dataclasses.replace(EMBEDDED, routes=routes), routers, platforms)
