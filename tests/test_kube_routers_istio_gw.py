"""The Istio and Gateway API routers over the KubeAPI port: what they write, read back, take over and give back.

Every test goes through the port only (`kube` fixture), so the same tests run over the in-memory API server
and over an HTTP emulation. Every object a router wrote is checked against its real CRD schema.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, Canary, Service, StringMatch
from rheostat.model.load import parse_object
from rheostat.plugins.kube.api import Conflict, Kind, KubeAPI, Obj
from rheostat.plugins.kube.kinds import DESTINATION_RULE, HTTPROUTE, VIRTUAL_SERVICE
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.routers import ROUTERS
from rheostat.plugins.routers.base import Router, RouterError, Routes, ServiceRoute, StickyCookie, Upstream
from rheostat.plugins.routers.gatewayapi import GatewayAPIRouter
from rheostat.plugins.routers.istio import IstioRouter
from tests.kube_schemas import assert_valid

KEY = ObjectKey("test/podinfo")
NS = "test"
ISTIO_SERVICE: dict[str, Any] = {
    "port": 9898,
    "gateways": ["istio-system/public-gateway"],
    "hosts": ["app.example.com"],
}
GW_SERVICE: dict[str, Any] = {
    "port": 9898,
    "hosts": ["www.example.com"],
    "gatewayRefs": [{"name": "gateway", "namespace": "istio-ingress"}],
}
HEADER = AnalysisMatch(headers={"x-canary": StringMatch(exact="insider")})
COOKIE = AnalysisMatch(headers={"cookie": StringMatch(regex="^(.*?;)?(type=insider)(;.*)?$")})
QUERY = AnalysisMatch(queryParams={"canary": StringMatch(exact="yes")})
STICKY = StickyCookie("flagger-cookie", "Xy12abCD", 3600)


@pytest.fixture
def kube() -> KubeAPI:
    return MemoryKube()


def route(
    service: dict[str, Any],
    *,
    key: str = KEY,
    primary_cookie: str | None = None,
    revert: bool = False,
) -> ServiceRoute:
    svc = Service.model_validate(service)
    ns, _, name = key.partition("/")
    apex = svc.name or name
    return ServiceRoute(
        key=ObjectKey(key),
        port=svc.port,
        primary=(Upstream(f"{apex}-primary", svc.port),),
        canary=(Upstream(f"{apex}-canary", svc.port),),
        service=svc,
        target=f"{ns}/{name}",
        primary_cookie=primary_cookie,
        revert_on_deletion=revert,
    )


def route_of(canary: Canary) -> ServiceRoute:
    """A ServiceRoute the way the engine builds one for a Deployment target."""
    service = canary.spec.the_service
    apex = service.name or canary.spec.targetRef.name
    sa = canary.spec.the_analysis.sessionAffinity
    return ServiceRoute(
        key=canary.metadata.key,
        port=service.port,
        primary=(Upstream(f"{apex}-primary", service.port),),
        canary=(Upstream(f"{apex}-canary", service.port),),
        service=service,
        target=f"{canary.metadata.namespace}/{canary.spec.targetRef.name}",
        primary_cookie=sa.primaryCookieName if sa is not None else None,
        revert_on_deletion=canary.spec.revertOnDeletion,
    )


async def objects(api: KubeAPI, *kinds: Kind) -> list[Obj]:
    return [o for kind in kinds for o in await api.list(kind, NS)]


async def assert_all_valid(api: KubeAPI, *kinds: Kind) -> int:
    found = await objects(api, *kinds)
    for obj in found:
        assert_valid(obj)
    return len(found)


async def vs(api: KubeAPI, name: str = "podinfo") -> Obj:
    found = await api.get(VIRTUAL_SERVICE, NS, name)
    assert found is not None
    return found


async def hr(api: KubeAPI, name: str = "podinfo") -> Obj:
    found = await api.get(HTTPROUTE, NS, name)
    assert found is not None
    return found


def http_named(obj: Obj, name: str) -> Obj:
    return next(r for r in obj["spec"]["http"] if r.get("name") == name)


def rule_named(obj: Obj, name: str) -> Obj:
    return next(r for r in obj["spec"]["rules"] if r.get("name") == name)


def istio_weights(obj: Obj) -> dict[str, int]:
    return {d["destination"]["host"]: d["weight"] for d in http_named(obj, "default")["route"]}


def gw_weights(obj: Obj) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in rule_named(obj, "default")["backendRefs"]}


# -- registry ------------------------------------------------------------------------------------------


def test_registered_under_flaggers_provider_names(kube: KubeAPI) -> None:
    assert isinstance(ROUTERS.create("istio", api=kube), IstioRouter)
    assert isinstance(ROUTERS.create("gatewayapi", api=kube), GatewayAPIRouter)
    assert isinstance(ROUTERS.create("gatewayapi:v1", api=kube), GatewayAPIRouter)


# -- Istio -----------------------------------------------------------------------------------------------


async def test_istio_weighted_canary_shifts_in_one_write_and_reads_back(kube: KubeAPI, shared: Path) -> None:
    router = IstioRouter(kube)
    await router.reconcile(route(ISTIO_SERVICE | {"trafficPolicy": {"tls": {"mode": "DISABLE"}}}))
    assert await router.get_routes(KEY) == Routes(100, 0)
    for primary, canary in ((100, 0), (80, 20), (0, 100), (100, 0)):
        before = (await vs(kube))["metadata"]["resourceVersion"]
        await router.set_routes(KEY, Routes(primary, canary))
        after = await vs(kube)
        assert int(after["metadata"]["resourceVersion"]) <= int(before) + 1  # one write at most
        assert istio_weights(after) == {"podinfo-primary": primary, "podinfo-canary": canary}
        assert await router.get_routes(KEY) == Routes(primary, canary)
        assert await assert_all_valid(kube, VIRTUAL_SERVICE, DESTINATION_RULE) == 3
    spec = (await vs(kube))["spec"]
    assert spec["hosts"] == ["app.example.com", "podinfo"]
    assert spec["gateways"] == ["istio-system/public-gateway"]
    for host in ("podinfo-primary", "podinfo-canary"):
        rule = await kube.get(DESTINATION_RULE, NS, host)
        assert rule is not None and rule["spec"] == {
            "host": host,
            "trafficPolicy": {"tls": {"mode": "DISABLE"}},
        }


async def test_istio_reconcile_keeps_the_weights_in_force_and_writes_nothing_at_rest(
    kube: KubeAPI, shared: Path
) -> None:
    await IstioRouter(kube).reconcile(route(ISTIO_SERVICE))
    first = IstioRouter(kube)
    await first.reconcile(route(ISTIO_SERVICE))
    await first.set_routes(KEY, Routes(70, 30))
    version = (await vs(kube))["metadata"]["resourceVersion"]
    restarted = IstioRouter(kube)  # nothing in memory: the split comes from the cluster
    await restarted.reconcile(route(ISTIO_SERVICE))
    assert (await vs(kube))["metadata"]["resourceVersion"] == version
    assert await restarted.get_routes(KEY) == Routes(70, 30)


async def test_istio_ab_test_sends_header_and_cookie_matches_to_the_canary_first(
    kube: KubeAPI, shared: Path
) -> None:
    service = ISTIO_SERVICE | {"match": [{"uri": {"prefix": "/api"}}]}
    router = IstioRouter(kube)
    await router.reconcile(route(service))
    routes = Routes(100, 0, match=(HEADER, COOKIE))
    await router.set_routes(KEY, routes)
    http = (await vs(kube))["spec"]["http"]
    assert [r["name"] for r in http] == ["ab", "default"]
    assert http[0]["match"] == [
        {"uri": {"prefix": "/api"}, "headers": {"x-canary": {"exact": "insider"}}},
        {"uri": {"prefix": "/api"}, "headers": {"cookie": {"regex": "^(.*?;)?(type=insider)(;.*)?$"}}},
    ]
    assert http[0]["route"] == [{"destination": {"host": "podinfo-canary"}, "weight": 100}]
    assert http[1]["match"] == [{"uri": {"prefix": "/api"}}]
    assert istio_weights(await vs(kube)) == {"podinfo-primary": 100, "podinfo-canary": 0}
    assert await router.get_routes(KEY) == routes
    fresh = IstioRouter(kube)
    await fresh.reconcile(route(service))
    assert (await fresh.get_routes(KEY)).match == (HEADER, COOKIE)
    await assert_all_valid(kube, VIRTUAL_SERVICE, DESTINATION_RULE)


async def test_istio_ab_conditions_read_back_across_several_service_matches(
    kube: KubeAPI, shared: Path
) -> None:
    service = ISTIO_SERVICE | {
        "match": [{"uri": {"prefix": "/api"}}, {"uri": {"exact": "/health"}, "port": 80}]
    }
    router = IstioRouter(kube)
    await router.reconcile(route(service))
    await router.set_routes(KEY, Routes(100, 0, match=(HEADER, QUERY)))
    assert len(http_named(await vs(kube), "ab")["match"]) == 4  # each condition on each service match
    fresh = IstioRouter(kube)
    await fresh.reconcile(route(service))
    assert (await fresh.get_routes(KEY)).match == (HEADER, QUERY)
    await assert_all_valid(kube, VIRTUAL_SERVICE)


class RefusingKube(MemoryKube):
    """An API server that refuses the next write with 409, as one does when another writer got there first."""

    refuse = False

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        if self.refuse:
            self.refuse = False
            raise Conflict(
                409, "patch", VIRTUAL_SERVICE, "the object has been modified", obj["metadata"]["name"]
            )
        return await super().apply(obj, force=force)


@pytest.mark.parametrize("make", [IstioRouter, GatewayAPIRouter])
async def test_a_refused_shift_leaves_the_previous_split_whole(
    make: type[IstioRouter] | type[GatewayAPIRouter],
) -> None:
    kube = RefusingKube()
    router = make(kube)
    await router.reconcile(route(GW_SERVICE if make is GatewayAPIRouter else ISTIO_SERVICE))
    await router.set_routes(KEY, Routes(80, 20))
    kube.refuse = True
    with pytest.raises(RouterError, match="409"):
        await router.set_routes(KEY, Routes(50, 50, mirror=True))
    assert await router.get_routes(KEY) == Routes(80, 20)
    await router.set_routes(KEY, Routes(50, 50))
    assert await router.get_routes(KEY) == Routes(50, 50)


async def test_istio_mirror_sets_a_mirror_percentage(kube: KubeAPI, shared: Path) -> None:
    router = IstioRouter(kube)
    await router.reconcile(route(ISTIO_SERVICE))
    await router.set_routes(KEY, Routes(100, 0, mirror=True, mirror_weight=40))
    default = http_named(await vs(kube), "default")
    assert default["mirror"] == {"host": "podinfo-canary"}
    assert default["mirrorPercentage"] == {"value": 40.0}
    fresh = IstioRouter(kube)
    await fresh.reconcile(route(ISTIO_SERVICE))
    assert await fresh.get_routes(KEY) == Routes(100, 0, mirror=True, mirror_weight=40)
    await fresh.set_routes(KEY, Routes(100, 0))
    assert "mirror" not in http_named(await vs(kube), "default")
    await assert_all_valid(kube, VIRTUAL_SERVICE)


async def test_istio_session_affinity_pins_cookie_holders_to_the_canary(kube: KubeAPI, shared: Path) -> None:
    router = IstioRouter(kube)
    await router.reconcile(route(ISTIO_SERVICE, primary_cookie="primary-cookie"))
    await router.set_routes(KEY, Routes(90, 10, sticky=STICKY))
    obj = await vs(kube)
    assert [r["name"] for r in obj["spec"]["http"]] == ["sticky", "sticky-primary", "default"]
    sticky = http_named(obj, "sticky")
    assert sticky["route"] == [{"destination": {"host": "podinfo-canary"}, "weight": 100}]
    regex = sticky["match"][0]["headers"]["cookie"]["regex"]
    assert re.fullmatch(regex, "a=1; flagger-cookie=Xy12abCD; b=2")
    assert re.fullmatch(regex, "flagger-cookie=Xy12abCD")
    assert not re.fullmatch(regex, "flagger-cookie=Xy12abCDE")
    assert http_named(obj, "sticky-primary")["route"][0]["destination"]["host"] == "podinfo-primary"
    canary_dest = http_named(obj, "default")["route"][1]
    assert canary_dest["headers"]["response"]["add"]["Set-Cookie"] == "flagger-cookie=Xy12abCD; Max-Age=3600"
    primary_dest = http_named(obj, "default")["route"][0]
    assert primary_dest["headers"]["response"]["add"]["Set-Cookie"].startswith("primary-cookie=")
    await assert_all_valid(kube, VIRTUAL_SERVICE)
    fresh = IstioRouter(kube)
    await fresh.reconcile(route(ISTIO_SERVICE, primary_cookie="primary-cookie"))
    assert await fresh.get_routes(KEY) == Routes(90, 10, sticky=STICKY)


async def test_istio_carries_the_service_fields(kube: KubeAPI, shared: Path) -> None:
    service = ISTIO_SERVICE | {
        "retries": {"attempts": 3, "perTryTimeout": "1s", "retryOn": "gateway-error,connect-failure"},
        "timeout": "30s",
        "headers": {"request": {"add": {"x-a": "1"}}, "response": {"remove": ["x-powered-by"]}},
        "rewrite": {"uri": "/v2", "authority": "api.example.com"},
        "corsPolicy": {"allowOrigin": ["https://a.example"], "allowMethods": ["GET"], "maxAge": "24h"},
        "match": [{"uri": {"prefix": "/"}}],
        "apex": {"labels": {"team": "web"}, "annotations": {"owner": "me"}},
    }
    router = IstioRouter(kube)
    await router.reconcile(route(service))
    obj = await vs(kube)
    default = http_named(obj, "default")
    assert default["retries"] == {
        "attempts": 3,
        "perTryTimeout": "1s",
        "retryOn": "gateway-error,connect-failure",
    }
    assert default["timeout"] == "30s"
    assert default["headers"] == {"request": {"add": {"x-a": "1"}}, "response": {"remove": ["x-powered-by"]}}
    assert default["rewrite"] == {"uri": "/v2", "authority": "api.example.com"}
    assert default["corsPolicy"]["allowOrigin"] == ["https://a.example"]
    assert default["match"] == [{"uri": {"prefix": "/"}}]
    assert obj["metadata"]["labels"]["team"] == "web"
    assert obj["metadata"]["annotations"]["owner"] == "me"
    await assert_all_valid(kube, VIRTUAL_SERVICE, DESTINATION_RULE)


async def test_istio_full_path_rewrite_uses_a_regex_rewrite(kube: KubeAPI, shared: Path) -> None:
    router = IstioRouter(kube)
    await router.reconcile(route(ISTIO_SERVICE | {"rewrite": {"uri": "/v2/api", "type": "ReplaceFullPath"}}))
    assert http_named(await vs(kube), "default")["rewrite"] == {
        "uriRegexRewrite": {"match": "^.*$", "rewrite": "/v2/api"}
    }
    await assert_all_valid(kube, VIRTUAL_SERVICE)


async def test_istio_delegate_virtual_service_has_no_hosts_or_gateways(kube: KubeAPI, shared: Path) -> None:
    router = IstioRouter(kube)
    await router.reconcile(route({"port": 9898, "delegation": True, "portDiscovery": True}))
    obj = await vs(kube)
    assert obj["spec"]["hosts"] == [] and obj["spec"]["gateways"] == []
    assert istio_weights(obj) == {"podinfo-primary": 100, "podinfo-canary": 0}
    assert http_named(obj, "default")["route"][0]["destination"]["port"] == {"number": 9898}
    await assert_all_valid(kube, VIRTUAL_SERVICE)
    with pytest.raises(RouterError, match="delegation"):
        await router.reconcile(route({"port": 9898, "delegation": True, "hosts": ["a.example.com"]}))


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"gatewayRefs": [{"name": "gw"}]}, "service.gatewayRefs"),
        ({"backendTimeout": "2s"}, "service.backendTimeout"),
        ({"mirror": [{"backendRef": {"name": "other", "port": 80}}]}, "service.mirror"),
        ({"appProtocol": "TCP", "timeout": "5s"}, "service.timeout"),
        ({"appProtocol": "TCP", "match": [{"uri": {"prefix": "/"}}]}, "service.match[0].uri"),
        ({"rewrite": {"uri": "/", "type": "Other"}}, "service.rewrite.type"),
    ],
)
async def test_istio_refuses_what_it_cannot_express_by_name(
    kube: KubeAPI, extra: dict[str, Any], field: str
) -> None:
    with pytest.raises(RouterError, match=re.escape(field) + ".*istio router"):
        await IstioRouter(kube).reconcile(route(ISTIO_SERVICE | extra))
    assert await objects(kube, VIRTUAL_SERVICE, DESTINATION_RULE) == []


async def test_istio_tcp_service_splits_a_tcp_route(kube: KubeAPI, shared: Path) -> None:
    service = {"port": 7070, "appProtocol": "TCP", "match": [{"port": 7070}]}
    router = IstioRouter(kube)
    await router.reconcile(route(service))
    await router.set_routes(KEY, Routes(75, 25))
    spec = (await vs(kube))["spec"]
    assert "http" not in spec
    assert spec["tcp"] == [
        {
            "match": [{"port": 7070}],
            "route": [
                {"destination": {"host": "podinfo-primary", "port": {"number": 7070}}, "weight": 75},
                {"destination": {"host": "podinfo-canary", "port": {"number": 7070}}, "weight": 25},
            ],
        }
    ]
    fresh = IstioRouter(kube)
    await fresh.reconcile(route(service))
    assert await fresh.get_routes(KEY) == Routes(75, 25)
    await assert_all_valid(kube, VIRTUAL_SERVICE)
    with pytest.raises(RouterError, match=r"analysis\.match is not supported .* TCP"):
        await router.set_routes(KEY, Routes(100, 0, match=(HEADER,)))
    assert await router.get_routes(KEY) == Routes(75, 25)  # the refused split changed nothing


async def test_istio_without_its_crds_names_the_crd() -> None:
    router = IstioRouter(MemoryKube(missing=(VIRTUAL_SERVICE,)))
    with pytest.raises(RouterError, match=r"VirtualService CRD \(virtualservices\.networking\.istio\.io"):
        await router.reconcile(route(ISTIO_SERVICE))
    router = IstioRouter(MemoryKube(missing=(VIRTUAL_SERVICE, DESTINATION_RULE)))
    with pytest.raises(RouterError, match=r"CRD .*networking\.istio\.io.* is not installed"):
        await router.reconcile(route(ISTIO_SERVICE))


FOREIGN_VS: Obj = {
    "apiVersion": "networking.istio.io/v1beta1",
    "kind": "VirtualService",
    "metadata": {
        "name": "podinfo",
        "namespace": NS,
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": "podinfo"},
    },
    "spec": {
        "hosts": ["podinfo"],
        "tcp": [{"route": [{"destination": {"host": "podinfo"}}]}],
        "http": [{"route": [{"destination": {"host": "podinfo"}, "weight": 100}]}],
    },
}


async def test_istio_takes_over_a_foreign_virtual_service_and_reverts_it_on_deletion(
    kube: KubeAPI, shared: Path
) -> None:
    await kube.apply(FOREIGN_VS)
    router = IstioRouter(kube)
    await router.reconcile(route(ISTIO_SERVICE, revert=True))
    obj = await vs(kube)
    assert "tcp" not in obj["spec"]  # the whole spec is ours: no foreign route shadows the split
    assert istio_weights(obj) == {"podinfo-primary": 100, "podinfo-canary": 0}
    assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rheostat"
    assert obj["metadata"]["annotations"]["meta.helm.sh/release-name"] == "podinfo"
    await router.set_routes(KEY, Routes(60, 40))
    await assert_all_valid(kube, VIRTUAL_SERVICE, DESTINATION_RULE)
    await router.finalize(KEY)
    back = await vs(kube)
    assert back["spec"] == FOREIGN_VS["spec"]
    assert back["metadata"]["labels"] == FOREIGN_VS["metadata"]["labels"]
    assert back["metadata"]["annotations"] == FOREIGN_VS["metadata"]["annotations"]
    assert await objects(kube, DESTINATION_RULE) == []  # made by the router: deleted


async def test_istio_finalize_deletes_what_it_made_and_leaves_a_taken_over_one_without_revert(
    kube: KubeAPI,
) -> None:
    router = IstioRouter(kube)
    await router.reconcile(route(ISTIO_SERVICE))
    await router.finalize(KEY)
    assert await objects(kube, VIRTUAL_SERVICE, DESTINATION_RULE) == []
    await kube.apply(FOREIGN_VS)
    await router.reconcile(route(ISTIO_SERVICE))
    await router.finalize(KEY)
    left = await vs(kube)
    assert istio_weights(left) == {"podinfo-primary": 100, "podinfo-canary": 0}  # still serving the primary


async def test_istio_refuses_a_virtual_service_of_another_canary(kube: KubeAPI) -> None:
    await IstioRouter(kube).reconcile(route(ISTIO_SERVICE | {"name": "podinfo"}, key="test/other"))
    with pytest.raises(RouterError, match="belongs to canary test/other"):
        await IstioRouter(kube).reconcile(route(ISTIO_SERVICE))


# -- Gateway API -------------------------------------------------------------------------------------------


async def test_gatewayapi_weighted_canary_shifts_in_one_write_and_reads_back(
    kube: KubeAPI, shared: Path
) -> None:
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE))
    assert await router.get_routes(KEY) == Routes(100, 0)
    for primary, canary in ((100, 0), (80, 20), (0, 100), (100, 0)):
        before = (await hr(kube))["metadata"]["resourceVersion"]
        await router.set_routes(KEY, Routes(primary, canary))
        after = await hr(kube)
        assert int(after["metadata"]["resourceVersion"]) <= int(before) + 1
        assert gw_weights(after) == {"podinfo-primary": primary, "podinfo-canary": canary}
        assert await router.get_routes(KEY) == Routes(primary, canary)
        assert await assert_all_valid(kube, HTTPROUTE) == 1
    spec = (await hr(kube))["spec"]
    assert spec["parentRefs"] == [{"name": "gateway", "namespace": "istio-ingress"}]
    assert spec["hostnames"] == ["www.example.com"]
    assert rule_named(await hr(kube), "default")["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/"}}
    ]
    await router.set_routes(KEY, Routes(70, 30))
    version = (await hr(kube))["metadata"]["resourceVersion"]
    restarted = GatewayAPIRouter(kube)  # nothing in memory: the split comes from the cluster
    await restarted.reconcile(route(GW_SERVICE))
    assert (await hr(kube))["metadata"]["resourceVersion"] == version
    assert await restarted.get_routes(KEY) == Routes(70, 30)


async def test_gatewayapi_ab_test_matches_headers_cookies_and_query(kube: KubeAPI, shared: Path) -> None:
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE))
    routes = Routes(100, 0, match=(HEADER, COOKIE, QUERY))
    await router.set_routes(KEY, routes)
    obj = await hr(kube)
    assert [r["name"] for r in obj["spec"]["rules"]] == ["ab", "default"]
    ab = rule_named(obj, "ab")
    assert ab["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [{"name": "x-canary", "type": "Exact", "value": "insider"}],
        },
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "headers": [
                {"name": "cookie", "type": "RegularExpression", "value": "^(.*?;)?(type=insider)(;.*)?$"}
            ],
        },
        {
            "path": {"type": "PathPrefix", "value": "/"},
            "queryParams": [{"name": "canary", "type": "Exact", "value": "yes"}],
        },
    ]
    assert [b["name"] for b in ab["backendRefs"]] == ["podinfo-canary"]
    await assert_all_valid(kube, HTTPROUTE)
    fresh = GatewayAPIRouter(kube)
    await fresh.reconcile(route(GW_SERVICE))
    assert await fresh.get_routes(KEY) == routes


async def test_gatewayapi_mirror_is_a_request_mirror_filter_with_percent(kube: KubeAPI, shared: Path) -> None:
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE))
    await router.set_routes(KEY, Routes(100, 0, mirror=True, mirror_weight=25))
    (mirror,) = rule_named(await hr(kube), "default")["filters"]
    assert mirror == {
        "type": "RequestMirror",
        "requestMirror": {
            "backendRef": {"group": "", "kind": "Service", "name": "podinfo-canary", "port": 9898},
            "percent": 25,
        },
    }
    await assert_all_valid(kube, HTTPROUTE)
    fresh = GatewayAPIRouter(kube)
    await fresh.reconcile(route(GW_SERVICE))
    assert await fresh.get_routes(KEY) == Routes(100, 0, mirror=True, mirror_weight=25)


async def test_gatewayapi_session_affinity_pins_cookie_holders_to_the_canary(
    kube: KubeAPI, shared: Path
) -> None:
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE, primary_cookie="primary-cookie"))
    await router.set_routes(KEY, Routes(90, 10, sticky=STICKY))
    obj = await hr(kube)
    assert [r["name"] for r in obj["spec"]["rules"]] == ["sticky", "sticky-primary", "default"]
    (header,) = rule_named(obj, "sticky")["matches"][0]["headers"]
    assert header["name"] == "Cookie" and header["type"] == "RegularExpression"
    assert re.fullmatch(header["value"], "x=1; flagger-cookie=Xy12abCD")
    assert [b["name"] for b in rule_named(obj, "sticky")["backendRefs"]] == ["podinfo-canary"]
    canary = rule_named(obj, "default")["backendRefs"][1]
    assert canary["filters"] == [
        {
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": {
                "add": [{"name": "Set-Cookie", "value": "flagger-cookie=Xy12abCD; Max-Age=3600"}]
            },
        }
    ]
    await assert_all_valid(kube, HTTPROUTE)
    fresh = GatewayAPIRouter(kube)
    await fresh.reconcile(route(GW_SERVICE, primary_cookie="primary-cookie"))
    assert await fresh.get_routes(KEY) == Routes(90, 10, sticky=STICKY)


async def test_gatewayapi_carries_headers_rewrite_timeouts_and_cors(kube: KubeAPI, shared: Path) -> None:
    service = GW_SERVICE | {
        "timeout": "5s",
        "backendTimeout": "2s",
        "headers": {
            "request": {"add": {"x-custom-header": "custom-value"}, "remove": ["x-debug-header"]},
            "response": {"set": {"cache-control": "no-cache"}},
        },
        "rewrite": {"uri": "/v2/api", "authority": "api.example.com"},
        "corsPolicy": {"allowOrigin": ["https://foo.example"], "allowMethods": ["GET"], "maxAge": "24h"},
        "match": [{"uri": {"prefix": "/api"}, "headers": {"x-region": {"exact": "eu"}}}],
    }
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(service))
    default = rule_named(await hr(kube), "default")
    assert default["timeouts"] == {"request": "5s", "backendRequest": "2s"}
    filters = {f["type"]: f for f in default["filters"]}
    assert filters["RequestHeaderModifier"]["requestHeaderModifier"] == {
        "add": [{"name": "x-custom-header", "value": "custom-value"}],
        "remove": ["x-debug-header"],
    }
    assert filters["ResponseHeaderModifier"]["responseHeaderModifier"] == {
        "set": [{"name": "cache-control", "value": "no-cache"}]
    }
    assert filters["URLRewrite"]["urlRewrite"] == {
        "hostname": "api.example.com",
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2/api"},
    }
    assert filters["CORS"]["cors"] == {
        "allowOrigins": ["https://foo.example"],
        "allowMethods": ["GET"],
        "maxAge": 86400,
    }
    assert default["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/api"},
            "headers": [{"name": "x-region", "type": "Exact", "value": "eu"}],
        }
    ]
    await assert_all_valid(kube, HTTPROUTE)


@pytest.mark.parametrize(
    ("service", "field"),
    [
        (GW_SERVICE | {"retries": {"attempts": 2}}, "service.retries"),
        (GW_SERVICE | {"trafficPolicy": {"tls": {"mode": "DISABLE"}}}, "service.trafficPolicy"),
        (GW_SERVICE | {"gateways": ["mesh"]}, "service.gateways"),
        (
            GW_SERVICE | {"corsPolicy": {"allowOrigins": [{"exact": "https://a"}]}},
            "service.corsPolicy.allowOrigins",
        ),
        (GW_SERVICE | {"match": [{"authority": {"exact": "a"}}]}, "service.match[0].authority"),
        ({"port": 9898}, "service.gatewayRefs"),
    ],
)
async def test_gatewayapi_refuses_what_it_cannot_express_by_name(
    kube: KubeAPI, service: dict[str, Any], field: str
) -> None:
    with pytest.raises(RouterError, match=re.escape(field) + ".*gatewayapi router"):
        await GatewayAPIRouter(kube).reconcile(route(service))
    assert await objects(kube, HTTPROUTE) == []


async def test_gatewayapi_without_its_crd_names_the_crd() -> None:
    router = GatewayAPIRouter(MemoryKube(missing=(HTTPROUTE,)))
    with pytest.raises(
        RouterError, match=r"HTTPRoute CRD \(httproutes\.gateway\.networking\.k8s\.io/v1\) is not installed"
    ):
        await router.reconcile(route(GW_SERVICE))


async def test_gatewayapi_reports_a_route_its_gateway_rejected(shared: Path) -> None:
    kube = MemoryKube()
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE))
    generation = (await hr(kube))["metadata"]["generation"]
    parent = {
        "parentRef": {"name": "gateway", "namespace": "istio-ingress"},
        "controllerName": "istio.io/gateway-controller",
    }
    rejected = {
        "type": "Accepted",
        "status": "False",
        "reason": "NotAllowedByListeners",
        "observedGeneration": generation,
    }
    kube.set_status(HTTPROUTE, NS, "podinfo", {"parents": [parent | {"conditions": [rejected]}]})
    with pytest.raises(RouterError, match="parent gateway did not accept it: NotAllowedByListeners"):
        await router.get_routes(KEY)
    accepted = rejected | {"status": "True", "reason": "Accepted"}
    kube.set_status(HTTPROUTE, NS, "podinfo", {"parents": [parent | {"conditions": [accepted]}]})
    assert await router.get_routes(KEY) == Routes(100, 0)


FOREIGN_HR: Obj = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "podinfo", "namespace": NS, "labels": {"app": "podinfo"}},
    "spec": {
        "parentRefs": [{"name": "gateway", "namespace": "istio-ingress"}],
        "rules": [{"backendRefs": [{"name": "podinfo", "port": 9898}]}],
    },
}


async def test_gatewayapi_takes_over_a_foreign_route_and_reverts_it_on_deletion(
    kube: KubeAPI, shared: Path
) -> None:
    await kube.apply(FOREIGN_HR)
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE, revert=True))
    assert gw_weights(await hr(kube)) == {"podinfo-primary": 100, "podinfo-canary": 0}
    await router.set_routes(KEY, Routes(50, 50))
    await assert_all_valid(kube, HTTPROUTE)
    await router.finalize(KEY)
    back = await hr(kube)
    assert back["spec"] == FOREIGN_HR["spec"]
    assert back["metadata"]["labels"] == {"app": "podinfo"}
    assert "rheostat.dev/canary" not in (back["metadata"].get("annotations") or {})


async def test_gatewayapi_finalize_deletes_the_route_it_made(kube: KubeAPI) -> None:
    router = GatewayAPIRouter(kube)
    await router.reconcile(route(GW_SERVICE))
    await router.finalize(KEY)
    assert await objects(kube, HTTPROUTE) == []


# -- Flagger's own Canaries -------------------------------------------------------------------------------


def canary_blocks(path: Path) -> list[dict[str, Any]]:
    """The Canary documents of a Markdown tutorial's YAML blocks."""
    out = []
    for block in re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S):
        for doc in yaml.safe_load_all(block):
            if isinstance(doc, dict) and doc.get("kind") == "Canary":
                out.append(doc)
    return out


