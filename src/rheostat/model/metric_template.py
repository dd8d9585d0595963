"""Flagger's MetricTemplate: a query against a metrics provider."""

from __future__ import annotations

from typing import Literal

from rheostat.model.base import ObjectMeta, Strict

ProviderType = Literal[
    "prometheus",
    "influxdb",
    "datadog",
    "stackdriver",
    "cloudwatch",
    "newrelic",
    "graphite",
    "dynatrace",
    "keptn",
    "splunk",
    "externalmetrics",
    "builtin",
]


class SecretRef(Strict):
    name: str


class MetricProviderSpec(Strict):
    type: ProviderType
    address: str | None = None
    headers: dict[str, list[str]] | None = None
    secretRef: SecretRef | None = None
    region: str | None = None
    insecureSkipVerify: bool | None = None


class MetricTemplateSpec(Strict):
    provider: MetricProviderSpec
    query: str


class MetricTemplate(Strict):
    apiVersion: Literal["flagger.app/v1beta1"]
    kind: Literal["MetricTemplate"]
    metadata: ObjectMeta
    spec: MetricTemplateSpec
