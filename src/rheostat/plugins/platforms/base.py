"""The Platform family: where workloads run (local processes, Kubernetes Deployments)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from rheostat.model.base import ObjectKey
from rheostat.plugins.routers.base import Upstream


class Group(enum.StrEnum):
    PRIMARY = "primary"
    CANARY = "canary"


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str = ""
    not_ready_since: float | None = None  # monotonic-free wall time (time.time()) the group became not ready
    fatal: bool = False  # cannot become ready without a change (command not found, crash loop)


class PlatformError(Exception):
    """The platform could not carry out a request."""


class Platform(Protocol):
    async def ensure_primary(self, target: ObjectKey) -> None:
        """Create the primary group from the target's current template if it does not exist."""

    async def revision(self, target: ObjectKey) -> str:
        """The revision (template hash) the target declares now."""

    async def is_ready(self, target: ObjectKey, group: Group) -> Readiness: ...

    async def promote(self, target: ObjectKey) -> None:
        """Give the primary the target's template. Idempotent: promoting the same revision twice is a no-op."""

    async def scale(self, target: ObjectKey, group: Group, replicas: int | None) -> None:
        """Scale a group; None means the target's declared replicas."""

    async def endpoints(self, target: ObjectKey, group: Group) -> tuple[Upstream, ...]: ...
