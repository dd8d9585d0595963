"""What a mesh gives by default, on a real Envoy in front of real replicas of the sample app.

A replica killed while traffic flows costs users nothing: idempotent requests are retried on another endpoint
and the dead endpoint is ejected. A POST is not retried unless `service.retries` says so. The canary
cluster's counters (what the builtin success rate reads) count what users saw, once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Retries
from rheostat.plugins.metrics.base import MetricQuery
from rheostat.plugins.metrics.envoy_stats import SUCCESS_RATE, EnvoyStatsProvider, Scrape, counter_increase
from rheostat.plugins.routers.base import Routes, ServiceRoute, Upstream
from rheostat.plugins.routers.envoy import EnvoyRouter
from tests.servers import free_port

pytestmark = pytest.mark.e2e

KEY = ObjectKey("shop/web")
CANARY = "cluster.shop-web-canary"


class Replica:
    """One process of the sample app (`python -m rheostat.demo.app`), as the local platform runs it."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def upstream(self) -> Upstream:
        return Upstream("127.0.0.1", self.port)

    async def start(self) -> Replica:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rheostat.demo.app",
            "--port",
            str(self.port),
            "--version",
            self.version,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with httpx.AsyncClient(trust_env=False, timeout=1) as client:
            for _ in range(200):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return self
                await asyncio.sleep(0.05)
        raise AssertionError(f"replica {self.version} on port {self.port} never became ready")

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[EnvoyRouter]:
    r = EnvoyRouter(tmp_path / "envoy")
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    """primary, canary-a, canary-b."""
    started = [Replica("1.0.0"), Replica("2.0.0"), Replica("2.0.0")]
    try:
        await asyncio.gather(*(r.start() for r in started))
        yield started
    finally:
        await asyncio.gather(*(r.stop() for r in started))


@pytest.fixture
async def stats(router: EnvoyRouter) -> EnvoyStatsProvider:
    return EnvoyStatsProvider(router.admin_socket)  # scraped by hand: no background task


async def serve_canary(
    router: EnvoyRouter, replicas: list[Replica], retries: Retries | None = None, canary: int = 100
) -> int:
    primary, *group = replicas
    port = free_port()
    route = ServiceRoute(KEY, port, (primary.upstream,), tuple(r.upstream for r in group), retries=retries)
    await router.reconcile(route)
    await router.set_routes(KEY, Routes(primary=100 - canary, canary=canary))
    return port


async def admin_get(router: EnvoyRouter, path: str) -> str:
    async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(router.admin_socket))) as admin:
        return (await admin.get(f"http://envoy{path}")).text


def increase(before: Scrape, after: Scrape, stat: str) -> int:
    return counter_increase([before, after], f"{CANARY}.{stat}")


async def retries_so_far(router: EnvoyRouter) -> int:
    text = await admin_get(router, f"/stats?filter=^{CANARY}\\.upstream_rq_retry$")
    return int(text.split(": ")[1]) if ": " in text else 0


async def test_a_killed_replica_costs_users_nothing_and_is_ejected(
    router: EnvoyRouter, replicas: list[Replica], stats: EnvoyStatsProvider
) -> None:
    port = await serve_canary(router, replicas)
    doomed = replicas[2]
    before = await stats.scrape()
    retried_before = await retries_so_far(router)
    statuses: Counter[int] = Counter()
    served_by: Counter[int] = Counter()
    sent = 0

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < 240:
            sent += 1
            if sent == 80:  # a third of the way through, with requests in flight on both replicas
                await doomed.kill()
            response = await client.get(f"http://127.0.0.1:{port}/")
            statuses[response.status_code] += 1
            if response.status_code == 200:
                served_by[response.json()["port"]] += 1
            await asyncio.sleep(0.02)  # a steady rate: 4 users, about 40 requests a second in all

    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        await asyncio.gather(*(user(client) for _ in range(4)))

    total = sum(statuses.values())
    assert statuses == {200: total}, f"users saw {dict(statuses)}"
    assert served_by[doomed.port] > 0 and served_by[replicas[1].port] > served_by[doomed.port]
    # The dead endpoint was tried, the tries were retried elsewhere, and it is out of the cluster.
    assert await retries_so_far(router) > retried_before
    clusters = await admin_get(router, "/clusters")
    assert f"shop-web-canary::127.0.0.1:{doomed.port}::health_flags::/failed_outlier_check" in clusters
    assert f"shop-web-canary::127.0.0.1:{replicas[1].port}::health_flags::healthy" in clusters
    # What the builtin check reads: one completed request per user request, none of them 5xx.
    after = await stats.scrape()
    assert increase(before, after, "upstream_rq_completed") == total
    assert increase(before, after, "upstream_rq_5xx") == 0
    assert await stats.query(MetricQuery(KEY, SUCCESS_RATE, 60)) == 100.0


