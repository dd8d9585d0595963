"""The application's per-variant counters, as a flag Canary's builtin checks read them."""

from __future__ import annotations

import math

import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.app_counters import AppCountersProvider, VariantTarget, parse_app_metrics
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.envoy_stats import quantile

PROCESS_A = """# TYPE feature_flag_requests_total counter
feature_flag_requests_total{flag="new-checkout",variant="on"} 10
feature_flag_requests_total{flag="new-checkout",variant="off"} 90
feature_flag_requests_total{flag="other",variant="on"} 1000
feature_flag_request_errors_total{flag="new-checkout",variant="on"} 4
feature_flag_request_duration_seconds_bucket{flag="new-checkout",variant="on",le="0.1"} 6
feature_flag_request_duration_seconds_bucket{flag="new-checkout",variant="on",le="1.0"} 9
feature_flag_request_duration_seconds_bucket{flag="new-checkout",variant="on",le="+Inf"} 10
process_start_time_seconds 1000.0
"""
PROCESS_B = """feature_flag_requests_total{flag="new-checkout",variant="on"} 5
feature_flag_request_errors_total{flag="new-checkout",variant="on"} 1
process_start_time_seconds 1100.0
"""


def test_samples_of_every_process_are_summed_per_variant_for_the_one_flag() -> None:
    scrape = parse_app_metrics([PROCESS_A, PROCESS_B], "new-checkout", at=5.0, now_wall=1200.0)
    assert scrape.counters == {"on.requests": 15, "off.requests": 90, "on.errors": 5}
    h = scrape.histograms["on.duration"]
    assert h.bounds == (100.0, 1000.0, math.inf) and h.cumulative == (6, 9, 10)
    assert quantile(0.5, h) == pytest.approx(100 * 5 / 6)
    assert quantile(0.99, h) == 1000.0  # past the last finite bound: that bound, as Prometheus answers
    assert scrape.uptime_s == 100.0  # the newest process bounds what a window can have counted
    assert parse_app_metrics(["x 1\n"], "new-checkout", 0, 0).uptime_s == math.inf


async def test_no_application_or_no_traffic_is_a_clear_failure_never_a_pass() -> None:
    key = ObjectKey("shop/checkout")

    async def none() -> dict[ObjectKey, VariantTarget]:
        return {}

    provider = AppCountersProvider(none)
    try:
        with pytest.raises(ProviderError, match="appRef"):
            await provider.query(MetricQuery(key, "request-success-rate", 10))
        with pytest.raises(ProviderError, match="unknown metric"):
            await provider.query(MetricQuery(key, "cpu", 10))
    finally:
        await provider.stop()

    async def nobody_home() -> dict[ObjectKey, VariantTarget]:
        return {key: VariantTarget(key, "new-checkout", "on", "off", ("http://127.0.0.1:9/metrics",))}

    provider = AppCountersProvider(nobody_home)
    try:
        with pytest.raises(ProviderError, match="cannot read"):
            await provider.query(MetricQuery(key, "request-success-rate", 10))
    finally:
        await provider.stop()

    async def unknown_variant() -> dict[ObjectKey, VariantTarget]:
        return {key: VariantTarget(key, "new-checkout", None, "off", ("http://127.0.0.1:9/metrics",))}

    provider = AppCountersProvider(unknown_variant)
    try:
        with pytest.raises(NoData):
            await provider.query(MetricQuery(key, "request-success-rate", 10))
    finally:
        await provider.stop()
