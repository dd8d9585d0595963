"""Builtin checks (request-success-rate, request-duration) computed from Envoy's admin stats.

Counters and histogram buckets in Envoy are cumulative since it started. The provider keeps a bounded
history of scrapes and answers a query over a window from the increase between scrapes, the way
Prometheus' `increase()` does: a value going down means Envoy restarted, and the new value is the increase.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.base import (
    MIN_WINDOW_S,
    Counts,
    GroupCounts,
    MetricQuery,
    NoData,
    ProviderError,
)
from rheostat.plugins.routers.envoy.admin import AdminClient, AdminError
from rheostat.util.tasks import supervised

log = logging.getLogger(__name__)

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTINS = (SUCCESS_RATE, DURATION)
SCRAPE_FILTER = r"^(server\.uptime|cluster\..+\.upstream_rq_(completed|5xx|time))$"
MAX_HISTORY = 4096
MAX_AGE_S = 3600.0


@dataclass(frozen=True)
class Histogram:
    bounds: tuple[float, ...]  # bucket upper bounds, ms
    cumulative: tuple[int, ...]  # samples <= each bound, since Envoy started

    @property
    def total(self) -> int:
        return self.cumulative[-1] if self.cumulative else 0


@dataclass(frozen=True)
class Scrape:
    at: float  # time.monotonic()
    uptime_s: float
    counters: Mapping[str, int] = field(default_factory=dict)
    histograms: Mapping[str, Histogram] = field(default_factory=dict)


def parse_stats(payload: Any, at: float) -> Scrape:
    """`/stats?format=json&histogram_buckets=cumulative` -> Scrape; ProviderError for another shape.

    Entries that are not counters (text readouts) are left out."""
    stats = payload.get("stats") if isinstance(payload, dict) else None
    if not isinstance(stats, list):
        raise ProviderError("Envoy's stats are not an object with a `stats` list")
    counters: dict[str, int] = {}
    histograms: dict[str, Histogram] = {}
    for entry in stats:
        if not isinstance(entry, dict):
            raise ProviderError("an entry of Envoy's stats is not an object")
        if "histograms" in entry:
            for h in _list(entry["histograms"], "histograms"):
                name, histogram = _histogram(h)
                histograms[name] = histogram
            continue
        value = entry.get("value")
        if isinstance(value, int) and not isinstance(value, bool) and isinstance(entry.get("name"), str):
            if value < 0:
                raise ProviderError(f"Envoy's counter {entry['name'][:80]} is negative")
            counters[entry["name"]] = value
    return Scrape(at, float(counters.get("server.uptime", 0)), counters, histograms)


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ProviderError(f"Envoy's {what} are not a list")
    return value


def _histogram(h: Any) -> tuple[str, Histogram]:
    """One histogram of the payload, checked: increasing bounds, cumulative non-negative counts."""
    if not isinstance(h, dict) or not isinstance(h.get("name"), str):
        raise ProviderError("a histogram of Envoy's stats has no name")
    name = h["name"]
    bounds: list[float] = []
    counts: list[int] = []
    for b in _list(h.get("buckets", []), f"buckets of {name[:80]}"):
        bound = b.get("upper_bound") if isinstance(b, dict) else None
        count = b.get("cumulative") if isinstance(b, dict) else None
        if (
            not isinstance(bound, int | float)
            or isinstance(bound, bool)
            or math.isnan(bound)
            or not isinstance(count, int)
            or isinstance(count, bool)
            or count < 0
            or (bounds and (bound <= bounds[-1] or count < counts[-1]))
        ):
            raise ProviderError(
                f"the histogram {name[:80]} of Envoy's stats has a bucket that is not cumulative"
            )
        bounds.append(float(bound))
        counts.append(count)
    return name, Histogram(tuple(bounds), tuple(counts))


def counter_increase(scrapes: Sequence[Scrape], name: str) -> int:
    total = 0
    for before, after in itertools.pairwise(scrapes):
        old, new = before.counters.get(name, 0), after.counters.get(name, 0)
        total += new - old if new >= old else new  # went down: Envoy restarted, count from zero
    return total


def histogram_increase(scrapes: Sequence[Scrape], name: str) -> Histogram | None:
    bounds: tuple[float, ...] | None = None
    counts: list[int] = []
    for before, after in itertools.pairwise(scrapes):
        new = after.histograms.get(name)
        if new is None:
            continue
        old = before.histograms.get(name)
        if bounds is None:
            bounds, counts = new.bounds, [0] * len(new.bounds)
        if new.bounds != bounds:
            continue  # bucket layout changed under us; skip rather than mix layouts
        reset = (
            old is None
            or old.bounds != new.bounds
            or any(n < o for n, o in zip(new.cumulative, old.cumulative, strict=True))
        )
        for i, n in enumerate(new.cumulative):
            counts[i] += n if reset or old is None else n - old.cumulative[i]
    return None if bounds is None else Histogram(bounds, tuple(counts))


def quantile(q: float, h: Histogram) -> float:
    """Prometheus-style: find the bucket holding rank q*total and interpolate linearly inside it."""
    if h.total == 0:
        raise NoData("no samples")
    rank = q * h.total
    lower, below = 0.0, 0
    for bound, count in zip(h.bounds, h.cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):  # as Prometheus: past the last finite bound, that bound is the answer
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return h.bounds[-1]


def window(history: Sequence[Scrape], now: Scrape, window_s: float) -> list[Scrape]:
    """The scrapes covering the window, starting from the last one at or before its start."""
    start = now.at - window_s
    scrapes = [s for s in history if s.at >= start]
    older = [s for s in history if s.at < start]
    if older:
        return [older[-1], *scrapes]
    # No scrape before the window: if the source itself started inside the window, its counters are the increase.
    if scrapes[0].at - scrapes[0].uptime_s >= start:
        return [Scrape(at=start, uptime_s=0.0), *scrapes]
    return scrapes


def full_window(history: Sequence[Scrape], now: Scrape, window_s: float) -> list[Scrape]:
    """`window`, or NoData while its scrapes span less than the window and less than MIN_WINDOW_S.

    After a controller restart the history starts afresh while Envoy (adopted) keeps its counters: a window
    of two scrapes a few milliseconds apart would judge a canary on the one request between them. A second
    of scrapes is judged, as the first second of a run is; a longer window fills in as the history grows."""
    scrapes = window(history, now, window_s)
    covered = scrapes[-1].at - scrapes[0].at
    if covered < min(window_s, MIN_WINDOW_S) - 0.001:  # (a synthetic start is exactly window_s back)
        raise NoData(f"the counters were read over {covered:.1f}s of the {window_s:g}s window so far")
    return scrapes


class EnvoyStatsProvider:
    """MetricProvider for `<ns>-<name>-<group>` clusters of an EnvoyRouter's Envoy."""

    def __init__(self, admin_socket: Path, *, scrape_interval_s: float = 1.0) -> None:
        self.admin_socket = Path(admin_socket)
        self.scrape_interval_s = scrape_interval_s
        self.history: deque[Scrape] = deque(maxlen=MAX_HISTORY)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = supervised(self._scrape_forever(), name=f"envoy-stats-{self.admin_socket}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def is_online(self) -> bool:
        async with AdminClient(self.admin_socket) as admin:
            return await admin.ready()

    async def scrape(self) -> Scrape:
        try:
            async with AdminClient(self.admin_socket) as admin:
                payload = await admin.get_json(
                    "/stats", {"format": "json", "histogram_buckets": "cumulative", "filter": SCRAPE_FILTER}
                )
        except AdminError as exc:
            raise ProviderError(f"cannot read Envoy stats: {exc}") from exc
        scrape = parse_stats(payload, time.monotonic())
        self.history.append(scrape)
        while self.history and self.history[0].at < scrape.at - MAX_AGE_S:
            self.history.popleft()
        return scrape

    async def query(self, q: MetricQuery) -> float:
        if q.name not in BUILTINS:
            raise ProviderError(
                f"unknown metric {q.name!r} for the envoy stats provider; known: {', '.join(BUILTINS)}"
            )
        now = await self.scrape()
        scrapes = self._window(now, q.window_s)
        cluster = f"cluster.{q.canary.replace('/', '-')}-{q.group}"
        if q.name == SUCCESS_RATE:
            completed = counter_increase(scrapes, f"{cluster}.upstream_rq_completed")
            if completed <= 0:
                raise NoData(f"no requests to {cluster} in the last {q.window_s}s")
            failed = counter_increase(scrapes, f"{cluster}.upstream_rq_5xx")
            return 100.0 * (completed - min(failed, completed)) / completed  # counters read apart may cross
        histogram = histogram_increase(scrapes, f"{cluster}.upstream_rq_time")
        if histogram is None or histogram.total == 0:
            raise NoData(f"no request durations for {cluster} in the last {q.window_s}s")
        return quantile(0.99, histogram)

    async def counts(self, canary: ObjectKey) -> Counts:
        """Cumulative counts of both groups since Envoy started (for the sequential judge)."""
        scrape = await self.scrape()
        prefix = f"cluster.{canary.replace('/', '-')}"

        def group(name: str) -> GroupCounts:
            h = scrape.histograms.get(f"{prefix}-{name}.upstream_rq_time")
            return GroupCounts(
                scrape.counters.get(f"{prefix}-{name}.upstream_rq_completed", 0),
                scrape.counters.get(f"{prefix}-{name}.upstream_rq_5xx", 0),
                h.bounds if h else (),
                h.cumulative if h else (),
            )

        return Counts(group("primary"), group("canary"))

    def _window(self, now: Scrape, window_s: float) -> list[Scrape]:
        return full_window(self.history, now, window_s)

    async def _scrape_forever(self) -> None:
        while True:
            try:
                await self.scrape()
            except ProviderError as exc:
                log.warning("%s", exc)
            await asyncio.sleep(self.scrape_interval_s)
