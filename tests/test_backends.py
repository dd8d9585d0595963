"""A Canary's router comes from `spec.provider` and its platform from `targetRef.kind`, by name, with no
silent default: what a controller cannot drive is an error on that field naming what it has."""

from __future__ import annotations

import pytest

from rheostat.model.canary import Canary
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.rollout.backends import EMBEDDED, WORKLOAD_KINDS, Backends, Catalogue, embedded
from rheostat.rollout.engine import Engine, TickError
from tests.harness import Harness, canary_yaml

ANALYSIS = "{interval: 10s, stepWeight: 50, metrics: []}"
MESH = Catalogue(
    {"istio": WORKLOAD_KINDS, "nginx": frozenset({"Deployment"})},
    dict.fromkeys(WORKLOAD_KINDS, "istio"),
    "here",
)


def deployment(**spec: object) -> Canary:
    return canary_yaml(
        ANALYSIS, targetRef={"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"}, **spec
    )


def test_the_embedded_default_names_what_it_has() -> None:
    (problem,) = EMBEDDED.problems(deployment())
    assert problem.field == "spec.targetRef.kind"
    assert "Deployment cannot run in the embedded default" in problem.message
    assert (
        "rheostat run --kubeconfig" in problem.message
        and "supported: FeatureFlag, FlagSet, Workload" in problem.message
    )
    (problem,) = EMBEDDED.problems(canary_yaml(ANALYSIS, provider="istio"))
    assert (problem.field, problem.message) == (
        "spec.provider",
        "'istio' is not available in the embedded default; available: envoy, flags",
    )
    assert EMBEDDED.problems(canary_yaml(ANALYSIS)) == []  # no provider: envoy, the Workload default
    assert EMBEDDED.problems(canary_yaml(ANALYSIS, provider="envoy")) == []


def test_a_provider_that_cannot_route_the_target_kind_names_those_that_can() -> None:
    (problem,) = EMBEDDED.problems(canary_yaml(ANALYSIS, provider="flags"))
    assert problem.message == "'flags' cannot route a Workload target; for a Workload: envoy"
    daemonset = canary_yaml(
        ANALYSIS,
        provider="nginx",
        targetRef={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"},
    )
    (problem,) = MESH.problems(daemonset)
    assert problem.message == "'nginx' cannot route a DaemonSet target; for a DaemonSet: istio"


def test_each_canary_ticks_on_the_router_its_provider_names() -> None:
    istio, nginx, platform = MemoryRouter(), MemoryRouter(), MemoryPlatform()
    backends = Backends(MESH, {"istio": istio, "nginx": nginx}, dict.fromkeys(WORKLOAD_KINDS, platform))
    assert backends.parts(deployment()) == (istio, platform)
    assert backends.parts(deployment(provider="nginx")) == (nginx, platform)
    assert backends.all_routers() == [istio, nginx] and backends.all_platforms() == [platform]


async def test_a_tick_of_an_unavailable_provider_fails_by_field_and_touches_nothing() -> None:
    h = Harness(canary_yaml(ANALYSIS, provider="istio"))
    with pytest.raises(TickError, match=r"spec.provider: 'istio' is not available in the embedded default"):
        await h.tick()
    assert h.router.routes == {} and h.platform.workloads[h.target].primary_revision is None
    assert h.store.get_status(h.key) is None


async def test_the_engine_fills_the_route_contract_from_the_canary() -> None:
    h = Harness(
        canary_yaml(
            "{interval: 10s, iterations: 2, sessionAffinity: {cookieName: c, primaryCookieName: p}}",
            service={"port": 9898, "timeout": "3s", "headers": {"request": {"add": {"x-a": "1"}}}},
            revertOnDeletion=True,
        )
    )
    await h.tick()
    route = h.router.services[h.key]
    assert route.service is not None and route.service.headers is not None
    assert route.service.headers.request is not None and route.service.headers.request.add == {"x-a": "1"}
    assert (route.timeout_s, route.primary_cookie, route.revert_on_deletion) == (3.0, "p", True)


def test_embedded_without_flags_has_no_flags_router() -> None:
    b = embedded(MemoryRouter(), MemoryPlatform())
    assert sorted(b.catalogue.routes) == ["envoy"]
    engine = Engine.__new__(Engine)
    engine.backends = b
    flag = canary_yaml(
        ANALYSIS,
        targetRef={"apiVersion": "core.openfeature.dev/v1beta1", "kind": "FeatureFlag", "name": "f"},
        flag={"key": "f"},
        service=None,
    )
    with pytest.raises(
        TickError, match=r"FeatureFlag cannot run in the embedded default; supported: Workload"
    ):
        engine.parts(flag)


def test_fields_no_backend_here_acts_on_are_refused_by_name_at_load() -> None:
    c = canary_yaml(
        ANALYSIS,
        service={"port": 9898, "gateways": ["public-gateway.istio-system"]},
        autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
        upstreamRef={"apiVersion": "gloo.solo.io/v1", "kind": "Upstream", "name": "podinfo"},
    )
    found = {p.field: p.message for p in EMBEDDED.problems(c)}
    assert found == {
        "spec.upstreamRef": "not supported in the embedded default: it names a Gloo upstream, and Rheostat has "
        "no Gloo router",
        "spec.autoscalerRef": "not supported in the embedded default: a Workload runs spec.replicas replicas; "
        "autoscaling needs a cluster",
        "spec.service.gateways": "is not supported by the envoy router (there is no gateway in front of the "
        "local listener)",
    }
