"""In-memory metrics: values set by a test or by `rheostat simulate`."""

from __future__ import annotations

from collections.abc import Callable

from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError

Source = Callable[[MetricQuery], float | None]


class MemoryMetrics:
    """Answers from a table `{metric name: value}` or a function; None is "no data"."""

    def __init__(self, values: dict[str, float | None] | None = None, source: Source | None = None) -> None:
        self.values: dict[str, float | None] = dict(values or {})
        self.source = source
        self.online = True
        self.queries: list[MetricQuery] = []

    async def query(self, q: MetricQuery) -> float:
        self.queries.append(q)
        if not self.online:
            raise ProviderError("metrics provider is down")
        value = self.source(q) if self.source is not None else self.values.get(q.name)
        if value is None:
            raise NoData(f"no values found for metric {q.name}")
        return value  # NaN and infinities are answered as they are: the judge must refuse them

    async def is_online(self) -> bool:
        return self.online
