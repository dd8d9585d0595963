"""MetricTemplate providers: one kind per `spec.provider.type`, each made for one template.

A kind says what a template of its type needs before anything runs (`problems`: `validate`, the GitOps
checks) and makes the MetricProvider that answers the template's query (`make`). Kinds live in SOURCES; an
unknown type is an error that names the known ones. `builtin` is not a kind here: it is the controller's
own builtin checks (reactor/controller.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.kube.api import KubeAPI
from rheostat.plugins.metrics.base import MetricProvider
from rheostat.plugins.registry import Registry


@dataclass(frozen=True)
class SourceContext:
    """What a kind may use to make a provider for one template."""

    spec: MetricProviderSpec
    namespace: str  # the template's namespace (its secret lives there)
    secret: Mapping[str, str] | None  # the data of `spec.secretRef`, when it names one
    client: httpx.AsyncClient  # the controller's shared client for `spec.insecureSkipVerify`
    default_address: str | None = None  # the controller's --metrics-server (Prometheus-compatible)
    environ: Mapping[str, str] = field(default_factory=dict)  # credentials a provider reads from the env
    kube: KubeAPI | None = None  # the cluster's API when running against one (Keptn reads its objects)


Problem = tuple[str, str]  # (field under spec.provider, e.g. "address", what is wrong)


class SourceKind(Protocol):
    name: str

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        """What a template of this type lacks, checked on the spec alone (no I/O)."""

    def make(self, ctx: SourceContext) -> MetricProvider:
        """A provider for one template; ValueError (naming the field) when the context cannot make one."""


SOURCES: Registry[SourceKind] = Registry("metrics provider type")


def _lazy(module: str) -> Callable[[], SourceKind]:
    """The module's KIND, imported on first use: a provider's client library loads only when used."""

    def load() -> SourceKind:
        kind: SourceKind = importlib.import_module(f"rheostat.plugins.metrics.{module}").KIND
        return kind

    return load


SOURCES.register("prometheus", _lazy("prometheus"))
SOURCES.register("graphite", _lazy("graphite"))
SOURCES.register("influxdb", _lazy("influxdb"))
SOURCES.register("datadog", _lazy("datadog"))
SOURCES.register("newrelic", _lazy("newrelic"))
SOURCES.register("dynatrace", _lazy("dynatrace"))
SOURCES.register("cloudwatch", _lazy("cloudwatch"))
SOURCES.register("stackdriver", _lazy("stackdriver"))
SOURCES.register("splunk", _lazy("splunk"))
SOURCES.register("keptn", _lazy("keptn"))


def kind_of(type_name: str) -> SourceKind:
    """The kind for a provider type; UnknownPlugin (a LookupError) names the known ones."""
    return SOURCES.create(type_name)


def interval_format(type_name: str) -> Callable[[float], str] | None:
    """How a provider's queries write `{{ interval }}` when Flagger's (the metric's interval as written, e.g.
    `1m`) is not what the provider reads: a kind says so with an `interval(seconds) -> str` method."""
    try:
        kind = kind_of(type_name)
    except LookupError:
        return None
    found: Callable[[float], str] | None = getattr(kind, "interval", None)
    return found


def supported() -> list[str]:
    """Every type a template may name: the kinds, and the controller's `builtin`."""
    return [*SOURCES.names(), "builtin"]
