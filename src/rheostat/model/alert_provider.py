"""Flagger's AlertProvider, plus a generic JSON webhook signed with HMAC-SHA256."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from rheostat.model.base import ObjectMeta, Strict
from rheostat.model.metric_template import SecretRef

AlertType = Literal["slack", "msteams", "discord", "rocket", "gchat", "webhook"]


class AlertProviderSpec(Strict):
    type: AlertType
    channel: str = "general"
    username: str = "flagger"
    address: str | None = None
    proxy: str | None = None
    secretRef: SecretRef | None = None

    @model_validator(mode="after")
    def _where(self) -> AlertProviderSpec:
        if self.address is None and self.secretRef is None:
            raise ValueError("address: set address or secretRef (a secret with an `address` key)")
        return self


class AlertProvider(Strict):
    apiVersion: Literal["flagger.app/v1beta1"]
    kind: Literal["AlertProvider"]
    metadata: ObjectMeta
    spec: AlertProviderSpec
