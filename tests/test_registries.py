"""One registry per plugin family: known names build their plugin, an unknown name is an error naming it."""

from __future__ import annotations

import pytest

from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.metrics import METRICS
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.notifiers import NOTIFIERS
from rheostat.plugins.platforms import PLATFORMS
from rheostat.plugins.platforms.kubernetes import KubernetesPlatform
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.registry import Registry, UnknownPlugin
from rheostat.plugins.routers import ROUTERS
from rheostat.plugins.routers.istio import IstioRouter
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.rollout.judges import JUDGES, ThresholdJudge


def test_each_family_lists_its_plugins() -> None:
    assert {
        "memory",
        "nop",
        "envoy",
        "istio",
        "gatewayapi:v1",
        "gatewayapi:v1beta1",
        "smi:v1alpha2",
        "smi:v1alpha3",
        "linkerd",
        "nginx",
        "kubernetes",
    } <= set(ROUTERS.names())
    assert {"memory", "local", "kubernetes"} <= set(PLATFORMS.names())
    assert {"memory", "builtin", "prometheus"} <= set(METRICS.names())
    assert {"slack", "msteams", "discord", "rocket", "gchat", "webhook"} == set(NOTIFIERS.names())
    assert {"threshold", "sequential"} <= set(JUDGES.names())


def test_known_names_build_their_plugin() -> None:
    assert isinstance(ROUTERS.create("memory"), MemoryRouter)
    assert isinstance(PLATFORMS.create("memory"), MemoryPlatform)
    kube = MemoryKube()
    assert isinstance(ROUTERS.create("istio", api=kube), IstioRouter)
    assert isinstance(PLATFORMS.create("kubernetes", api=kube), KubernetesPlatform)
    assert isinstance(METRICS.create("memory"), MemoryMetrics)
    assert isinstance(JUDGES.create("threshold"), ThresholdJudge)


def test_an_unknown_name_is_an_error_that_names_it_never_a_fallback() -> None:
    with pytest.raises(
        UnknownPlugin, match=r"unknown router 'kuma'; known: envoy, gatewayapi, gatewayapi:v1, "
    ):
        ROUTERS.create("kuma")
    with pytest.raises(UnknownPlugin, match="unknown judge 'bayes'"):
        JUDGES.create("bayes")


def test_a_name_is_registered_once() -> None:
    r: Registry[int] = Registry("thing")
    r.register("a", lambda: 1)
    with pytest.raises(ValueError, match="registered twice"):
        r.register("a", lambda: 2)
