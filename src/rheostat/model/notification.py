"""Flux's notification `Provider` and `Alert` (v1beta3, v1beta2), sent through Rheostat's notifiers.

A Provider type that matches one of Rheostat's notifiers works; any other Flux type is refused by name.
"""

from __future__ import annotations

from typing import Literal

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information
from pydantic import Field, field_validator

from rheostat.model.base import ObjectMeta, Strict

# Flux Provider type -> Rheostat notifier (plugins/notifiers)
PROVIDER_TYPES = {
    "slack": "slack",
    "msteams": "msteams",
    "discord": "discord",
    "rocket": "rocket",
    "googlechat": "gchat",
    "generic-hmac": "webhook",
}
_UNSIGNED = "generic"  # Rheostat signs every webhook: an unsigned one could be forged


class ProviderRef(Strict):
    name: str


class ProviderSpec(Strict):
    type: str
    address: str | None = None
    channel: str | None = None
    username: str | None = None
    proxy: str | None = None
    secretRef: ProviderRef | None = None
    timeout: str | None = None
    suspend: bool = False
    interval: str | None = None  # v1beta2, without effect in Flux

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v == _UNSIGNED:
            raise ValueError(
                "generic is not supported by Rheostat: its webhooks are unsigned and could be forged; use "
                "generic-hmac with a `token` in the secretRef (Rheostat signs with X-Rheostat-Signature)"
            )
        if v not in PROVIDER_TYPES:
            known = ", ".join(sorted(PROVIDER_TYPES))
            raise ValueError(
                f"{v} is not supported by Rheostat yet: the Provider types it sends are {known}; keep this "
                "object for a Flux cluster"
            )
        return v


class Provider(Strict):
    apiVersion: Literal["notification.toolkit.fluxcd.io/v1beta3", "notification.toolkit.fluxcd.io/v1beta2"]
    kind: Literal["Provider"]
    metadata: ObjectMeta
    spec: ProviderSpec


class EventSource(Strict):
    """Flux's CrossNamespaceObjectReference: `name: '*'` takes every object of the kind (matchLabels then)."""

    kind: str
    name: str
    namespace: str | None = None
    apiVersion: str | None = None
    matchLabels: dict[str, str] = Field(default_factory=dict)


def _regexes(values: list[str]) -> list[str]:
    for v in values:
        try:
            re2.compile(v)
        except re2.error as exc:
            raise ValueError(f"{v!r} is not a regular expression (RE2, as Go's): {exc}") from None
    return values


class AlertSpec(Strict):
    providerRef: ProviderRef
    eventSources: list[EventSource] = Field(min_length=1)
    eventSeverity: Literal["info", "error"] = "info"
    inclusionList: list[str] = Field(default_factory=list)
    exclusionList: list[str] = Field(default_factory=list)
    eventMetadata: dict[str, str] = Field(default_factory=dict)
    summary: str | None = None  # v1beta2; v1beta3 uses eventMetadata.summary
    suspend: bool = False

    @field_validator("inclusionList", "exclusionList")
    @classmethod
    def _lists(cls, v: list[str]) -> list[str]:
        return _regexes(v)


class Alert(Strict):
    apiVersion: Literal["notification.toolkit.fluxcd.io/v1beta3", "notification.toolkit.fluxcd.io/v1beta2"]
    kind: Literal["Alert"]
    metadata: ObjectMeta
    spec: AlertSpec
