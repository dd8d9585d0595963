"""The Router family: how traffic between a primary and a canary is split, matched and mirrored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, Retries, Service


@dataclass(frozen=True)
class Upstream:
    """One address a group of a workload answers on."""

    host: str
    port: int


@dataclass(frozen=True)
class ServiceRoute:
    """The static part of a canary's routing: where it listens and where each group answers."""

    key: ObjectKey
    port: int
    primary: tuple[Upstream, ...]
    canary: tuple[Upstream, ...]
    timeout_s: float | None = None
    retries: Retries | None = None  # `service.retries`; None: the router's default for idempotent requests
    target: str = ""  # what the canary's targetRef resolves to (a Workload key, or a flag key)
    # The Canary's `spec.service` whole: headers, rewrite, match, corsPolicy, trafficPolicy, gateways, hosts...
    # A router honours what its data plane can express and refuses the rest by name (RouterError).
    service: Service | None = None
    primary_cookie: str | None = None  # `analysis.sessionAffinity.primaryCookieName`
    revert_on_deletion: bool = False  # `spec.revertOnDeletion`: finalize gives back what was taken over
    ingress: str | None = None  # `spec.ingressRef.name`: the Ingress the nginx router makes a canary copy of


@dataclass(frozen=True)
class StickyCookie:
    """Session affinity: a client holding `name=value` keeps going to the canary."""

    name: str
    value: str
    max_age: int = 86400


@dataclass(frozen=True)
class Routes:
    """The dynamic part, what the state machine decides each tick."""

    primary: int = 100
    canary: int = 0
    mirror: bool = False  # shadow a copy of primary traffic to the canary
    mirror_weight: int = 100  # percent of requests mirrored
    match: tuple[AnalysisMatch, ...] = field(default=())  # A/B: matching requests go to the canary only
    sticky: StickyCookie | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.primary <= 100 and 0 <= self.canary <= 100 and self.primary + self.canary == 100):
            raise ValueError(f"weights must be 0..100 and sum to 100, got {self.primary}/{self.canary}")


class RouterError(Exception):
    """The router could not apply a change; the previous routes are still in force."""


def reconciled(routes: Mapping[ObjectKey, ServiceRoute], key: ObjectKey, router: str) -> ServiceRoute:
    """The route `reconcile` was given for a canary (the engine reconciles before every other call)."""
    try:
        return routes[key]
    except KeyError:
        raise RouterError(f"canary {key} was not reconciled by the {router} router") from None


class Router(Protocol):
    async def reconcile(self, route: ServiceRoute) -> None:
        """Create or update listener and upstream groups; keeps the current weights."""

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        """Apply a split; raises RouterError if it was refused."""

    async def get_routes(self, key: ObjectKey) -> Routes:
        """The split actually in force (read back from the data plane, not from memory)."""

    async def finalize(self, key: ObjectKey) -> None:
        """Remove everything this router made for the canary."""
