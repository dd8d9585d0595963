"""The smi (Linkerd), nginx and kubernetes routers over the KubeAPI port, on the in-memory API server.

Every object a router writes is checked against its real schema (the SMI CRD, kubernetes-validate)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, Canary, StringMatch
from rheostat.model.load import parse_object
from rheostat.plugins.kube.api import Forbidden, Kind, Obj
from rheostat.plugins.kube.kinds import (
    INGRESS,
    SERVICE,
    TRAFFIC_SPLIT_V1ALPHA2,
    TRAFFIC_SPLIT_V1ALPHA3,
)
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.registry import UnknownPlugin
from rheostat.plugins.routers import ROUTERS
from rheostat.plugins.routers.base import Router, RouterError, Routes, ServiceRoute, StickyCookie, Upstream
from rheostat.plugins.routers.kubernetes import KubernetesRouter
from rheostat.plugins.routers.nginx import NginxRouter
from rheostat.plugins.routers.smi import SMIRouter
from tests.kube_schemas import assert_valid

NS = "test"
KEY = ObjectKey("test/podinfo")
SPLIT_KINDS = {"v1alpha2": TRAFFIC_SPLIT_V1ALPHA2, "v1alpha3": TRAFFIC_SPLIT_V1ALPHA3}
NGINX = "nginx.ingress.kubernetes.io"


# -- building what the engine would hand a router -------------------------------------------------------------


def canary_of(doc: dict[str, Any]) -> Canary:
    parsed = parse_object(doc)
    assert isinstance(parsed, Canary)
    return parsed


def route_of(canary: Canary, *, revert: bool = False) -> ServiceRoute:
    """A ServiceRoute as the engine builds it from a Canary on the Kubernetes platform."""
    service = canary.spec.the_service
    apex = service.name or canary.spec.targetRef.name
    ns = canary.metadata.namespace
    return ServiceRoute(
        key=canary.metadata.key,
        port=service.port,
        primary=(Upstream(f"{apex}-primary", service.port),),
        canary=(Upstream(f"{apex}-canary", service.port),),
        service=service,
        target=f"{ns}/{canary.spec.targetRef.name}",
        revert_on_deletion=revert or canary.spec.revertOnDeletion,
        ingress=canary.spec.ingressRef.name if canary.spec.ingressRef is not None else None,
    )


def podinfo(**spec: Any) -> Canary:
    analysis = spec.pop("analysis", {"interval": "1m", "stepWeight": 10, "maxWeight": 50})
    doc = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": analysis,
            **spec,
        },
    }
    return canary_of(doc)


def yaml_blocks(markdown: Path) -> list[dict[str, Any]]:
    """Every YAML document of a Markdown file's ```yaml blocks."""
    out: list[dict[str, Any]] = []
    for block in re.findall(r"```ya?ml\n(.*?)```", markdown.read_text(), re.S):
        out.extend(d for d in yaml.safe_load_all(block) if isinstance(d, dict))
    return out


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


class Recorder(MemoryKube):
    """The in-memory API server, checking every object written against its schema."""

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        assert_valid(obj)
        stored = await super().apply(obj, force=force)
        assert_valid(stored)
        return stored

    async def replace(self, obj: Obj) -> Obj:
        assert_valid(obj)
        return await super().replace(obj)

    def stored(self, kind: Kind, name: str) -> Obj:
        return self.objects[(kind.api_version, kind.kind, NS, name)]

    def count(self, verb: str | None = None) -> int:
        return len([w for w in self.writes if verb is None or w[0] == verb])


