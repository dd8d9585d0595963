"""What `LocalPlatform.status()` reports: plain frozen values, safe to hand to a CLI or an API."""

from __future__ import annotations

from dataclasses import dataclass

from rheostat.model.base import ObjectKey
from rheostat.plugins.platforms.base import Group


@dataclass(frozen=True)
class ReplicaStatus:
    index: int
    pid: int | None  # None while waiting to be restarted
    port: int
    revision: str
    ready: bool
    restarts: int
    retiring: bool = False  # out of the endpoints, draining before it is stopped
    message: str = ""


@dataclass(frozen=True)
class GroupStatus:
    group: Group
    revision: str | None  # the template the group should run; None when the group does not exist
    desired: int
    ready: bool
    replicas: tuple[ReplicaStatus, ...]
    message: str = ""


@dataclass(frozen=True)
class WorkloadStatus:
    key: ObjectKey
    revision: str  # the template the workload declares now (the target)
    managed: bool  # a Canary drives promotions; otherwise templates roll out to the primary directly
    primary: GroupStatus
    canary: GroupStatus