ROUTING = ("port", "name", "hosts", "gateways", "gatewayRefs", "trafficPolicy")  # what a fragment keeps


def full_canaries(docs: list[dict[str, Any]]) -> list[Canary]:
    """Whole Canaries as they are; fragments (a `service` or `analysis` alone) laid over the first whole one."""
    whole = [d for d in docs if "targetRef" in d.get("spec", {})]
    assert whole
    out = []
    for doc in docs:
        if doc not in whole:
            spec = dict(whole[0]["spec"], **doc["spec"])  # a fragment's analysis replaces the whole one's
            routing = {k: v for k, v in whole[0]["spec"]["service"].items() if k in ROUTING}
            spec["service"] = dict(routing, **doc["spec"].get("service", {}))
            doc = dict(whole[0], spec=spec)
        parsed = parse_object(doc)
        assert isinstance(parsed, Canary)
        out.append(parsed)
    return out


def steps_of(canary: Canary) -> list[Routes]:
    a = canary.spec.the_analysis
    sticky = (
        StickyCookie(a.sessionAffinity.cookieName, "Ab12", a.sessionAffinity.maxAge)
        if a.sessionAffinity
        else None
    )
    if a.match:
        return [Routes(100, 0, match=tuple(a.match)), Routes(0, 100), Routes(100, 0)]
    if a.mirror:
        return [
            Routes(100, 0, mirror=True, mirror_weight=a.mirrorWeight or 100),
            Routes(0, 100),
            Routes(100, 0),
        ]
    step = a.stepWeight or 10
    return [
        Routes(100 - step, step, sticky=sticky),
        Routes(100 - a.max_weight, a.max_weight, sticky=sticky),
        Routes(100, 0),
    ]


