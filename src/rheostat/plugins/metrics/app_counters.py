"""Builtin checks of a flag rollout from the application's own counters, per variant, on its /metrics.

A flag's variants run inside one application, so no proxy can tell them apart: the application counts. The
convention (Prometheus text format, labels `flag` and `variant`):

    feature_flag_requests_total{flag, variant}                 counter: requests served with that variant
    feature_flag_request_errors_total{flag, variant}           counter: of those, the failed ones
    feature_flag_request_duration_seconds_bucket{flag, variant, le}   histogram (optional): their durations

Every process of the application is scraped and the samples summed; increases over a window are computed the
way the Envoy stats provider does (a counter going down is a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from rheostat.model.base import ObjectKey
from rheostat.plugins.http_limits import BodyTooLarge, MiB, request
from rheostat.plugins.metrics.base import Counts, GroupCounts, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.envoy_stats import (
    DURATION,
    MAX_HISTORY,
    SUCCESS_RATE,
    Histogram,
    Scrape,
    counter_increase,
    full_window,
    histogram_increase,
    quantile,
)
from rheostat.util.tasks import supervised

log = logging.getLogger(__name__)

REQUESTS = "feature_flag_requests_total"
ERRORS = "feature_flag_request_errors_total"
BUCKETS = "feature_flag_request_duration_seconds_bucket"
START = "process_start_time_seconds"
MAX_BODY = 10 * MiB  # one process's /metrics


@dataclass(frozen=True)
class VariantTarget:
    """Where a flag canary's outcomes are counted, and which variant stands for each group."""

    canary: ObjectKey
    flag: str
    canary_variant: str | None
    primary_variant: str | None
    urls: tuple[str, ...]  # every process's /metrics


Targets = Callable[[], Awaitable[Mapping[ObjectKey, VariantTarget]]]


def parse_app_metrics(texts: list[str], flag: str, at: float, now_wall: float) -> Scrape:
    """Sum the flag's per-variant samples of every process into one Scrape (durations in ms)."""
    counters: dict[str, int] = {}
    buckets: dict[str, dict[float, float]] = {}
    starts: list[float] = []
    for text in texts:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == START:
                    starts.append(sample.value)
                    continue
                if sample.labels.get("flag") != flag or "variant" not in sample.labels:
                    continue
                variant = sample.labels["variant"]
                if sample.name in (REQUESTS, ERRORS):
                    name = f"{variant}.{'requests' if sample.name == REQUESTS else 'errors'}"
                    counters[name] = counters.get(name, 0) + int(sample.value)
                elif sample.name == BUCKETS:
                    le = float(sample.labels.get("le", "+Inf"))
                    per = buckets.setdefault(variant, {})
                    per[le] = per.get(le, 0.0) + sample.value
    histograms = {
        f"{variant}.duration": Histogram(
            tuple(le * 1000.0 if math.isfinite(le) else math.inf for le in sorted(per)),
            tuple(int(per[le]) for le in sorted(per)),
        )
        for variant, per in buckets.items()
    }
    # The newest process bounds how much of the counters can have been counted inside a window.
    uptime = now_wall - max(starts) if starts else math.inf
    return Scrape(at, uptime, counters, histograms)


class AppCountersProvider:
    """MetricProvider (and CountSource) for Canaries whose target is a feature flag."""

    def __init__(self, targets: Targets, *, scrape_interval_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.history: dict[ObjectKey, deque[Scrape]] = {}
        self.timeout_s = timeout_s  # for each scrape of a process, body included
        self._client = httpx.AsyncClient(timeout=timeout_s, trust_env=False)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = supervised(self._scrape_forever(), name="app-counters")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._client.aclose()

    async def is_online(self) -> bool:
        return True

    async def _target(self, canary: ObjectKey) -> VariantTarget:
        target = (await self.targets()).get(canary)
        if target is None or not target.urls:
            raise ProviderError(
                f"Canary {canary}: no application counts its flag's outcomes "
                "(set spec.flag.appRef to a Workload that serves /metrics, or use a MetricTemplate)"
            )
        return target

    async def scrape(self, target: VariantTarget) -> Scrape:
        async def one(url: str) -> str:
            reply = await request(self._client, "GET", url, deadline_s=self.timeout_s, cap=MAX_BODY)
            if reply.status >= 400:
                raise ProviderError(f"cannot read the application's counters: {url} answered {reply.status}")
            return reply.body.decode("utf-8", errors="replace")

        try:
            texts = await asyncio.gather(*(one(u) for u in target.urls))
            scrape = parse_app_metrics(list(texts), target.flag, time.monotonic(), time.time())
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(
                f"cannot read the application's counters: no answer within {self.timeout_s:g}s"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL, BodyTooLarge, ValueError) as exc:
            raise ProviderError(f"cannot read the application's counters: {exc}") from exc
        history = self.history.setdefault(target.canary, deque(maxlen=MAX_HISTORY))
        history.append(scrape)
        return scrape

    async def query(self, q: MetricQuery) -> float:
        if q.name not in (SUCCESS_RATE, DURATION):
            raise ProviderError(
                f"unknown metric {q.name!r} for a flag canary; known: {SUCCESS_RATE}, {DURATION}"
            )
        target = await self._target(q.canary)
        variant = target.canary_variant if q.group == "canary" else target.primary_variant
        if variant is None:
            raise NoData(f"no {q.group} variant of flag {target.flag!r} is known")
        now = await self.scrape(target)
        scrapes = full_window(self.history[target.canary], now, q.window_s)
        if q.name == SUCCESS_RATE:
            served = counter_increase(scrapes, f"{variant}.requests")
            if served <= 0:
                raise NoData(
                    f"no requests served variant {variant!r} of {target.flag!r} in the last {q.window_s}s"
                )
            failed = counter_increase(scrapes, f"{variant}.errors")
            return 100.0 * (served - min(failed, served)) / served
        histogram = histogram_increase(scrapes, f"{variant}.duration")
        if histogram is None or histogram.total == 0:
            raise NoData(f"no durations for variant {variant!r} of {target.flag!r} in the last {q.window_s}s")
        return quantile(0.99, histogram)

    async def counts(self, canary: ObjectKey) -> Counts:
        target = await self._target(canary)
        scrape = await self.scrape(target)

        def group(variant: str | None) -> GroupCounts:
            if variant is None:
                return GroupCounts()
            h = scrape.histograms.get(f"{variant}.duration")
            return GroupCounts(
                scrape.counters.get(f"{variant}.requests", 0),
                scrape.counters.get(f"{variant}.errors", 0),
                h.bounds if h else (),
                h.cumulative if h else (),
            )

        return Counts(group(target.primary_variant), group(target.canary_variant))

    async def _scrape_forever(self) -> None:
        """Keep a history, so the first check of a run already has a window to look at."""
        while True:
            try:
                targets = await self.targets()
                for canary in list(self.history):
                    if canary not in targets:
                        del self.history[canary]
                for target in targets.values():
                    if target.urls:
                        with contextlib.suppress(ProviderError):
                            await self.scrape(target)
            except Exception:  # a failing round is logged; the next one tries again
                log.warning("scraping application counters failed", exc_info=True)
            await asyncio.sleep(self.scrape_interval_s)
