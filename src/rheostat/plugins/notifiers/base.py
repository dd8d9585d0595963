"""The Notifier family: where alerts about a rollout are posted."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol


class Severity(enum.StrEnum):
    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    def reaches(self, subscribed: Severity) -> bool:
        """An alert subscribed at `info` gets everything, `warn` gets warn and error, `error` only error."""
        order = [Severity.INFO, Severity.WARN, Severity.ERROR]
        return order.index(self) >= order.index(subscribed)


@dataclass(frozen=True)
class Alert:
    name: str
    namespace: str
    phase: str
    message: str
    severity: Severity
    fields: dict[str, str] = field(default_factory=dict)
    cluster: str = "local"


class NotifierError(Exception):
    pass


class Notifier(Protocol):
    async def post(self, alert: Alert) -> None:
        """Deliver one alert; raises NotifierError. Callers never let a failure block a rollout."""
