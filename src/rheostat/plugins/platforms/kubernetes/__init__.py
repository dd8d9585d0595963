"""The `kubernetes` platform: apps/v1 Deployments and DaemonSets rolled out as Flagger does."""

from rheostat.plugins.platforms.kubernetes.platform import KubernetesPlatform

__all__ = ["KubernetesPlatform"]
