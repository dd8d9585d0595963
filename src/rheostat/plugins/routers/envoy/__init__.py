"""The Envoy router: one local Envoy process, one listener per canary, routing via filesystem xDS."""

from rheostat.plugins.routers.envoy.router import EnvoyRouter

__all__ = ["EnvoyRouter"]
