"""EnvoyStatsProvider: success rate and p99 from a real Envoy's admin stats, against known truth."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.envoy_stats import (
    EnvoyStatsProvider,
    Histogram,
    Scrape,
    counter_increase,
    histogram_increase,
    quantile,
)
from rheostat.plugins.routers.base import Routes, ServiceRoute, Upstream
from rheostat.plugins.routers.envoy import EnvoyRouter
from tests.envoy_backend import Backend, KeepAliveClient
from tests.servers import free_port

KEY = ObjectKey("shop/web")


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[EnvoyRouter]:
    r = EnvoyRouter(tmp_path / "envoy")
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def port(router: EnvoyRouter) -> AsyncIterator[int]:
    """A canary taking all traffic, behind a listener on a free port."""
    async with Backend("primary") as primary, Backend("canary") as canary:
        port = free_port()
        route = ServiceRoute(
            KEY, port, (Upstream("127.0.0.1", primary.port),), (Upstream("127.0.0.1", canary.port),)
        )
        await router.reconcile(route)
        await router.set_routes(KEY, Routes(primary=0, canary=100))
        yield port


@pytest.fixture
async def provider(router: EnvoyRouter) -> AsyncIterator[EnvoyStatsProvider]:
    p = EnvoyStatsProvider(router.admin_socket, scrape_interval_s=0.2)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def query(name: str, group: str = "canary") -> MetricQuery:
    return MetricQuery(canary=KEY, name=name, window_s=60, group=group)


async def send(port: int, paths: list[str], concurrency: int = 10) -> None:
    queue = list(reversed(paths))

    async def worker() -> None:
        client = KeepAliveClient(port)
        try:
            while queue:
                await client.get(queue.pop())
        finally:
            await client.aclose()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def test_success_rate_matches_the_truth(provider: EnvoyStatsProvider, port: int) -> None:
    paths = ["/?status=500" if i % 11 == 0 else "/" for i in range(400)]  # 37 of 400 fail
    await send(port, paths)
    truth = 100 * (400 - 37) / 400
    assert abs(await provider.query(query("request-success-rate")) - truth) <= 1.0


async def test_p99_duration_is_within_ten_percent(provider: EnvoyStatsProvider, port: int) -> None:
    delays = [(i * 37) % 100 for i in range(400)]  # 0..99 ms, each 4 times, shuffled
    await send(port, [f"/?delay={d}" for d in delays])
    truth = sorted(delays)[math.ceil(0.99 * len(delays)) - 1]  # the backend's known p99: 98 ms
    # Histograms move at Envoy's stats flush (1 s; later on a loaded machine): wait until all are counted.
    name = "cluster.shop-web-canary.upstream_rq_time"
    for _ in range(100):
        h = (await provider.scrape()).histograms.get(name)
        if h is not None and h.total >= len(delays):
            break
        await asyncio.sleep(0.1)
    p99 = await provider.query(query("request-duration"))
    assert abs(p99 - truth) / truth <= 0.10, (p99, truth)


async def test_no_traffic_is_no_data(provider: EnvoyStatsProvider, port: int) -> None:
    with pytest.raises(NoData):
        await provider.query(query("request-success-rate"))
    with pytest.raises(NoData):
        await provider.query(query("request-duration"))


async def test_primary_traffic_is_not_counted_for_canary(
    provider: EnvoyStatsProvider, router: EnvoyRouter, port: int
) -> None:
    await router.set_routes(KEY, Routes(primary=100, canary=0))
    await send(port, ["/?status=500"] * 20)
    assert await provider.query(query("request-success-rate", group="primary")) == 0.0
    with pytest.raises(NoData):
        await provider.query(query("request-success-rate"))


async def test_unknown_metric_is_named(provider: EnvoyStatsProvider) -> None:
    with pytest.raises(ProviderError, match="'error-budget'"):
        await provider.query(query("error-budget"))


async def test_unreachable_admin_is_a_provider_error(tmp_path: Path) -> None:
    provider = EnvoyStatsProvider(tmp_path / "nothing.sock")
    assert not await provider.is_online()
    with pytest.raises(ProviderError, match="cannot read Envoy stats"):
        await provider.query(query("request-success-rate"))


async def test_online_when_envoy_is_up(provider: EnvoyStatsProvider) -> None:
    assert await provider.is_online()


def scrape(at: float, completed: int, buckets: tuple[int, ...] = (0, 0)) -> Scrape:
    return Scrape(
        at=at,
        uptime_s=at,
        counters={"c.upstream_rq_completed": completed},
        histograms={"c.upstream_rq_time": Histogram((10.0, 20.0), buckets)},
    )


def test_counter_going_down_is_a_restart() -> None:
    scrapes = [scrape(0, 100), scrape(1, 150), scrape(2, 20), scrape(3, 30)]
    assert counter_increase(scrapes, "c.upstream_rq_completed") == 50 + 20 + 10


def test_histogram_going_down_is_a_restart() -> None:
    scrapes = [scrape(0, 0, (5, 10)), scrape(1, 0, (6, 12)), scrape(2, 0, (1, 1))]
    assert histogram_increase(scrapes, "c.upstream_rq_time") == Histogram((10.0, 20.0), (2, 3))


def test_quantile_interpolates_inside_the_bucket() -> None:
    h = Histogram((10.0, 20.0, 40.0), (50, 90, 100))
    assert quantile(0.5, h) == 10.0
    assert quantile(0.7, h) == pytest.approx(15.0)
    assert quantile(0.99, h) == pytest.approx(38.0)


async def test_after_a_controller_restart_a_window_is_judged_only_once_it_is_covered(
    router: EnvoyRouter, port: int
) -> None:
    # Envoy runs on (adopted) with its counters; the new controller's history starts empty. Two scrapes a
    # moment apart must not judge the canary on the one request between them.
    await asyncio.sleep(3.0)  # Envoy's uptime now exceeds the window: its counters are not "since start"
    await send(port, ["/?status=500"] * 20)
    restarted = EnvoyStatsProvider(router.admin_socket)
    await restarted.scrape()
    await send(port, ["/"])  # one good request
    with pytest.raises(NoData, match="of the 2s window so far"):
        await restarted.query(MetricQuery(canary=KEY, name="request-success-rate", window_s=2))
    await asyncio.sleep(1.1)
    await send(port, ["/?status=500"] * 4)
    await asyncio.sleep(1.2)  # a stats flush
    rate = await restarted.query(MetricQuery(canary=KEY, name="request-success-rate", window_s=3))
    assert rate < 50  # judged on the covered window: mostly the 500s, not the one good request
