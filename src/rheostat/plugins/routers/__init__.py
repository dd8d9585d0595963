"""Router plugins and their registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from rheostat.plugins.registry import Registry
from rheostat.plugins.routers.base import Router
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.plugins.routers.nop import NopRouter

ROUTERS: Registry[Router] = Registry("router")


def _envoy(**settings: Any) -> Router:
    from rheostat.plugins.routers.envoy import EnvoyRouter  # only pulled in when asked for

    return EnvoyRouter(**settings)


def _smi(version: Literal["v1alpha2", "v1alpha3"], name: str | None = None) -> Callable[..., Router]:
    def make(*, api: Any, **settings: Any) -> Router:
        from rheostat.plugins.routers.smi import SMIRouter

        return SMIRouter(api, version, name=name or f"smi:{version}", **settings)

    return make


def _nginx(*, api: Any, **settings: Any) -> Router:
    from rheostat.plugins.routers.nginx import NginxRouter

    return NginxRouter(api, **settings)


def _kubernetes(*, api: Any, **settings: Any) -> Router:
    from rheostat.plugins.routers.kubernetes import KubernetesRouter

    return KubernetesRouter(api, **settings)


def _istio(**settings: Any) -> Router:
    from rheostat.plugins.routers.istio import IstioRouter  # only pulled in when asked for

    return IstioRouter(**settings)


def _gatewayapi(version: Literal["v1", "v1beta1"]) -> Callable[..., Router]:
    def make(**settings: Any) -> Router:
        from rheostat.plugins.kube.kinds import HTTPROUTE, HTTPROUTE_V1BETA1
        from rheostat.plugins.routers.gatewayapi import GatewayAPIRouter  # only pulled in when asked for

        return GatewayAPIRouter(**settings, kind=HTTPROUTE if version == "v1" else HTTPROUTE_V1BETA1)

    return make


ROUTERS.register("memory", lambda **_: MemoryRouter())
ROUTERS.register("nop", lambda **_: NopRouter())
ROUTERS.register("envoy", _envoy)
ROUTERS.register("istio", _istio)
ROUTERS.register("gatewayapi", _gatewayapi("v1"))
ROUTERS.register("gatewayapi:v1", _gatewayapi("v1"))
ROUTERS.register("gatewayapi:v1beta1", _gatewayapi("v1beta1"))
ROUTERS.register("smi:v1alpha2", _smi("v1alpha2"))
ROUTERS.register("smi:v1alpha3", _smi("v1alpha3"))
ROUTERS.register("linkerd", _smi("v1alpha2", "linkerd"))  # Linkerd's SMI extension serves v1alpha2
ROUTERS.register("nginx", _nginx)
ROUTERS.register("kubernetes", _kubernetes)