# -- SMI TrafficSplit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1alpha2", "v1alpha3"])
async def test_smi_weighted_canary_is_one_traffic_split_read_back_each_step(version: str) -> None:
    api = Recorder()
    router = SMIRouter(api, version)  # type: ignore[arg-type]
    route = route_of(podinfo(provider=f"smi:{version}"))
    await router.reconcile(route)
    split = api.stored(SPLIT_KINDS[version], "podinfo")
    assert split["spec"]["service"] == "podinfo"
    assert split["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rheostat"
    assert split["metadata"]["annotations"]["rheostat.dev/canary"] == "test/podinfo"
    assert await router.get_routes(KEY) == Routes(100, 0)

    for primary, canary in ((90, 10), (50, 50), (0, 100), (100, 0)):
        before = api.count()
        await router.set_routes(KEY, Routes(primary, canary))
        assert api.count() == before + 1  # both weights in one write
        backends = api.stored(SPLIT_KINDS[version], "podinfo")["spec"]["backends"]
        assert {b["service"]: b["weight"] for b in backends} == {
            "podinfo-primary": primary,
            "podinfo-canary": canary,
        }
        assert await router.get_routes(KEY) == Routes(primary, canary)


async def test_smi_reconcile_keeps_the_weights_and_writes_nothing_at_rest() -> None:
    api = Recorder()
    router = SMIRouter(api, "v1alpha2")
    route = route_of(podinfo())
    await router.reconcile(route)
    await router.set_routes(KEY, Routes(70, 30))
    before = api.count()
    await router.reconcile(route)
    await router.set_routes(KEY, Routes(70, 30))
    assert api.count() == before
    assert await router.get_routes(KEY) == Routes(70, 30)


async def test_smi_relative_weights_are_read_as_percent() -> None:
    api = Recorder()
    router = SMIRouter(api, "v1alpha3")
    await router.reconcile(route_of(podinfo()))
    split = api.stored(TRAFFIC_SPLIT_V1ALPHA3, "podinfo")
    split["spec"]["backends"] = [
        {"service": "podinfo-primary", "weight": 750},
        {"service": "podinfo-canary", "weight": 250},
    ]
    assert await router.get_routes(KEY) == Routes(75, 25)


async def test_smi_root_service_is_the_one_host_as_flagger_does() -> None:
    api = Recorder()
    router = SMIRouter(api, "v1alpha2")
    await router.reconcile(
        route_of(podinfo(service={"port": 80, "hosts": ["podinfo.test.svc.cluster.local"]}))
    )
    assert (
        api.stored(TRAFFIC_SPLIT_V1ALPHA2, "podinfo")["spec"]["service"] == "podinfo.test.svc.cluster.local"
    )
    with pytest.raises(RouterError, match=r"service\.hosts"):
        await router.reconcile(route_of(podinfo(service={"port": 80, "hosts": ["a.example", "b.example"]})))


@pytest.mark.parametrize(
    ("routes", "field"),
    [
        (Routes(100, 0, mirror=True), "analysis.mirror"),
        (
            Routes(100, 0, match=(AnalysisMatch(headers={"x-canary": StringMatch(exact="insider")}),)),
            "analysis.match",
        ),
        (Routes(90, 10, sticky=StickyCookie("flagger-cookie", "abc")), "analysis.sessionAffinity"),
    ],
)
async def test_smi_refuses_what_a_traffic_split_cannot_say_and_keeps_the_split(
    routes: Routes, field: str
) -> None:
    api = Recorder()
    router = SMIRouter(api, "v1alpha3")
    await router.reconcile(route_of(podinfo()))
    await router.set_routes(KEY, Routes(80, 20))
    with pytest.raises(RouterError, match=rf"{re.escape(field)} is not supported by the smi:v1alpha3 router"):
        await router.set_routes(KEY, routes)
    assert await router.get_routes(KEY) == Routes(80, 20)


@pytest.mark.parametrize(
    ("service", "field"),
    [
        ({"retries": {"attempts": 3}}, "service.retries"),
        ({"timeout": "5s"}, "service.timeout"),
        ({"gateways": ["public-gateway"]}, "service.gateways"),
        ({"headers": {"request": {"add": {"x-a": "b"}}}}, "service.headers"),
        ({"trafficPolicy": {"tls": {"mode": "DISABLE"}}}, "service.trafficPolicy"),
        ({"gatewayRefs": [{"name": "podinfo", "kind": "Service"}]}, "service.gatewayRefs"),
    ],
)
async def test_smi_refuses_service_fields_by_name_and_writes_nothing(
    service: dict[str, Any], field: str
) -> None:
    api = Recorder()
    with pytest.raises(RouterError, match=rf"{re.escape(field)} is not supported by the linkerd router"):
        await SMIRouter(api, "v1alpha2", name="linkerd").reconcile(
            route_of(podinfo(service={"port": 80, **service}))
        )
    assert api.writes == []


async def test_smi_without_the_crd_names_the_crd() -> None:
    api = Recorder(missing=(TRAFFIC_SPLIT_V1ALPHA2,))
    with pytest.raises(
        RouterError, match=r"TrafficSplit CRD \(trafficsplits\.split\.smi-spec\.io/v1alpha2\)"
    ):
        await SMIRouter(api, "v1alpha2").reconcile(route_of(podinfo()))


async def test_smi_a_refused_write_is_a_router_error_and_the_old_split_stays() -> None:
    class Refusing(Recorder):
        refuse = False

        async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
            if self.refuse:
                raise Forbidden(403, "patch", TRAFFIC_SPLIT_V1ALPHA2, "RBAC", obj["metadata"]["name"])
            return await super().apply(obj, force=force)

    api = Refusing()
    router = SMIRouter(api, "v1alpha2")
    await router.reconcile(route_of(podinfo()))
    await router.set_routes(KEY, Routes(90, 10))
    api.refuse = True
    with pytest.raises(RouterError, match=r"forbidden: cannot patch trafficsplits\.split\.smi-spec\.io"):
        await router.set_routes(KEY, Routes(80, 20))
    assert await router.get_routes(KEY) == Routes(90, 10)


async def test_smi_takes_over_a_split_and_gives_it_back_with_revert_on_deletion() -> None:
    api = Recorder()
    theirs = {
        "apiVersion": TRAFFIC_SPLIT_V1ALPHA2.api_version,
        "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"team": "web"}},
        "spec": {"service": "podinfo", "backends": [{"service": "podinfo-v1", "weight": 100}]},
    }
    await api.apply(theirs)
    router = SMIRouter(api, "v1alpha2")
    await router.reconcile(route_of(podinfo(), revert=True))
    await router.set_routes(KEY, Routes(60, 40))
    assert await router.get_routes(KEY) == Routes(60, 40)
    await router.finalize(KEY)
    back = api.stored(TRAFFIC_SPLIT_V1ALPHA2, "podinfo")
    assert back["spec"] == theirs["spec"]
    assert back["metadata"]["labels"] == {"team": "web"}
    assert "rheostat.dev/canary" not in (back["metadata"].get("annotations") or {})


async def test_smi_takeover_leaves_none_of_the_users_spec_and_then_writes_nothing_at_rest() -> None:
    api = Recorder()
    theirs = {
        "apiVersion": TRAFFIC_SPLIT_V1ALPHA3.api_version,
        "kind": "TrafficSplit",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "service": "podinfo",
            "matches": [{"kind": "HTTPRouteGroup", "name": "ab-test"}],
            "backends": [{"service": "podinfo-v1", "weight": 50}, {"service": "podinfo-v2", "weight": 50}],
        },
    }
    await api.apply(theirs)
    router = SMIRouter(api, "v1alpha3")
    route = route_of(podinfo())
    await router.reconcile(route)
    split = api.stored(TRAFFIC_SPLIT_V1ALPHA3, "podinfo")
    assert "matches" not in split["spec"]
    assert [b["service"] for b in split["spec"]["backends"]] == ["podinfo-primary", "podinfo-canary"]
    before = api.count()
    await router.reconcile(route)
    assert api.count() == before
    await router.finalize(KEY)  # without revertOnDeletion the taken-over split stays, on the primary
    assert api.stored(TRAFFIC_SPLIT_V1ALPHA3, "podinfo")["spec"]["backends"][0] == {
        "service": "podinfo-primary",
        "weight": 100,
    }


