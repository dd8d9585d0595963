"""Router plugins and their registry."""

from __future__ import annotations

from typing import Any

from rheostat.plugins.registry import Registry
from rheostat.plugins.routers.base import Router
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.plugins.routers.nop import NopRouter

ROUTERS: Registry[Router] = Registry("router")


def _envoy(**settings: Any) -> Router:
    from rheostat.plugins.routers.envoy import EnvoyRouter  # only pulled in when asked for

    return EnvoyRouter(**settings)


ROUTERS.register("memory", lambda **_: MemoryRouter())
ROUTERS.register("nop", lambda **_: NopRouter())
ROUTERS.register("envoy", _envoy)


def _istio(**settings: Any) -> Router:
    from rheostat.plugins.routers.istio import IstioRouter  # only pulled in when asked for

    return IstioRouter(**settings)


def _gatewayapi(**settings: Any) -> Router:
    from rheostat.plugins.routers.gatewayapi import GatewayAPIRouter  # only pulled in when asked for

    return GatewayAPIRouter(**settings)


ROUTERS.register("istio", _istio)
ROUTERS.register("gatewayapi", _gatewayapi)
ROUTERS.register("gatewayapi:v1", _gatewayapi)