async def test_a_post_is_not_retried_and_each_failure_counts_once(
    router: EnvoyRouter, replicas: list[Replica], stats: EnvoyStatsProvider
) -> None:
    port = await serve_canary(router, replicas)
    await replicas[2].kill()  # before any traffic: the cluster still holds its endpoint
    before = await stats.scrape()
    retried_before = await retries_so_far(router)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        codes = Counter(
            [(await client.post(f"http://127.0.0.1:{port}/", content=b"{}")).status_code for _ in range(12)]
        )
    assert codes[503] >= 1 and codes[200] >= 1 and codes[503] + codes[200] == 12, codes
    assert await retries_so_far(router) == retried_before
    after = await stats.scrape()
    assert increase(before, after, "upstream_rq_completed") == 12
    assert increase(before, after, "upstream_rq_5xx") == codes[503]


async def test_a_get_failing_on_every_attempt_is_one_failure(
    router: EnvoyRouter, replicas: list[Replica], stats: EnvoyStatsProvider
) -> None:
    port = await serve_canary(router, replicas)
    await asyncio.gather(replicas[1].kill(), replicas[2].kill())
    before = await stats.scrape()
    retried_before = await retries_so_far(router)
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        codes = [(await client.get(f"http://127.0.0.1:{port}/")).status_code for _ in range(5)]
    assert codes == [503] * 5
    assert await retries_so_far(router) == retried_before + 5 * 2  # two retries each, then give up
    after = await stats.scrape()
    assert increase(before, after, "upstream_rq_completed") == 5
    assert increase(before, after, "upstream_rq_5xx") == 5
    assert await stats.query(MetricQuery(KEY, SUCCESS_RATE, 60)) == 0.0


async def test_service_retries_applies_to_every_method(
    router: EnvoyRouter, replicas: list[Replica], stats: EnvoyStatsProvider
) -> None:
    retries = Retries(attempts=1, retryOn="connect-failure,503", perTryTimeout="2s")
    port = await serve_canary(router, replicas, retries)
    live = json.loads(await admin_get(router, "/config_dump?resource=dynamic_route_configs"))
    (route_config,) = [c["route_config"] for c in live["configs"]]
    policy = route_config["virtual_hosts"][0]["retry_policy"]
    assert policy["retry_on"] == "connect-failure,retriable-status-codes"
    assert policy["retriable_status_codes"] == [503] and policy["num_retries"] == 1
    await replicas[2].kill()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        codes = [
            (await client.post(f"http://127.0.0.1:{port}/", content=b"{}")).status_code for _ in range(12)
        ]
    assert codes == [200] * 12
    assert await retries_so_far(router) >= 1


async def test_attempts_zero_turns_retries_off(
    router: EnvoyRouter, replicas: list[Replica], stats: EnvoyStatsProvider
) -> None:
    port = await serve_canary(router, replicas, Retries(attempts=0))
    await replicas[2].kill()
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        codes = Counter([(await client.get(f"http://127.0.0.1:{port}/")).status_code for _ in range(12)])
    assert codes[503] >= 1, codes
    assert await retries_so_far(router) == 0
