"""From an AlertProvider (and its resolved secret) to a Notifier; and the per-alert severity filter."""

from __future__ import annotations

from collections.abc import Mapping

from rheostat.model.alert_provider import AlertProviderSpec
from rheostat.plugins.notifiers import NOTIFIERS
from rheostat.plugins.notifiers.base import Alert, Notifier, Severity
from rheostat.plugins.notifiers.delivery import (
    DEFAULT_TIMEOUT,
    NotifierConfigError,
    NotifierSettings,
    check_url,
)

SLACK_POST_MESSAGE = "https://slack.com/api/chat.postMessage"


def notifier_from_provider(
    spec: AlertProviderSpec,
    secret: Mapping[str, str] | None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> Notifier:
    """Secret keys: `address` overrides spec.address, `token` signs (webhook) or authorizes (slack).

    Raises NotifierConfigError naming the AlertProvider field at fault.
    """
    if spec.secretRef is not None and secret is None:
        raise NotifierConfigError(
            f"AlertProvider spec.secretRef: secret {spec.secretRef.name!r} was not found or not read"
        )
    data = secret or {}
    token = data.get("token") or None
    address = data.get("address") or spec.address
    if not address and spec.type == "slack" and token:
        address = SLACK_POST_MESSAGE  # a bot token without a webhook means the Web API
    if not address:
        where = f" or an `address` key in secret {spec.secretRef.name!r}" if spec.secretRef else ""
        raise NotifierConfigError(
            f"AlertProvider spec.address: no address to post to; set spec.address{where}"
        )
    check_url(address, "AlertProvider address" if "address" in data else "AlertProvider spec.address")
    if spec.proxy:
        check_url(spec.proxy, "AlertProvider spec.proxy")
    settings = NotifierSettings(
        address=address,
        channel=spec.channel,
        username=spec.username,
        proxy=spec.proxy,
        token=token,
        timeout=timeout,
    )
    return NOTIFIERS.create(spec.type, settings)


class SeverityFilter:
    """Passes on only the alerts that reach the subscribed severity (Flagger's `alerts[].severity`)."""

    def __init__(self, notifier: Notifier, subscribed: Severity) -> None:
        self.notifier = notifier
        self.subscribed = subscribed

    async def post(self, alert: Alert) -> None:
        if alert.severity.reaches(self.subscribed):
            await self.notifier.post(alert)