async def drive(router: Router, api: KubeAPI, canary: Canary, *kinds: Kind) -> None:
    service_route = route_of(canary)
    await router.reconcile(service_route)
    await assert_all_valid(api, *kinds)
    for step in steps_of(canary):
        await router.set_routes(service_route.key, step)
        assert await router.get_routes(service_route.key) == step
        assert await assert_all_valid(api, *kinds) >= 1
    await router.finalize(service_route.key)
    assert await objects(api, *kinds) == []


def istio_canaries(shared: Path) -> list[Canary]:
    flagger = shared / "testdata" / "flagger"
    docs = [
        d
        for name in ("istio-canary.yaml", "istio-abtest.yaml")
        for d in yaml.safe_load_all((flagger / "examples" / name).read_text())
    ]
    docs += [d for md in sorted((flagger / "tutorials").glob("istio-*.md")) for d in canary_blocks(md)]
    return full_canaries([d for d in docs if isinstance(d, dict) and d.get("kind") == "Canary"])


async def test_flaggers_istio_canaries_produce_valid_objects(shared: Path) -> None:
    canaries = istio_canaries(shared)
    assert len(canaries) >= 7
    assert any(c.spec.the_analysis.match for c in canaries)
    assert any(c.spec.the_analysis.sessionAffinity for c in canaries)
    assert any(c.spec.the_analysis.mirror for c in canaries)
    for canary in canaries:
        kube = MemoryKube()
        await drive(IstioRouter(kube), kube, canary, VIRTUAL_SERVICE, DESTINATION_RULE)


async def test_flaggers_gateway_api_canaries_produce_valid_objects(shared: Path) -> None:
    md = shared / "testdata" / "flagger" / "tutorials" / "gatewayapi-progressive-delivery.md"
    canaries = full_canaries(canary_blocks(md))
    assert len(canaries) == 9
    fields = {f for c in canaries for f in c.spec.the_service.model_fields_set}
    assert {"headers", "rewrite", "corsPolicy", "timeout", "backendTimeout"} <= fields
    for canary in canaries:
        kube = MemoryKube()
        await drive(GatewayAPIRouter(kube), kube, canary, HTTPROUTE)
