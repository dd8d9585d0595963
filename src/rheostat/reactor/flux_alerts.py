"""Flux's Alerts: the events Rheostat records, filtered as Flux's notification-controller does, sent through
the notifier of the Alert's Provider.

The store tells of each new event; a task reads the events since the last one it saw and, for every Alert
(not suspended) whose eventSources, eventSeverity, inclusionList and exclusionList let it through, posts it
to the Provider. An alert that cannot go out is an `AlertFailed` event on the Alert, never a crash; events
of Alerts and Providers themselves are not sent (no loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from rheostat.model.alert_provider import AlertProviderSpec
from rheostat.model.load import parse_object
from rheostat.model.metric_template import SecretRef
from rheostat.model.notification import PROVIDER_TYPES, Alert, EventSource, Provider
from rheostat.plugins.notifiers.base import Alert as Message
from rheostat.plugins.notifiers.base import Severity
from rheostat.plugins.notifiers.factory import notifier_from_provider
from rheostat.reactor.alerts import Secrets
from rheostat.store.port import State
from rheostat.store.sqlite import EventRecord
from rheostat.util.errors import describe_error

QUIET = {"Alert", "Provider"}


def _matches(source: EventSource, alert_ns: str, kind: str, key: str, labels: Mapping[str, str]) -> bool:
    namespace, _, name = key.partition("/")
    if source.kind != kind or (source.namespace or alert_ns) != namespace:
        return False
    if source.name == "*":
        return all(labels.get(k) == v for k, v in source.matchLabels.items())
    return source.name == name


def selects(alert: Alert, event: EventRecord, labels: Mapping[str, str]) -> bool:
    """Flux's filter: a source matches, the severity reaches the Alert's, inclusion then exclusion lists."""
    spec = alert.spec
    if spec.suspend or event.kind in QUIET:
        return False
    if spec.eventSeverity == "error" and not event.warning:
        return False
    if not any(
        _matches(s, alert.metadata.namespace, event.kind, event.key, labels) for s in spec.eventSources
    ):
        return False
    if spec.inclusionList and not any(re2.search(p, event.message) for p in spec.inclusionList):
        return False
    return not any(re2.search(p, event.message) for p in spec.exclusionList)


def provider_spec(provider: Provider) -> AlertProviderSpec:
    """The Flux Provider as the AlertProvider the notifiers take (`address` and `token` keys as Flux's)."""
    spec = provider.spec
    return AlertProviderSpec(
        type=PROVIDER_TYPES[spec.type],
        channel=spec.channel or "general",
        username=spec.username or "flux",
        address=spec.address,
        proxy=spec.proxy,
        secretRef=SecretRef(name=spec.secretRef.name) if spec.secretRef is not None else None,
    )


class FluxAlerts:
    def __init__(self, store: State, secrets: Secrets, cluster: str = "local") -> None:
        self.store = store
        self.secrets = secrets
        self.cluster = cluster
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        newest = store.events(limit=1)
        self._seen = newest[0].id if newest else 0  # history is not sent again after a restart

    def _told(self, changes: frozenset[tuple[str, str]]) -> None:
        """The store's watcher (on the writer's thread): only wakes the task."""
        if self._loop is not None and any(kind == "event" for kind, _ in changes):
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        stop = self.store.watch(self._told)
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                await self.send_new()
        finally:
            stop()

    async def send_new(self) -> None:
        """Every event recorded since the last call, to the Alerts that select it."""
        # the store answers the newest 500: more between two wakes (one per commit) would lose the oldest
        events = sorted(self.store.events(after=self._seen, limit=500), key=lambda e: e.id)
        if not events:
            return
        self._seen = events[-1].id
        alerts = [a for a in self._objects("Alert") if isinstance(a, Alert) and not a.spec.suspend]
        if not alerts:
            return
        for event in events:
            labels = self._labels(event.kind, event.key)
            for alert in alerts:
                if selects(alert, event, labels):
                    await self._send(alert, event)

    def _objects(self, kind: str) -> list[object]:
        return [parse_object(s.body, s.source) for s in self.store.list_objects(kind)]

    def _labels(self, kind: str, key: str) -> Mapping[str, str]:
        stored = self.store.get_object(kind, key)
        labels = stored.body.get("metadata", {}).get("labels", {}) if stored is not None else {}
        return labels if isinstance(labels, dict) else {}

    async def _send(self, alert: Alert, event: EventRecord) -> None:
        ns = alert.metadata.namespace
        try:
            stored = self.store.get_object("Provider", f"{ns}/{alert.spec.providerRef.name}")
            if stored is None:
                raise LookupError(f"spec.providerRef: Provider {ns}/{alert.spec.providerRef.name} not found")
            provider = parse_object(stored.body, stored.source)
            assert isinstance(provider, Provider)
            if provider.spec.suspend:
                return
            spec = provider_spec(provider)
            secret = self.secrets.get(ns, spec.secretRef.name) if spec.secretRef is not None else None
            namespace, _, name = event.key.partition("/")
            fields = {"Kind": event.kind, "Reason": event.reason}
            if alert.spec.summary:
                fields["Summary"] = alert.spec.summary
            fields = alert.spec.eventMetadata | fields  # as Flux: metadata never overrides the event's own
            await notifier_from_provider(spec, secret).post(
                Message(
                    name=name,
                    namespace=namespace,
                    phase=event.reason,
                    message=event.message,
                    severity=Severity.ERROR if event.warning else Severity.INFO,
                    cluster=self.cluster,
                    fields=fields,
                )
            )
        except Exception as exc:  # an alert that cannot go out is an event on the Alert, never a crash
            with self.store.transaction():
                self.store.add_event(
                    "Alert",
                    alert.metadata.key,
                    "AlertFailed",
                    f"event {event.kind} {event.key} {event.reason} could not be sent: {describe_error(exc)}",
                    warning=True,
                )
