"""One contract every Router honours (src/rheostat/plugins/routers/base.py), run over every router on its real
data plane: a real Envoy, the flag store, and the Kubernetes routers over MemoryKube and over LightkubeAPI
against the kmock API server. What a router cannot express it declares in CAPABILITIES below, and the
contract holds it to refusing exactly that, by name, with the previous routes left in force.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from rheostat.model.canary import AnalysisMatch, StringMatch
from rheostat.plugins.routers.base import RouterError, Routes, StickyCookie
from tests.contract_routers import KUBE_ROUTERS, Rig, SharedEnvoy, envoy_rig, flag_rig, kube_rig

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one Envoy for the module, so one event loop


@dataclass(frozen=True)
class Can:
    """What a router can express: the canary weights it can set (None: any), A/B matches, mirroring,
    sticky sessions."""

    weights: frozenset[int] | None = None
    match: bool = True
    mirror: bool = True
    sticky: bool = True


WEIGHTS_ONLY = Can(match=False, mirror=False, sticky=False)
CAPABILITIES = {
    "envoy": Can(),
    "flags": WEIGHTS_ONLY,  # a share of users; nothing per request
    "istio": Can(),
    "gatewayapi:v1": Can(),
    "smi:v1alpha3": WEIGHTS_ONLY,  # a TrafficSplit only weighs backends
    "linkerd": WEIGHTS_ONLY,
    "nginx": Can(mirror=False, sticky=False),  # canary annotations: weight, header, cookie
    "kubernetes": Can(weights=frozenset({0, 100}), match=False, mirror=False, sticky=False),  # blue/green
}
assert set(CAPABILITIES) == {"envoy", "flags", *KUBE_ROUTERS}

MATCH = (AnalysisMatch(headers={"x-canary": StringMatch(exact="insider")}),)
STICKY = StickyCookie(name="rheostat-canary", value="c0ffee", max_age=3600)
# Every split the contract sets, with the feature it needs and how a refusal must name it.
SPLITS: list[tuple[str, Routes]] = [
    ("weight", Routes(90, 10)),
    ("weight", Routes(50, 50)),
    ("weight", Routes(0, 100)),
    ("weight", Routes(100, 0)),
    ("match", Routes(100, 0, match=MATCH)),
    ("match", Routes(90, 10, match=MATCH)),
    ("mirror", Routes(100, 0, mirror=True, mirror_weight=50)),
    ("sticky", Routes(80, 20, sticky=STICKY)),
]
NAMED = {"weight": r"weight", "match": r"match", "mirror": r"mirror", "sticky": r"sessionAffinity|cookie"}


def can(router: str, routes: Routes) -> bool:
    c = CAPABILITIES[router]
    return (
        (c.weights is None or routes.canary in c.weights)
        and (c.match or not routes.match)
        and (c.mirror or not routes.mirror)
        and (c.sticky or routes.sticky is None)
    )


def refusal(router: str, feature: str, routes: Routes) -> str:
    """What a refusal must name: the feature, or the weight when the router cannot set that one either."""
    c = CAPABILITIES[router]
    if c.weights is not None and routes.canary not in c.weights:
        return f"{NAMED[feature]}|{NAMED['weight']}"
    return NAMED[feature]


def richest(router: str) -> Routes:
    """The most telling split the router can hold: a sticky one, else an A/B one, else a weighted one."""
    for routes in (
        Routes(80, 20, sticky=STICKY),
        Routes(90, 10, match=MATCH),
        Routes(90, 10),
        Routes(0, 100),
    ):
        if can(router, routes):
            return routes
    raise AssertionError(f"{router} can hold no split")


def router_of(rig_id: str) -> str:
    return rig_id.partition("@")[0]


RIGS = [
    "envoy",
    "flags",
    *(f"{name}@{backend}" for name in KUBE_ROUTERS for backend in ("memory", "lightkube")),
]
UNSUPPORTED = [
    pytest.param(rig, i, id=f"{rig}-{feature}-{routes.primary}/{routes.canary}")
    for rig in RIGS
    for i, (feature, routes) in enumerate(SPLITS)
    if not can(router_of(rig), routes)
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_envoy(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SharedEnvoy]:
    shared = SharedEnvoy(tmp_path_factory.mktemp("envoy") / "data")
    try:
        yield shared
    finally:
        await shared.stop()


@pytest_asyncio.fixture(loop_scope="module", params=RIGS)
async def rig(
    request: pytest.FixtureRequest, shared_envoy: SharedEnvoy, tmp_path: Path
) -> AsyncIterator[Rig]:
    rig_id: str = request.param
    if rig_id == "envoy":
        r = await envoy_rig(shared_envoy)
        try:
            yield r
        finally:
            with contextlib.suppress(RouterError):  # its canary leaves the shared Envoy
                await r.router.finalize(r.key)
    elif rig_id == "flags":
        yield await flag_rig()
    else:
        name, _, backend = rig_id.partition("@")
        async with kube_rig(name, backend, tmp_path) as k:
            yield k


def name_of(request: pytest.FixtureRequest) -> str:
    return router_of(request.node.callspec.params["rig"])


async def test_a_new_route_is_all_on_the_primary(rig: Rig) -> None:
    await rig.router.reconcile(rig.route)
    assert await rig.router.get_routes(rig.key) == Routes(100, 0)


async def test_every_supported_split_reads_back_exactly_as_set(
    rig: Rig, request: pytest.FixtureRequest
) -> None:
    await rig.router.reconcile(rig.route)
    supported = [routes for _, routes in SPLITS if can(name_of(request), routes)]
    for routes in supported:
        await rig.router.set_routes(rig.key, routes)
        assert await rig.router.get_routes(rig.key) == routes


@pytest.mark.parametrize(("rig", "split"), UNSUPPORTED, indirect=["rig"])
async def test_an_unsupported_split_is_refused_by_name_and_the_previous_one_stays(
    rig: Rig, split: int, request: pytest.FixtureRequest
) -> None:
    feature, routes = SPLITS[split]
    name = name_of(request)
    await rig.router.reconcile(rig.route)
    before = Routes(0, 100)
    await rig.router.set_routes(rig.key, before)
    written = rig.written()
    with pytest.raises(RouterError, match=refusal(name, feature, routes)):
        await rig.router.set_routes(rig.key, routes)
    assert rig.written() == written, "a refused split writes nothing"
    assert await rig.router.get_routes(rig.key) == before


async def test_a_second_reconcile_of_the_same_route_writes_nothing(
    rig: Rig, request: pytest.FixtureRequest
) -> None:
    routes = richest(name_of(request))
    await rig.router.reconcile(rig.route)
    await rig.router.set_routes(rig.key, routes)
    written = rig.written()
    await rig.router.reconcile(rig.route)
    await rig.router.set_routes(rig.key, routes)
    assert rig.written() == written
    assert await rig.router.get_routes(rig.key) == routes


async def test_a_restarted_router_reads_the_live_split_back(rig: Rig, request: pytest.FixtureRequest) -> None:
    routes = richest(name_of(request))
    await rig.router.reconcile(rig.route)
    await rig.router.set_routes(rig.key, routes)
    await rig.restart()
    written = rig.written()
    await rig.router.reconcile(rig.route)
    assert await rig.router.get_routes(rig.key) == routes
    assert rig.written() == written, "taking up a route already in force writes nothing"


async def test_finalize_removes_what_the_router_made_and_a_second_finalize_is_harmless(rig: Rig) -> None:
    await rig.router.reconcile(rig.route)
    await rig.router.set_routes(rig.key, Routes(0, 100))
    assert await rig.leftovers(), "the router made something to route with"
    await rig.router.finalize(rig.key)
    assert await rig.leftovers() == []
    await rig.router.finalize(rig.key)
    assert await rig.leftovers() == []


FAULTS = [
    pytest.param(rig, fault, id=f"{rig}-{fault}")
    for rig in RIGS
    for fault in {"envoy": ("disk full", "admin unavailable"), "flags": ("state store full",)}.get(
        rig, ("conflict", "unavailable")
    )
]


@pytest.mark.parametrize(("rig", "fault"), FAULTS, indirect=["rig"])
async def test_a_failing_data_plane_is_a_router_error_and_never_a_half_shifted_route(
    rig: Rig, fault: str, request: pytest.FixtureRequest
) -> None:
    old = richest(name_of(request))
    new = Routes(0, 100) if old.canary != 100 else Routes(100, 0)
    await rig.router.reconcile(rig.route)
    await rig.router.set_routes(rig.key, old)
    assert fault in rig.faults
    with rig.fault(fault), pytest.raises(RouterError):
        await rig.router.set_routes(rig.key, new)
    assert await rig.router.get_routes(rig.key) in (old, new)
    await rig.restart()  # what the data plane holds, not what a router remembers
    await rig.router.reconcile(rig.route)
    assert await rig.router.get_routes(rig.key) in (old, new)
    await rig.router.set_routes(rig.key, new)  # once the fault is gone, the shift goes through
    assert await rig.router.get_routes(rig.key) == new
