"""The Canary's `spec.service` on the Envoy router, against one real Envoy and echoing backends.

Each honoured field shows in what a request meets on its way through Envoy (headers, paths, CORS answers,
404s, retries, cookies, load balancing); each refused field is a RouterError naming it, with the previous
routes still serving.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import pytest_asyncio

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, Service, StringMatch
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, StickyCookie, Upstream
from rheostat.plugins.routers.envoy import EnvoyRouter, config
from rheostat.plugins.routers.envoy import service as service_fields
from tests.servers import free_port, serving

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.e2e]

KEY = ObjectKey("shop/web")


@dataclass
class Echo:
    """A backend that answers every method with what it received, as JSON, and counts requests."""

    name: str
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.seen)


def _handler(echo: Echo) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            request = {
                "backend": echo.name,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): ", ".join(self.headers.get_all(k) or []) for k in self.headers},
            }
            with echo.lock:
                echo.seen.append(request)
            query = parse_qs(urlsplit(self.path).query)
            if "delay" in query:
                time.sleep(float(query["delay"][0]) / 1000)
            body = json.dumps(request).encode()
            self.send_response(int(query.get("status", ["200"])[0]))
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-backend", echo.name)
            self.send_header("x-from-app", "internal")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_HEAD = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture(scope="module")
def backends() -> Iterator[dict[str, Echo]]:
    echoes = {name: Echo(name) for name in ("primary", "primary-2", "canary")}
    servers = []
    for echo in echoes.values():
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(echo))
        server.daemon_threads = True
        echo.port = server.server_address[1]
        servers.append(serving(server, f"echo-{echo.name}"))
    for s in servers:
        s.__enter__()
    try:
        yield echoes
    finally:
        for s in servers:
            s.__exit__(None, None, None)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def router(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EnvoyRouter]:
    r = EnvoyRouter(tmp_path_factory.mktemp("envoy") / "data")
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest_asyncio.fixture(loop_scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as c:
        yield c


def route(
    backends: dict[str, Echo], port: int, service: dict[str, Any] | None = None, **kwargs: Any
) -> ServiceRoute:
    spec = Service.model_validate({"port": port, **(service or {})})
    primaries = kwargs.pop("primaries", ("primary",))
    return ServiceRoute(
        key=KEY,
        port=port,
        primary=tuple(Upstream("127.0.0.1", backends[name].port) for name in primaries),
        canary=(Upstream("127.0.0.1", backends["canary"].port),),
        service=spec,
        retries=spec.retries,
        **kwargs,
    )


async def apply(router: EnvoyRouter, service_route: ServiceRoute, routes: Routes | None = None) -> None:
    await router.reconcile(service_route)
    await router.set_routes(service_route.key, routes or Routes())


async def echo(client: httpx.AsyncClient, port: int, path: str = "/", **kwargs: Any) -> dict[str, Any]:
    response = await client.request(kwargs.pop("method", "GET"), f"http://127.0.0.1:{port}{path}", **kwargs)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    answer["response"] = response
    return answer


async def status(client: httpx.AsyncClient, port: int, path: str = "/", **kwargs: Any) -> int:
    method = kwargs.pop("method", "GET")
    return (await client.request(method, f"http://127.0.0.1:{port}{path}", **kwargs)).status_code


async def live_cluster(router: EnvoyRouter, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(router.admin_socket))) as admin:
        dump = (
            await admin.get("http://envoy/config_dump", params={"resource": "dynamic_active_clusters"})
        ).json()
    for entry in dump["configs"]:
        if entry["cluster"]["name"] == name:
            cluster: dict[str, Any] = entry["cluster"]
            return cluster
    raise AssertionError(f"no cluster {name} in Envoy")


# -- honoured fields ------------------------------------------------------------------------------------


async def test_request_and_response_headers_are_changed_on_the_way(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    headers = {
        "request": {"add": {"x-added": "yes"}, "set": {"x-env": "prod"}, "remove": ["x-secret"]},
        "response": {
            "add": {"x-served-by": "rheostat"},
            "set": {"x-backend": "hidden"},
            "remove": ["x-from-app"],
        },
    }
    await apply(router, route(backends, port, {"headers": headers}))
    answer = await echo(client, port, headers={"x-env": "dev", "x-secret": "s3cr3t"})
    seen = answer["headers"]
    assert seen["x-added"] == "yes"
    assert seen["x-env"] == "prod"  # set replaces what the client sent
    assert "x-secret" not in seen
    response: httpx.Response = answer["response"]
    assert response.headers["x-served-by"] == "rheostat"
    assert response.headers["x-backend"] == "hidden"
    assert "x-from-app" not in response.headers
    # `add` appends to a header the client already sent.
    answer = await echo(client, port, headers={"x-added": "client"})
    assert answer["headers"]["x-added"] == "client, yes"
    # The group hosts reach a group directly, like Flagger's <name>-canary Service: no VirtualService rules.
    direct = await echo(client, port, headers={"Host": "web-canary", "x-secret": "s"})
    assert direct["backend"] == "canary" and "x-added" not in direct["headers"]
    assert direct["headers"]["x-secret"] == "s"


async def test_rewrite_replaces_the_matched_prefix_and_the_authority(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    service = {
        "match": [{"uri": {"prefix": "/api/"}}],
        "rewrite": {"uri": "/v2/", "authority": "internal.example"},
    }
    await apply(router, route(backends, port, service))
    answer = await echo(client, port, "/api/items?q=1")
    assert answer["path"] == "/v2/items?q=1"
    assert answer["headers"]["host"] == "internal.example"

    await apply(router, route(backends, port, {"rewrite": {"uri": "/v2/"}}))  # no match: the prefix is "/"
    assert (await echo(client, port, "/items"))["path"] == "/v2/items"

    exact = {"match": [{"uri": {"exact": "/old"}}], "rewrite": {"uri": "/new"}}
    await apply(router, route(backends, port, exact))
    assert (await echo(client, port, "/old?x=1"))["path"] == "/new?x=1"

    full = {"rewrite": {"uri": "/fixed", "type": "ReplaceFullPath"}}
    await apply(router, route(backends, port, full))
    assert (await echo(client, port, "/any/thing?x=1"))["path"] == "/fixed?x=1"


async def test_cors_preflight_is_answered_by_envoy(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    cors = {
        "allowOrigins": [{"exact": "https://shop.example"}, {"regex": r"https://.*\.partner\.example"}],
        "allowOrigin": ["https://legacy.example"],
        "allowMethods": ["GET", "POST"],
        "allowHeaders": ["x-token"],
        "exposeHeaders": ["x-backend"],
        "maxAge": "1h",
        "allowCredentials": True,
    }
    await apply(router, route(backends, port, {"corsPolicy": cors}))
    before = backends["primary"].count
    for origin in ("https://shop.example", "https://a.partner.example", "https://legacy.example"):
        preflight = await client.options(
            f"http://127.0.0.1:{port}/cart",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == origin
        assert preflight.headers["access-control-allow-methods"] == "GET,POST"
        assert preflight.headers["access-control-allow-headers"] == "x-token"
        assert preflight.headers["access-control-max-age"] == "3600"
        assert preflight.headers["access-control-allow-credentials"] == "true"
    assert backends["primary"].count == before  # Envoy answered the preflights itself
    stranger = await client.options(
        f"http://127.0.0.1:{port}/cart",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in stranger.headers
    simple = await echo(client, port, "/cart", headers={"Origin": "https://shop.example"})
    assert simple["response"].headers["access-control-allow-origin"] == "https://shop.example"
    assert simple["response"].headers["access-control-expose-headers"] == "x-backend"


async def test_service_match_answers_404_to_requests_that_match_no_entry(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    match = [
        {"uri": {"prefix": "/api"}, "method": {"exact": "GET"}},
        {"uri": {"exact": "/Health"}, "ignoreUriCase": True},
        {"authority": {"exact": "shop.example"}, "withoutHeaders": {"x-debug": {"exact": "1"}}},
        {"uri": {"suffix": ".json"}, "queryParams": {"v": {"exact": "2"}}, "name": "data"},
    ]
    await apply(router, route(backends, port, {"match": match}))
    assert await status(client, port, "/api/items") == 200
    assert await status(client, port, "/api/items", method="POST") == 404
    assert await status(client, port, "/health") == 200
    assert await status(client, port, "/HEALTH") == 200
    assert await status(client, port, "/other") == 404
    assert await status(client, port, "/other", headers={"Host": "shop.example"}) == 200
    assert await status(client, port, "/other", headers={"Host": "shop.example", "x-debug": "1"}) == 404
    assert await status(client, port, "/data.json", params={"v": "2"}) == 200
    assert await status(client, port, "/data.json", params={"v": "3"}) == 404
    assert await status(client, port, "/data.xml", params={"v": "2"}) == 404

    # An A/B rule applies within service.match: a matching request outside it is still a 404.
    ab = AnalysisMatch(headers={"x-canary": StringMatch(exact="insider")})
    await router.set_routes(KEY, Routes(match=(ab,)))
    assert (await echo(client, port, "/api/x", headers={"x-canary": "insider"}))["backend"] == "canary"
    assert (await echo(client, port, "/api/x"))["backend"] == "primary"
    assert await status(client, port, "/other", headers={"x-canary": "insider"}) == 404
    assert await router.get_routes(KEY) == Routes(match=(ab,))  # the rule reads back without service.match


async def test_timeout_and_retries_of_the_service(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    service = {"timeout": "300ms", "retries": {"attempts": 2, "retryOn": "5xx"}}
    await apply(router, route(backends, port, service, timeout_s=0.3))
    before = backends["primary"].count
    assert await status(client, port, "/", params={"status": "503"}, method="POST") == 503
    assert backends["primary"].count - before == 3  # the first try and two retries, for a POST too
    started = time.monotonic()
    assert await status(client, port, "/", params={"delay": "2000"}) == 504
    assert time.monotonic() - started < 1.5


async def test_primary_cookie_keeps_a_primary_client_on_the_primary_until_the_next_step(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    sticky = StickyCookie(name="canary-cookie", value="rev7", max_age=120)
    await apply(router, route(backends, port, primary_cookie="primary-cookie"), Routes(50, 50, sticky=sticky))
    cookies: dict[str, str] = {}
    for _ in range(40):
        answer = await echo(client, port)
        cookies[answer["backend"]] = answer["response"].headers.get("set-cookie", "")
        client.cookies.clear()
    assert cookies["primary"] == "primary-cookie=rev7-w50; Max-Age=120"
    assert cookies["canary"] == "canary-cookie=rev7; Max-Age=120"
    held = {"cookie": "theme=dark; primary-cookie=rev7-w50"}
    assert Counter([(await echo(client, port, headers=held))["backend"] for _ in range(40)]) == {
        "primary": 40
    }
    canary_held = {"cookie": "canary-cookie=rev7; primary-cookie=rev7-w50"}  # the canary's cookie wins
    assert {(await echo(client, port, headers=canary_held))["backend"] for _ in range(10)} == {"canary"}

    # The next step sets a new primary cookie: holders of the old one are split by the new weights.
    await router.set_routes(KEY, Routes(10, 90, sticky=sticky))
    seen = Counter([(await echo(client, port, headers=held))["backend"] for _ in range(60)])
    assert seen["canary"] > 30
    # With no canary traffic nobody needs a cookie.
    await router.set_routes(KEY, Routes(100, 0, sticky=sticky))
    answer = await echo(client, port)
    assert answer["backend"] == "primary" and "set-cookie" not in answer["response"].headers


async def test_least_request_outlier_detection_and_connection_pool_reach_the_clusters(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    policy = {
        "loadBalancer": {"simple": "LEAST_REQUEST", "warmupDurationSecs": "10s"},
        "outlierDetection": {
            "consecutive5xxErrors": 7,
            "consecutiveGatewayErrors": 0,
            "interval": "2s",
            "baseEjectionTime": "30s",
            "maxEjectionPercent": 100,
            "minHealthPercent": 25,
        },
        "connectionPool": {
            "http": {
                "http1MaxPendingRequests": 5,
                "http2MaxRequests": 7,
                "maxRetries": 3,
                "idleTimeout": "30s",
                "maxRequestsPerConnection": 10,
            }
        },
    }
    await apply(router, route(backends, port, {"trafficPolicy": policy}))
    assert (await echo(client, port))["backend"] == "primary"
    for group in ("primary", "canary"):  # a DestinationRule applies to both hosts
        cluster = await live_cluster(router, f"shop-web-{group}")
        assert cluster["lb_policy"] == "LEAST_REQUEST"
        assert cluster["least_request_lb_config"]["slow_start_config"]["slow_start_window"] == "10s"
        outlier = cluster["outlier_detection"]
        assert (outlier["consecutive_5xx"], outlier["enforcing_consecutive_5xx"]) == (7, 100)
        assert outlier["enforcing_consecutive_gateway_failure"] == 0
        assert (outlier["interval"], outlier["base_ejection_time"]) == ("2s", "30s")
        assert outlier["max_ejection_percent"] == 100
        assert cluster["common_lb_config"]["healthy_panic_threshold"]["value"] == 25
        threshold = cluster["circuit_breakers"]["thresholds"][0]
        assert (threshold["max_pending_requests"], threshold["max_requests"], threshold["max_retries"]) == (
            5,
            7,
            3,
        )
        options = cluster["typed_extension_protocol_options"][service_fields.HTTP_OPTIONS]
        assert options["common_http_protocol_options"] == {
            "idle_timeout": "30s",
            "max_requests_per_connection": 10,
        }


async def test_max_requests_overflow_is_a_503_from_envoy(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    policy = {"connectionPool": {"http": {"http2MaxRequests": 1}}}
    await apply(router, route(backends, port, {"trafficPolicy": policy}))
    slow = [client.get(f"http://127.0.0.1:{port}/", params={"delay": "500"}) for _ in range(2)]
    answers = await asyncio.gather(*slow)
    assert sorted(a.status_code for a in answers) == [200, 503]
    assert any(a.headers.get("x-envoy-overloaded") == "true" for a in answers)


async def test_consistent_hash_by_header_keeps_a_user_on_one_replica(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    policy = {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user", "minimumRingSize": 1024}}}
    await apply(router, route(backends, port, {"trafficPolicy": policy}, primaries=("primary", "primary-2")))
    cluster = await live_cluster(router, "shop-web-primary")
    assert cluster["lb_policy"] == "RING_HASH"
    assert cluster["ring_hash_lb_config"]["minimum_ring_size"] == "1024"
    homes = set()
    for user in range(20):
        seen = {(await echo(client, port, headers={"x-user": f"u{user}"}))["backend"] for _ in range(8)}
        assert len(seen) == 1, f"user u{user} went to {seen}"
        homes |= seen
    assert homes == {"primary", "primary-2"}
    # A cookie key with a ttl: Envoy gives a client with no cookie one, and the cookie keeps it on one replica.
    cookie = {
        "loadBalancer": {"consistentHash": {"httpCookie": {"name": "session", "ttl": "60s", "path": "/"}}}
    }
    await apply(router, route(backends, port, {"trafficPolicy": cookie}, primaries=("primary", "primary-2")))
    first = await echo(client, port)
    assert first["response"].headers["set-cookie"].startswith("session=")
    assert {(await echo(client, port))["backend"] for _ in range(8)} == {first["backend"]}  # the jar sends it
    client.cookies.clear()
    source_ip = {"loadBalancer": {"consistentHash": {"useSourceIp": True}}}
    await apply(
        router, route(backends, port, {"trafficPolicy": source_ip}, primaries=("primary", "primary-2"))
    )
    assert len({(await echo(client, port))["backend"] for _ in range(8)}) == 1


async def test_harmless_metadata_changes_nothing_envoy_runs(backends: dict[str, Echo], port: int) -> None:
    metadata = {
        "name": "web-apex",
        "portName": "http",
        "targetPort": 8080,
        "portDiscovery": True,
        "appProtocol": "http",
        "apex": {"labels": {"team": "shop"}},
        "primary": {"annotations": {"a": "b"}},
        "canary": {"labels": {"c": "d"}},
        "unmanagedMetadata": {"labels": ["x"]},
        "trafficPolicy": {"tls": {"mode": "DISABLE"}},
    }
    bare, dressed = route(backends, port), route(backends, port, metadata)
    service_fields.check(dressed)

    def rendered(r: ServiceRoute) -> Any:
        rds = config.route_config(r, Routes(), "v")["resources"][0]
        return rds["virtual_hosts"], config.clusters([r], "v")["resources"]

    assert rendered(bare) == rendered(dressed)


async def test_every_service_field_is_honoured_accepted_or_refused() -> None:
    sets = [service_fields.HONOURED, service_fields.HARMLESS, set(service_fields.REFUSED)]
    assert sorted(name for names in sets for name in names) == sorted(Service.model_fields)


# -- refused fields -------------------------------------------------------------------------------------

REFUSED: list[tuple[dict[str, Any], str]] = [
    ({"gateways": ["public-gateway.istio-system.svc.cluster.local"]}, "gateways"),
    ({"hosts": ["app.example.com"]}, "hosts"),
    ({"gatewayRefs": [{"name": "gw", "namespace": "istio-ingress"}]}, "gatewayRefs"),
    ({"delegation": True}, "delegation"),
    ({"meshName": "global"}, "meshName"),
    ({"backends": ["backend.example"]}, "backends"),
    ({"trafficDistribution": "PreferClose"}, "trafficDistribution"),
    ({"headless": True}, "headless"),
    ({"mirror": [{"backendRef": {"name": "shadow"}}]}, "mirror"),
    ({"backendTimeout": "1s"}, "backendTimeout"),
    ({"appProtocol": "tcp"}, "appProtocol"),
    ({"match": [{"uri": {"prefix": "/"}}, {"sourceLabels": {"app": "x"}}]}, r"match\[1\]\.sourceLabels"),
    ({"match": [{"gateways": ["mesh"]}]}, r"match\[0\]\.gateways"),
    ({"match": [{"port": 1}]}, r"match\[0\]\.port"),
    ({"headers": {"request": {"set": {"host": "x"}}}}, "headers.request: host"),
    ({"rewrite": {"uri": "/", "type": "Other"}}, "rewrite.type"),
    ({"trafficPolicy": {"tls": {"mode": "SIMPLE"}}}, r"trafficPolicy\.tls"),
    ({"trafficPolicy": {"loadBalancer": {"simple": "PASSTHROUGH"}}}, r"trafficPolicy\.loadBalancer\.simple"),
    (
        {"trafficPolicy": {"loadBalancer": {"localityLbSetting": {"enabled": True}}}},
        r"trafficPolicy\.loadBalancer\.localityLbSetting",
    ),
    (
        {"trafficPolicy": {"loadBalancer": {"consistentHash": {"httpHeaderName": "a", "useSourceIp": True}}}},
        r"trafficPolicy\.loadBalancer\.consistentHash",
    ),
    (
        {"trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "UPGRADE"}}}},
        r"trafficPolicy\.connectionPool\.http\.h2UpgradePolicy",
    ),
]


@pytest.mark.parametrize(("fields", "name"), REFUSED, ids=[name for _, name in REFUSED])
async def test_refused_field_is_named_and_the_previous_routes_keep_serving(
    router: EnvoyRouter,
    backends: dict[str, Echo],
    port: int,
    client: httpx.AsyncClient,
    fields: dict[str, Any],
    name: str,
) -> None:
    marker = {"headers": {"request": {"set": {"x-config": "previous"}}}}
    await apply(router, route(backends, port, marker))
    files = [
        router.layout.rds(KEY).read_bytes(),
        router.layout.cds.read_bytes(),
        router.layout.lds.read_bytes(),
    ]
    with pytest.raises(RouterError, match=rf"service\.{name}.* is not supported by the envoy router \(.+\)"):
        await router.reconcile(route(backends, port, {**marker, **fields}))
    assert [
        router.layout.rds(KEY).read_bytes(),
        router.layout.cds.read_bytes(),
        router.layout.lds.read_bytes(),
    ] == files
    assert (await echo(client, port))["headers"]["x-config"] == "previous"


async def test_a_policy_envoy_rejects_is_a_router_error_and_the_previous_routes_keep_serving(
    router: EnvoyRouter, backends: dict[str, Echo], port: int, client: httpx.AsyncClient
) -> None:
    marker = {"headers": {"request": {"set": {"x-config": "previous"}}}}
    await apply(router, route(backends, port, marker))
    bad = {**marker, "corsPolicy": {"allowOrigins": [{"regex": "([unclosed"}]}}
    with pytest.raises(RouterError, match=r"refused the new routes .*missing \]"):
        await router.reconcile(route(backends, port, bad))
    assert (await echo(client, port))["headers"]["x-config"] == "previous"
    await apply(router, route(backends, port, {"headers": {"request": {"set": {"x-config": "next"}}}}))
    assert (await echo(client, port))["headers"]["x-config"] == "next"


# -- adoption -------------------------------------------------------------------------------------------


async def test_an_adopted_envoy_keeps_the_service_fields_of_canaries_not_reconciled_yet(
    tmp_path: Path, backends: dict[str, Echo], client: httpx.AsyncClient
) -> None:
    port, other_port = free_port(), free_port()
    policy = {"loadBalancer": {"simple": "LEAST_REQUEST"}}
    web = route(backends, port, {"trafficPolicy": policy, "headers": {"request": {"add": {"x-a": "1"}}}})
    web = replace(web, primary_cookie="primary-cookie")
    first = EnvoyRouter(tmp_path / "envoy")
    await first.start()
    try:
        await apply(first, web)
    finally:
        await first.stop(end_envoy=False)
    second = EnvoyRouter(tmp_path / "envoy")
    await second.start()
    try:
        assert second.adopted
        # Another canary reconciled first rewrites the shared clusters file: web's policy must stay.
        await second.reconcile(replace(route(backends, other_port), key=ObjectKey("shop/cart")))
        assert (await live_cluster(second, "shop-web-primary"))["lb_policy"] == "LEAST_REQUEST"
        assert (await echo(client, port))["headers"]["x-a"] == "1"
        files = {p: p.read_bytes() for p in (tmp_path / "envoy" / "xds").rglob("*.json")}
        await apply(second, web)  # the same service again changes nothing
        assert {p: p.read_bytes() for p in files} == files
    finally:
        await second.stop()