async def test_smi_finalize_deletes_the_split_it_made_only() -> None:
    api = Recorder()
    router = SMIRouter(api, "v1alpha2")
    await router.reconcile(route_of(podinfo()))
    other = podinfo(service={"port": 80, "name": "backend"})
    other_route = route_of(other)
    await router.reconcile(dataclasses.replace(other_route, key=ObjectKey("test/backend")))
    await router.finalize(KEY)
    assert await api.get(TRAFFIC_SPLIT_V1ALPHA2, NS, "podinfo") is None
    assert await api.get(TRAFFIC_SPLIT_V1ALPHA2, NS, "backend") is not None


async def test_smi_refuses_a_split_another_canary_manages() -> None:
    api = Recorder()
    router = SMIRouter(api, "v1alpha2")
    await router.reconcile(route_of(podinfo()))
    intruder = route_of(podinfo())
    with pytest.raises(RouterError, match="managed by canary test/podinfo"):
        await router.reconcile(dataclasses.replace(intruder, key=ObjectKey("test/other")))


@pytest.mark.parametrize("example", ["linkerd-canary.yaml", "linkerd-canary-steps.yaml"])
async def test_flaggers_linkerd_examples_write_valid_v1alpha2_splits(shared: Path, example: str) -> None:
    canary = canary_of(yaml.safe_load((shared / "testdata/flagger/examples" / example).read_text()))
    assert canary.spec.provider == "linkerd"
    api = Recorder()
    router = ROUTERS.create(canary.spec.provider, api=api)
    await router.reconcile(route_of(canary))
    a = canary.spec.the_analysis
    steps = a.stepWeights or list(range(a.stepWeight or 0, a.max_weight + 1, a.stepWeight or 1))
    for weight in [*steps, 0]:
        await router.set_routes(canary.metadata.key, Routes(100 - weight, weight))
        assert await router.get_routes(canary.metadata.key) == Routes(100 - weight, weight)
    split = api.stored(TRAFFIC_SPLIT_V1ALPHA2, "podinfo")
    assert split["apiVersion"] == "split.smi-spec.io/v1alpha2"


