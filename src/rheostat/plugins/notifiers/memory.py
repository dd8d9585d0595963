"""In-memory notifier: keeps what it was given."""

from __future__ import annotations

from rheostat.plugins.notifiers.base import Alert, NotifierError


class MemoryNotifier:
    def __init__(self, fail: bool = False) -> None:
        self.alerts: list[Alert] = []
        self.fail = fail

    async def post(self, alert: Alert) -> None:
        if self.fail:
            raise NotifierError("notifier is down")
        self.alerts.append(alert)
