"""Chat notifiers: Slack and the Slack-compatible Discord and Rocket.Chat, Microsoft Teams, Google Chat.

Payload building is pure (the `*_payload` functions); the notifier classes only add where to post.
"""

from __future__ import annotations

import json
from typing import Any

from rheostat.plugins.http_limits import Reply
from rheostat.plugins.notifiers.base import Alert, Severity
from rheostat.plugins.notifiers.delivery import DeliveryError, NotifierSettings, post_json

JSON = dict[str, Any]


def alert_fields(alert: Alert) -> list[tuple[str, str]]:
    """The alert's fields, then the cluster, as (title, value) pairs."""
    pairs = list(alert.fields.items())
    if alert.cluster:
        pairs.append(("Cluster", alert.cluster))
    return pairs


def _title(alert: Alert) -> str:
    return f"{alert.name}.{alert.namespace}"


def slack_payload(alert: Alert, *, channel: str, username: str) -> JSON:
    return {
        "channel": channel,
        "username": username,
        "attachments": [
            {
                "color": "danger" if alert.severity is Severity.ERROR else "good",
                "author_name": _title(alert),
                "fallback": f"{_title(alert)}: {alert.message}",
                "text": alert.message,
                "mrkdwn_in": ["text"],
                "fields": [{"title": k, "value": v, "short": False} for k, v in alert_fields(alert)],
            }
        ],
    }


_TEAMS_COLOR = {Severity.INFO: "Good", Severity.WARN: "Warning", Severity.ERROR: "Attention"}


def teams_payload(alert: Alert) -> JSON:
    """An Adaptive Card message: what Teams Workflows webhooks take (Office 365 connectors are retired)."""
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": _title(alert),
                "weight": "Bolder",
                "size": "Medium",
                "color": _TEAMS_COLOR[alert.severity],
            },
            {"type": "TextBlock", "text": alert.message, "wrap": True},
            {"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in alert_fields(alert)]},
        ],
    }
    return {
        "type": "message",
        "summary": f"{_title(alert)}: {alert.message}",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    }


def gchat_payload(alert: Alert) -> JSON:
    widgets: list[JSON] = [{"textParagraph": {"text": alert.message}}]
    widgets += [{"decoratedText": {"topLabel": k, "text": v}} for k, v in alert_fields(alert)]
    return {
        "text": f"*{_title(alert)}* {alert.message}",
        "cardsV2": [
            {
                "cardId": "rheostat-alert",
                "card": {
                    "header": {"title": _title(alert), "subtitle": f"{alert.phase} · {alert.severity}"},
                    "sections": [{"widgets": widgets}],
                },
            }
        ],
    }


def _encode(payload: JSON) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()


class SlackNotifier:
    """An incoming webhook, or chat.postMessage with a bot token when the secret has a `token`."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def post(self, alert: Alert) -> None:
        s = self.settings
        body = _encode(slack_payload(alert, channel=s.channel, username=s.username))
        headers = {"Authorization": f"Bearer {s.token}"} if s.token else None
        response = await post_json(s, s.address, body, what="slack", headers=headers)
        if s.token:
            _check_web_api_reply(response)


def _check_web_api_reply(reply: Reply) -> None:
    # The Web API answers 200 with {"ok": false, "error": "..."} when it refuses a message.
    try:
        answer = json.loads(reply.body)
    except (ValueError, RecursionError):
        return
    if isinstance(answer, dict) and answer.get("ok") is False:
        error = answer.get("error", "unknown error")
        shown = error[:100] if isinstance(error, str) else "unknown error"
        raise DeliveryError(f"slack: chat.postMessage refused the message: {shown}", status=reply.status)


class DiscordNotifier:
    """Discord's Slack-compatible endpoint: the webhook address plus `/slack`."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def post(self, alert: Alert) -> None:
        s = self.settings
        body = _encode(slack_payload(alert, channel=s.channel, username=s.username))
        await post_json(s, s.address.rstrip("/") + "/slack", body, what="discord")


class RocketNotifier:
    """Rocket.Chat incoming webhooks take Slack's payload as it is."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def post(self, alert: Alert) -> None:
        s = self.settings
        body = _encode(slack_payload(alert, channel=s.channel, username=s.username))
        await post_json(s, s.address, body, what="rocket")


class TeamsNotifier:
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def post(self, alert: Alert) -> None:
        await post_json(self.settings, self.settings.address, _encode(teams_payload(alert)), what="msteams")


class GChatNotifier:
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings

    async def post(self, alert: Alert) -> None:
        await post_json(self.settings, self.settings.address, _encode(gchat_payload(alert)), what="gchat")