async def test_linkerd_tutorials_gamma_canary_is_refused_by_smi_naming_gateway_refs(shared: Path) -> None:
    docs = yaml_blocks(shared / "testdata/flagger/tutorials/linkerd-progressive-delivery.md")
    canary = canary_of(of_kind(docs, "Canary")[0])
    assert canary.spec.provider is None  # the tutorial sets the controller's default to Gateway API (GAMMA)
    with pytest.raises(RouterError, match=r"service\.gatewayRefs is not supported by the linkerd router"):
        await ROUTERS.create("linkerd", api=Recorder()).reconcile(route_of(canary))


def test_the_registry_builds_each_router_with_the_api() -> None:
    api = MemoryKube()
    assert isinstance(ROUTERS.create("smi:v1alpha2", api=api), SMIRouter)
    smi3 = ROUTERS.create("smi:v1alpha3", api=api)
    assert isinstance(smi3, SMIRouter) and smi3.kind == TRAFFIC_SPLIT_V1ALPHA3
    linkerd = ROUTERS.create("linkerd", api=api)
    assert isinstance(linkerd, SMIRouter) and linkerd.kind == TRAFFIC_SPLIT_V1ALPHA2
    assert isinstance(ROUTERS.create("nginx", api=api), NginxRouter)
    assert isinstance(ROUTERS.create("kubernetes", api=api), KubernetesRouter)
    with pytest.raises(UnknownPlugin, match="smi:v1alpha1"):
        ROUTERS.create("smi:v1alpha1", api=api)


# -- NGINX canary Ingress -------------------------------------------------------------------------------------


