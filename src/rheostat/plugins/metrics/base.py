"""The MetricProvider family: where a check's number comes from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from rheostat.model.base import ObjectKey


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
