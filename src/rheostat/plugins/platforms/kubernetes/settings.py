"""What the platform keeps of a Canary per target, and the names Flagger gives the generated objects."""

from __future__ import annotations

from dataclasses import dataclass

from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import AutoscalerRef, Canary, Service
from rheostat.plugins.kube.api import Kind
from rheostat.plugins.kube.kinds import DAEMONSET, DEPLOYMENT
from rheostat.plugins.platforms.base import PlatformError

SUPPORTED: dict[str, Kind] = {"Deployment": DEPLOYMENT, "DaemonSet": DAEMONSET}
HPA_API_VERSION = "autoscaling/v2"


@dataclass(frozen=True)
class Bound:
    """One Canary's view of its target: kind, service, autoscaler and readiness settings."""

    canary: ObjectKey  # "ns/name" of the Canary
    namespace: str
    target: str  # targetRef.name
    kind: Kind
    service: Service
    autoscaler: AutoscalerRef | None
    primary_threshold: int  # percent of updated replicas that must be available
    canary_threshold: int
    deadline_s: int  # progressDeadlineSeconds
    revert: bool  # revertOnDeletion

    @property
    def key(self) -> ObjectKey:
        return object_key(self.namespace, self.target)

    @property
    def what(self) -> str:
        """How messages name the target: "Deployment ns/name"."""
        return f"{self.kind.kind} {self.namespace}/{self.target}"

    @property
    def primary(self) -> str:
        return f"{self.target}-primary"

    @property
    def apex(self) -> str:
        return self.service.name or self.target

    @property
    def primary_service(self) -> str:
        return f"{self.apex}-primary"

    @property
    def canary_service(self) -> str:
        return f"{self.apex}-canary"

    @property
    def primary_hpa(self) -> str | None:
        return f"{self.autoscaler.name}-primary" if self.autoscaler else None


def bound(canary: Canary) -> Bound:
    """The settings of `canary`, or PlatformError naming the field this platform cannot honour."""
    spec = canary.spec
    ref = spec.targetRef
    kind = SUPPORTED.get(ref.kind)
    if kind is None or ref.apiVersion != kind.api_version:
        raise PlatformError(
            f"targetRef: {ref.kind} {ref.apiVersion} is not supported by the kubernetes platform "
            f"(supported: {', '.join(f'{k} apps/v1' for k in SUPPORTED)})"
        )
    scaler = spec.autoscalerRef
    if scaler is not None and (
        scaler.kind != "HorizontalPodAutoscaler" or scaler.apiVersion != HPA_API_VERSION
    ):
        raise PlatformError(
            f"autoscalerRef: {scaler.kind} {scaler.apiVersion} is not supported by the kubernetes platform "
            f"(supported: HorizontalPodAutoscaler {HPA_API_VERSION})"
        )
    if scaler is not None and kind is DAEMONSET:
        raise PlatformError("autoscalerRef: a DaemonSet cannot be autoscaled")
    analysis = spec.the_analysis
    return Bound(
        canary=canary.metadata.key,
        namespace=canary.metadata.namespace,
        target=ref.name,
        kind=kind,
        service=spec.the_service,
        autoscaler=scaler,
        primary_threshold=analysis.primaryReadyThreshold,
        canary_threshold=analysis.canaryReadyThreshold,
        deadline_s=spec.progressDeadlineSeconds,
        revert=spec.revertOnDeletion,
    )
