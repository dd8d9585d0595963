"""The MetricProvider family: where a check's number comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rheostat.model.base import ObjectKey

MIN_WINDOW_S = (
    1.0  # the shortest window judged (unless the metric's interval is shorter): less is no data yet
)


class NoData(Exception):
    """The query ran and found no values (no traffic, or NaN): a failed check, never a pass."""


class ProviderError(Exception):
    """The provider could not answer (down, refused, timed out, bad query)."""


@dataclass(frozen=True)
class MetricQuery:
    """What to measure: a builtin check by name, or a query text rendered from a template."""

    canary: ObjectKey
    name: str  # the analysis metric's name, e.g. "request-success-rate"
    window_s: float
    text: str | None = None  # rendered query for template providers; None for builtins
    group: str = "canary"
    variables: dict[str, str] = field(default_factory=dict)


class MetricProvider(Protocol):
    async def query(self, q: MetricQuery) -> float:
        """A single number, or NoData / ProviderError."""

    async def is_online(self) -> bool: ...


@runtime_checkable
class SidesProvider(Protocol):
    """A builtin source that measures the canary and the primary beside it in one query (one exchange
    instead of two per check: at hundreds of canaries, the HTTP exchange is most of a step's CPU)."""

    async def sides(self, q: MetricQuery) -> tuple[float, float | None]:
        """(canary, primary) for a builtin check; the canary's NoData / ProviderError as `query`'s, the
        primary None when it has no finite value (it is only shown beside the canary, never judged)."""


@dataclass(frozen=True)
class GroupCounts:
    """Cumulative counts of one group (primary or canary) since the source started counting."""

    requests: int = 0
    errors: int = 0  # 5xx
    le: tuple[float, ...] = ()  # latency histogram bucket upper bounds, ms, increasing
    at_or_below: tuple[int, ...] = ()  # requests at or below each bound (cumulative buckets)


@dataclass(frozen=True)
class Counts:
    """Both groups of one canary, read at the same moment: the sequential judge's sufficient statistics."""

    primary: GroupCounts
    canary: GroupCounts


class CountSource(Protocol):
    """A provider that can also give raw cumulative counts (the builtin Envoy stats, Prometheus)."""

    async def counts(self, canary: ObjectKey) -> Counts:
        """Counts of `<ns>-<name>-primary` and `-canary`, or ProviderError."""
