"""Notifier plugins and their registry: one factory per AlertProvider type, each taking NotifierSettings.

Build one from an AlertProvider with `rheostat.plugins.notifiers.factory.notifier_from_provider`.
"""

from __future__ import annotations

from rheostat.plugins.notifiers.base import Notifier
from rheostat.plugins.notifiers.chat import (
    DiscordNotifier,
    GChatNotifier,
    RocketNotifier,
    SlackNotifier,
    TeamsNotifier,
)
from rheostat.plugins.notifiers.webhook import WebhookNotifier
from rheostat.plugins.registry import Registry

NOTIFIERS: Registry[Notifier] = Registry("alert provider type")

NOTIFIERS.register("slack", SlackNotifier)
NOTIFIERS.register("discord", DiscordNotifier)
NOTIFIERS.register("rocket", RocketNotifier)
NOTIFIERS.register("msteams", TeamsNotifier)
NOTIFIERS.register("gchat", GChatNotifier)
NOTIFIERS.register("webhook", WebhookNotifier)