def ingress(name: str = "podinfo", backend: str = "podinfo", port: int = 80) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {"app": "podinfo"},
            "annotations": {"kubernetes.io/ingress.class": "nginx", f"{NGINX}/proxy-body-size": "8m"},
        },
        "spec": {
            "rules": [
                {
                    "host": "app.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": backend, "port": {"number": port}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


def nginx_canary(**analysis: Any) -> Canary:
    return podinfo(
        provider="nginx",
        ingressRef={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
        service={"port": 80, "targetPort": 9898},
        **({"analysis": analysis} if analysis else {}),
    )


AB = {
    "interval": "1m",
    "iterations": 10,
    "match": [{"headers": {"x-canary": {"exact": "insider"}}}, {"headers": {"cookie": {"exact": "canary"}}}],
}


async def nginx_router(api: Recorder, canary: Canary | None = None) -> NginxRouter:
    if await api.get(INGRESS, NS, "podinfo") is None:
        await api.apply(ingress())
    router = NginxRouter(api)
    await router.reconcile(route_of(canary or nginx_canary()))
    return router


async def test_nginx_copies_the_ingress_to_a_canary_one_and_leaves_the_original() -> None:
    api = Recorder()
    await api.apply(ingress())
    original = await api.get(INGRESS, NS, "podinfo")
    await nginx_router(api)
    copy = api.stored(INGRESS, "podinfo-canary")
    backend = copy["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "podinfo-canary", "port": {"number": 80}}
    annotations = copy["metadata"]["annotations"]
    assert annotations[f"{NGINX}/canary"] == "true"
    assert annotations[f"{NGINX}/canary-weight"] == "0"
    assert annotations["kubernetes.io/ingress.class"] == "nginx"
    assert annotations["rheostat.dev/canary"] == "test/podinfo"
    assert copy["metadata"]["labels"] == {"app": "podinfo", "app.kubernetes.io/managed-by": "rheostat"}
    assert await api.get(INGRESS, NS, "podinfo") == original


async def test_nginx_weighted_canary_is_read_back_from_the_annotation() -> None:
    api = Recorder()
    router = await nginx_router(api)
    assert await router.get_routes(KEY) == Routes(100, 0)
    for primary, canary in ((90, 10), (50, 50), (0, 100), (100, 0)):
        before = api.count()
        await router.set_routes(KEY, Routes(primary, canary))
        assert api.count() == before + 1
        assert api.stored(INGRESS, "podinfo-canary")["metadata"]["annotations"][
            f"{NGINX}/canary-weight"
        ] == str(canary)
        assert await router.get_routes(KEY) == Routes(primary, canary)
    before = api.count()
    await router.set_routes(KEY, Routes(100, 0))
    await router.reconcile(route_of(nginx_canary()))
    assert api.count() == before  # nothing written at rest


async def test_nginx_reconcile_follows_the_original_and_keeps_the_weight() -> None:
    api = Recorder()
    router = await nginx_router(api)
    await router.set_routes(KEY, Routes(70, 30))
    changed = ingress()
    changed["spec"]["rules"][0]["host"] = "www.example.com"
    await api.apply(changed)
    await router.reconcile(route_of(nginx_canary()))
    copy = api.stored(INGRESS, "podinfo-canary")
    assert copy["spec"]["rules"][0]["host"] == "www.example.com"
    assert await router.get_routes(KEY) == Routes(70, 30)


async def test_nginx_ab_header_and_cookie_then_back_to_the_primary() -> None:
    api = Recorder()
    canary = nginx_canary(**AB)
    router = await nginx_router(api, canary)
    match = tuple(canary.spec.the_analysis.match or ())
    await router.set_routes(KEY, Routes(100, 0, match=match))
    annotations = api.stored(INGRESS, "podinfo-canary")["metadata"]["annotations"]
    assert annotations[f"{NGINX}/canary-by-header"] == "x-canary"
    assert annotations[f"{NGINX}/canary-by-header-value"] == "insider"
    assert annotations[f"{NGINX}/canary-by-cookie"] == "canary"
    assert annotations[f"{NGINX}/canary-weight"] == "0"
    assert await router.get_routes(KEY) == Routes(100, 0, match=match)

    await router.set_routes(KEY, Routes(100, 0))  # promotion done: matched users are back on the primary
    annotations = api.stored(INGRESS, "podinfo-canary")["metadata"]["annotations"]
    assert not [k for k in annotations if k.startswith(f"{NGINX}/canary-by")]
    assert await router.get_routes(KEY) == Routes(100, 0)


async def test_nginx_ab_header_regex_is_a_pattern() -> None:
    api = Recorder()
    router = await nginx_router(api)
    match = (AnalysisMatch(headers={"user-agent": StringMatch(regex=".*Firefox.*")}),)
    await router.set_routes(KEY, Routes(100, 0, match=match))
    annotations = api.stored(INGRESS, "podinfo-canary")["metadata"]["annotations"]
    assert annotations[f"{NGINX}/canary-by-header-pattern"] == ".*Firefox.*"
    assert f"{NGINX}/canary-by-header-value" not in annotations
    assert await router.get_routes(KEY) == Routes(100, 0, match=match)


@pytest.mark.parametrize(
    ("match", "field"),
    [
        ({"headers": {"x-a": {"exact": "1"}, "x-b": {"exact": "2"}}}, "analysis.match"),
        ({"headers": {"x-a": {"prefix": "ins"}}}, "analysis.match.headers.x-a"),
        ({"headers": {"cookie": {"regex": "can.*"}}}, "analysis.match.headers.cookie"),
        ({"queryParams": {"canary": {"exact": "1"}}}, "analysis.match.queryParams"),
        ({"sourceLabels": {"app": "front"}}, "analysis.match.sourceLabels"),
    ],
)
async def test_nginx_refuses_matches_it_cannot_say(match: dict[str, Any], field: str) -> None:
    api = Recorder()
    router = await nginx_router(api)
    await router.set_routes(KEY, Routes(80, 20))
    with pytest.raises(RouterError, match=re.escape(field)):
        await router.set_routes(KEY, Routes(100, 0, match=(AnalysisMatch.model_validate(match),)))
    assert await router.get_routes(KEY) == Routes(80, 20)


async def test_nginx_refuses_two_different_headers_and_mirroring_and_sticky_sessions() -> None:
    api = Recorder()
    router = await nginx_router(api)
    two = (
        AnalysisMatch(headers={"x-a": StringMatch(exact="1")}),
        AnalysisMatch(headers={"x-b": StringMatch(exact="2")}),
    )
    with pytest.raises(RouterError, match="one header only"):
        await router.set_routes(KEY, Routes(100, 0, match=two))
    with pytest.raises(RouterError, match=r"analysis\.mirror is not supported by the nginx router"):
        await router.set_routes(KEY, Routes(100, 0, mirror=True))
    with pytest.raises(RouterError, match=r"analysis\.sessionAffinity is not supported by the nginx router"):
        await router.set_routes(KEY, Routes(90, 10, sticky=StickyCookie("c", "v")))


async def test_nginx_refuses_a_bad_ingress_ref_by_name() -> None:
    api = Recorder()
    no_ref = podinfo(provider="nginx", service={"port": 80})
    with pytest.raises(RouterError, match="ingressRef is required by the nginx router"):
        await NginxRouter(api).reconcile(route_of(no_ref))
    with pytest.raises(RouterError, match="ingressRef: Ingress test/podinfo not found"):
        await NginxRouter(api).reconcile(route_of(nginx_canary()))
    await api.apply(ingress(backend="frontend"))
    with pytest.raises(RouterError, match="has no backend for service podinfo"):
        await NginxRouter(api).reconcile(route_of(nginx_canary()))
    with pytest.raises(RouterError, match=r"service\.retries is not supported by the nginx router"):
        await NginxRouter(api).reconcile(
            route_of(
                podinfo(
                    provider="nginx",
                    ingressRef={"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"},
                    service={"port": 80, "retries": {"attempts": 2}},
                )
            )
        )


async def test_nginx_never_overwrites_an_ingress_it_does_not_manage() -> None:
    api = Recorder()
    await api.apply(ingress())
    await api.apply(ingress("podinfo-canary"))
    with pytest.raises(RouterError, match="podinfo-canary exists and is not managed"):
        await NginxRouter(api).reconcile(route_of(nginx_canary()))


async def test_nginx_finalize_deletes_the_canary_ingress_only() -> None:
    api = Recorder()
    router = await nginx_router(api)
    await router.set_routes(KEY, Routes(50, 50))
    await router.finalize(KEY)
    assert await api.get(INGRESS, NS, "podinfo-canary") is None
    assert await api.get(INGRESS, NS, "podinfo") is not None


async def test_nginx_a_stale_write_is_a_conflict_and_the_old_weight_stays() -> None:
    class Racing(Recorder):
        race = False

        async def replace(self, obj: Obj) -> Obj:
            if self.race:  # someone edits the canary Ingress between our read and our write
                self.race = False
                self.set_status(INGRESS, NS, obj["metadata"]["name"], {"loadBalancer": {}})
            return await super().replace(obj)

    api = Racing()
    router = await nginx_router(api)
    await router.set_routes(KEY, Routes(90, 10))
    api.race = True
    with pytest.raises(RouterError, match="409"):
        await router.set_routes(KEY, Routes(80, 20))
    assert await router.get_routes(KEY) == Routes(90, 10)


async def test_nginx_tutorial_canary_and_ingress_weighted_then_ab(shared: Path) -> None:
    docs = yaml_blocks(shared / "testdata/flagger/tutorials/nginx-progressive-delivery.md")
    (original,) = of_kind(docs, "Ingress")
    assert_valid(original)
    (doc,) = of_kind(docs, "Canary")
    api = Recorder()
    await api.apply(original)
    canary = canary_of(doc)
    router = ROUTERS.create("nginx", api=api)
    await router.reconcile(route_of(canary))
    for weight in range(0, canary.spec.the_analysis.max_weight + 1, canary.spec.the_analysis.stepWeight or 1):
        await router.set_routes(canary.metadata.key, Routes(100 - weight, weight))
        assert await router.get_routes(canary.metadata.key) == Routes(100 - weight, weight)

    # The tutorial's A/B section: the same Canary with the analysis replaced by its match block.
    ab_block = next(d for d in docs if "analysis" in d and "match" in d["analysis"])
    ab_doc = {**doc, "spec": {**doc["spec"], "analysis": ab_block["analysis"]}}
    ab = canary_of(ab_doc)
    await router.set_routes(canary.metadata.key, Routes(100, 0))
    await router.reconcile(route_of(ab))
    match = tuple(ab.spec.the_analysis.match or ())
    await router.set_routes(ab.metadata.key, Routes(100, 0, match=match))
    assert await router.get_routes(ab.metadata.key) == Routes(100, 0, match=match)
    assert_valid(api.stored(INGRESS, "podinfo-canary"))


def served_as_v1(old: dict[str, Any]) -> dict[str, Any]:
    """An extensions/v1beta1 Ingress as the API server serves it through networking.k8s.io/v1."""
    rules = []
    for rule in old["spec"]["rules"]:
        paths = [
            {
                "path": p.get("path", "/"),
                "pathType": "ImplementationSpecific",
                "backend": {
                    "service": {
                        "name": p["backend"]["serviceName"],
                        "port": {"number": p["backend"]["servicePort"]},
                    }
                },
            }
            for p in rule["http"]["paths"]
        ]
        rules.append({"host": rule["host"], "http": {"paths": paths}})
    return {**old, "apiVersion": "networking.k8s.io/v1", "spec": {"rules": rules}}


async def test_linkerd_tutorials_nginx_ab_canary(shared: Path) -> None:
    docs = yaml_blocks(shared / "testdata/flagger/tutorials/linkerd-progressive-delivery.md")
    (old,) = of_kind(docs, "Ingress")
    original = served_as_v1(old)
    assert_valid(original)
    canary = canary_of(next(d for d in of_kind(docs, "Canary") if d["spec"].get("provider") == "nginx"))
    api = Recorder()
    await api.apply(original)
    router = ROUTERS.create("nginx", api=api)
    await router.reconcile(route_of(canary))
    match = tuple(canary.spec.the_analysis.match or ())
    await router.set_routes(canary.metadata.key, Routes(100, 0, match=match))
    annotations = api.stored(INGRESS, "podinfo-canary")["metadata"]["annotations"]
    assert annotations[f"{NGINX}/canary-by-header-value"] == "always"
    assert annotations[f"{NGINX}/canary-by-cookie"] == "canary"
    # the l5d-dst-override snippet of the original travels with the copy
    assert "l5d-dst-override" in annotations[f"{NGINX}/configuration-snippet"]
    assert await router.get_routes(canary.metadata.key) == Routes(100, 0, match=match)


# -- kubernetes (blue/green by the apex Service) -------------------------------------------------------------


def service(name: str, selector: str, port: int = 9898) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/managed-by": "rheostat"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": selector},
            "ports": [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }


async def services(api: Recorder) -> None:
    """What the kubernetes platform makes: apex and primary select the primary pods, -canary the target's."""
    for name, selector in (("podinfo", "podinfo-primary"), ("podinfo-primary", "podinfo-primary")):
        await api.apply(service(name, selector))
    await api.apply(service("podinfo-canary", "podinfo"))


def bg_canary(**spec: Any) -> Canary:
    return podinfo(provider="kubernetes", analysis={"interval": "30s", "iterations": 10}, **spec)


async def test_kubernetes_blue_green_switches_the_apex_selector_in_one_write() -> None:
    api = Recorder()
    await services(api)
    router = KubernetesRouter(api)
    await router.reconcile(route_of(bg_canary()))
    assert await router.get_routes(KEY) == Routes(100, 0)
    before = api.count()
    await router.set_routes(KEY, Routes(0, 100))
    assert api.count() == before + 1
    apex = api.stored(SERVICE, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo"}
    assert apex["spec"]["ports"][0]["port"] == 9898  # the rest of the Service is untouched
    assert await router.get_routes(KEY) == Routes(0, 100)
    await router.set_routes(KEY, Routes(100, 0))
    assert api.stored(SERVICE, "podinfo")["spec"]["selector"] == {"app": "podinfo-primary"}
    assert await router.get_routes(KEY) == Routes(100, 0)
    before = api.count()
    await router.set_routes(KEY, Routes(100, 0))
    assert api.count() == before


@pytest.mark.parametrize(
    "routes",
    [
        Routes(90, 10),
        Routes(50, 50),
        Routes(100, 0, mirror=True),
        Routes(100, 0, match=(AnalysisMatch(headers={"x-canary": StringMatch(exact="1")}),)),
    ],
)
async def test_kubernetes_refuses_anything_but_blue_green(routes: Routes) -> None:
    api = Recorder()
    await services(api)
    router = KubernetesRouter(api)
    await router.reconcile(route_of(bg_canary()))
    before = api.count()
    with pytest.raises(RouterError, match="the kubernetes provider supports blue/green only"):
        await router.set_routes(KEY, routes)
    assert api.count() == before


async def test_kubernetes_refuses_l7_service_fields_and_a_missing_apex() -> None:
    api = Recorder()
    with pytest.raises(RouterError, match=r"Service test/podinfo not found"):
        await KubernetesRouter(api).reconcile(route_of(bg_canary()))
    await services(api)
    with pytest.raises(RouterError, match=r"service\.hosts is not supported by the kubernetes router"):
        await KubernetesRouter(api).reconcile(
            route_of(bg_canary(service={"port": 9898, "hosts": ["a.example"]}))
        )


async def test_kubernetes_finalize_points_the_apex_back_at_the_primary() -> None:
    api = Recorder()
    await services(api)
    router = KubernetesRouter(api)
    await router.reconcile(route_of(bg_canary()))
    await router.set_routes(KEY, Routes(0, 100))
    await router.finalize(KEY)
    assert api.stored(SERVICE, "podinfo")["spec"]["selector"] == {"app": "podinfo-primary"}


async def test_kubernetes_blue_green_tutorial_canary(shared: Path) -> None:
    docs = yaml_blocks(shared / "testdata/flagger/tutorials/kubernetes-blue-green.md")
    (doc,) = of_kind(docs, "Canary")
    canary = canary_of(doc)
    api = Recorder()
    await services(api)
    router: Router = ROUTERS.create(canary.spec.provider or "", api=api)
    await router.reconcile(route_of(canary))
    await router.set_routes(canary.metadata.key, Routes(0, 100))
    assert await router.get_routes(canary.metadata.key) == Routes(0, 100)
    await router.set_routes(canary.metadata.key, Routes(100, 0))
    assert await router.get_routes(canary.metadata.key) == Routes(100, 0)
