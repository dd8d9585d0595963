"""The local platform: each workload's primary and canary as supervised processes on loopback ports."""

from rheostat.plugins.platforms.local.platform import LocalPlatform
from rheostat.plugins.platforms.local.status import GroupStatus, ReplicaStatus, WorkloadStatus

__all__ = ["GroupStatus", "LocalPlatform", "ReplicaStatus", "WorkloadStatus"]
