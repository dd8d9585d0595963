"""The Platform family: where workloads run (local processes, Kubernetes Deployments)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
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


class TargetMoved(PlatformError):
    """Promotion of a revision the target no longer declares (it changed after the analysis)."""


class Platform(Protocol):
    async def bind(self, canary: Canary) -> None:
        """The Canary that rolls out its target, first in every tick: a platform that needs its fields
        (targetRef.kind, service, autoscalerRef, ready thresholds) keeps them; others ignore it."""

    async def release(self, canary: Canary) -> None:
        """The Canary is gone: hand the target back as `revertOnDeletion` says, or leave it."""

    async def ensure_primary(self, target: ObjectKey) -> None:
        """Create the primary group from the target's current template if it does not exist."""

    async def revision(self, target: ObjectKey) -> str:
        """The revision (template hash) the target declares now."""

    async def primary_revision(self, target: ObjectKey) -> str | None:
        """The revision the primary is given (it may still be rolling out); None before ensure_primary."""

    async def is_ready(self, target: ObjectKey, group: Group) -> Readiness: ...

    async def promote(self, target: ObjectKey, revision: str) -> None:
        """Give the primary the target's template of `revision`, the one analysed.

        Idempotent: a primary that already has `revision` is left alone. Raises TargetMoved when the target
        declares another revision now, so a version that was never analysed is never promoted.
        """

    async def scale(self, target: ObjectKey, group: Group, replicas: int | None) -> None:
        """Scale a group; None means the target's declared replicas."""

    async def endpoints(self, target: ObjectKey, group: Group) -> tuple[Upstream, ...]: ...

    def tracked_configs(self, target: ObjectKey) -> dict[str, str]:
        """The configs whose change is a new revision, with a checksum each, as of the last `revision`
        (Flagger's `status.trackedConfigs`: `configmap/<name>` or `secret/<name>`); {} where none are."""
        ...
