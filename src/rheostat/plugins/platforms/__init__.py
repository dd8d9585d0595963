"""Platform plugins and their registry."""

from __future__ import annotations

from typing import Any

from rheostat.plugins.platforms.base import Platform
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.registry import Registry

PLATFORMS: Registry[Platform] = Registry("platform")


def _local(**settings: Any) -> Platform:
    from rheostat.plugins.platforms.local import LocalPlatform

    return LocalPlatform(**settings)


def _kubernetes(**settings: Any) -> Platform:
    from rheostat.plugins.platforms.kubernetes import KubernetesPlatform

    return KubernetesPlatform(**settings)  # api=KubeAPI, optional clock=


PLATFORMS.register("memory", lambda **_: MemoryPlatform())
PLATFORMS.register("local", _local)
PLATFORMS.register("kubernetes", _kubernetes)
