"""Metric provider plugins and their registry."""

from __future__ import annotations

from typing import Any

from rheostat.plugins.metrics.base import MetricProvider
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.registry import Registry

METRICS: Registry[MetricProvider] = Registry("metrics provider")


def _envoy_stats(**settings: Any) -> MetricProvider:
    from rheostat.plugins.metrics.envoy_stats import EnvoyStatsProvider

    return EnvoyStatsProvider(**settings)


def _prometheus(**settings: Any) -> MetricProvider:
    from rheostat.plugins.metrics.prometheus import PrometheusProvider

    return PrometheusProvider(**settings)


METRICS.register("memory", lambda **kw: MemoryMetrics(**kw))
METRICS.register("builtin", _envoy_stats)
METRICS.register("prometheus", _prometheus)
