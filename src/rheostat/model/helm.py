"""Flux's Helm kinds: `HelmRepository`, `HelmChart` and `HelmRelease`, with the fields Rheostat acts on.

Every API version Flux still converts is read (model/flux.py warns about the deprecated ones); a Flux field
that is not here is refused by load.py with what to do instead (NOT_SUPPORTED_FIELDS in model/flux.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rheostat.model.base import ObjectMeta, Strict
from rheostat.model.gitops import DependsOn, LocalRef, Patch
from rheostat.util.durations import parse_duration

OCI_TODO = (
    "OCI Helm repositories are not supported by Rheostat yet: serve the chart from an HTTP chart repository "
    "(an index.yaml) or keep it in a GitRepository"
)
BUCKET_TODO = (
    "Bucket sources are not supported by Rheostat yet: keep the chart in a GitRepository or an HTTP chart "
    "repository"
)


def _duration(v: str | None) -> str | None:
    if v is not None:
        parse_duration(v)
    return v


# -- HelmRepository --------------------------------------------------------------------------------------


class HelmRepositorySpec(Strict):
    url: str
    type: Literal["default", "oci"] = "default"
    secretRef: LocalRef | None = None  # basic auth: `username` and `password`
    certSecretRef: LocalRef | None = None  # TLS: `ca.crt`, and `tls.crt` + `tls.key` for a client cert
    passCredentials: bool = False
    interval: str = "10m"
    timeout: str = "60s"
    suspend: bool = False
    provider: Literal["generic"] = "generic"

    @field_validator("interval", "timeout")
    @classmethod
    def _durations(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v == "oci":
            raise ValueError(OCI_TODO)
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v.startswith("oci://"):
            raise ValueError(OCI_TODO)
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: a Helm repository URL starts with https:// or http://")
        return v


class HelmRepository(Strict):
    apiVersion: Literal[
        "source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2", "source.toolkit.fluxcd.io/v1beta1"
    ]
    kind: Literal["HelmRepository"]
    metadata: ObjectMeta
    spec: HelmRepositorySpec


# -- HelmChart -------------------------------------------------------------------------------------------


class ChartSourceRef(Strict):
    kind: str
    name: str
    namespace: str | None = None  # in a HelmRelease's chart template only
    apiVersion: str | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v == "Bucket":
            raise ValueError(BUCKET_TODO)
        if v not in ("HelmRepository", "GitRepository"):
            raise ValueError(f"{v!r}: a chart comes from a HelmRepository, a GitRepository or a Bucket")
        return v


class ChartSpecFields(Strict):
    """What a HelmChart and a HelmRelease's `chart.spec` share."""

    chart: str = Field(min_length=1)
    version: str = "*"
    sourceRef: ChartSourceRef
    interval: str | None = None
    reconcileStrategy: Literal["ChartVersion", "Revision"] = "ChartVersion"
    valuesFiles: list[str] = Field(default_factory=list)
    valuesFile: str | None = None  # v1beta*, deprecated: valuesFiles
    ignoreMissingValuesFiles: bool = False

    @field_validator("interval")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return _duration(v)

    @field_validator("chart")
    @classmethod
    def _chart(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"chart {v!r} must stay inside the source (relative, no '..')")
        return v

    @property
    def values_files(self) -> list[str]:
        return [*([self.valuesFile] if self.valuesFile else []), *self.valuesFiles]


class HelmChartSpec(ChartSpecFields):
    suspend: bool = False


class HelmChart(Strict):
    apiVersion: Literal[
        "source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2", "source.toolkit.fluxcd.io/v1beta1"
    ]
    kind: Literal["HelmChart"]
    metadata: ObjectMeta
    spec: HelmChartSpec


# -- HelmRelease -----------------------------------------------------------------------------------------


class ChartTemplateMeta(Strict):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ChartTemplate(Strict):
    spec: ChartSpecFields
    metadata: ChartTemplateMeta | None = None


class ChartRef(Strict):
    kind: str
    name: str
    namespace: str | None = None
    apiVersion: str | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v == "OCIRepository":
            raise ValueError(
                "chartRef to an OCIRepository is not supported by Rheostat yet: refer to a HelmChart, or put "
                "the chart in chart.spec"
            )
        if v != "HelmChart":
            raise ValueError(f"{v!r}: chartRef names a HelmChart (or an OCIRepository)")
        return v


class Remediation(Strict):
    retries: int = 0  # negative: retry for ever
    remediateLastFailure: bool | None = None
    ignoreTestFailures: bool | None = None
    strategy: Literal["rollback", "uninstall"] = "rollback"  # upgrade only


class ActionStrategy(Strict):
    """RemediateOnFailure (the default): remediation with retries; RetryOnFailure: the action is retried."""

    name: Literal["RemediateOnFailure", "RetryOnFailure"] = "RemediateOnFailure"
    retryInterval: str | None = None

    @field_validator("retryInterval")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return _duration(v)


class _Action(Strict):
    """Helm action knobs: the ones that only tune Helm's work on a cluster are read and have no effect here."""

    timeout: str | None = None
    remediation: Remediation = Field(default_factory=Remediation)
    strategy: ActionStrategy = Field(default_factory=ActionStrategy)
    disableWait: bool | None = None
    disableWaitForJobs: bool | None = None
    disableHooks: bool | None = None
    disableOpenAPIValidation: bool | None = None
    disableTakeOwnership: bool | None = None
    crds: Literal["Skip", "Create", "CreateReplace"] | None = None
    serverSideApply: bool | None = None

    @field_validator("timeout")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return _duration(v)


class Install(_Action):
    createNamespace: bool | None = None
    replace: bool | None = None
    skipCRDs: bool | None = None


class Upgrade(_Action):
    force: bool | None = None
    preserveValues: bool | None = None
    cleanupOnFail: bool | None = None


class Rollback(Strict):
    timeout: str | None = None
    disableWait: bool | None = None
    disableWaitForJobs: bool | None = None
    disableHooks: bool | None = None
    recreate: bool | None = None
    force: bool | None = None
    cleanupOnFail: bool | None = None


class Uninstall(Strict):
    timeout: str | None = None
    disableHooks: bool | None = None
    keepHistory: bool = False
    disableWait: bool | None = None
    deletionPropagation: Literal["background", "foreground", "orphan"] | None = None


class Test(Strict):
    enable: bool = False
    ignoreFailures: bool | None = None
    timeout: str | None = None
    filters: list[dict[str, Any]] = Field(default_factory=list)


class DriftDetection(Strict):
    mode: Literal["enabled", "warn", "disabled"] = "disabled"


class ValuesReference(Strict):
    kind: Literal["ConfigMap", "Secret"]
    name: str
    valuesKey: str = "values.yaml"
    targetPath: str | None = None
    optional: bool = False


class Kustomize(Strict):
    patches: list[Patch] = Field(default_factory=list)
    patchesStrategicMerge: list[dict[str, Any]] = Field(default_factory=list)  # deprecated: patches
    images: list[dict[str, str]] = Field(default_factory=list)


class PostRenderer(Strict):
    kustomize: Kustomize | None = None


class HelmReleaseSpec(Strict):
    chart: ChartTemplate | None = None
    chartRef: ChartRef | None = None
    interval: str
    suspend: bool = False
    releaseName: str | None = Field(default=None, max_length=53)
    targetNamespace: str | None = None
    storageNamespace: str | None = None
    dependsOn: list[DependsOn] = Field(default_factory=list)
    timeout: str | None = None
    maxHistory: int = 5
    install: Install = Field(default_factory=Install)
    upgrade: Upgrade = Field(default_factory=Upgrade)
    test: Test = Field(default_factory=Test)
    rollback: Rollback = Field(default_factory=Rollback)
    uninstall: Uninstall = Field(default_factory=Uninstall)
    driftDetection: DriftDetection = Field(default_factory=DriftDetection)
    values: dict[str, Any] = Field(default_factory=dict)
    valuesFrom: list[ValuesReference] = Field(default_factory=list)
    postRenderers: list[PostRenderer] = Field(default_factory=list)

    @field_validator("interval", "timeout")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return _duration(v)

    @model_validator(mode="after")
    def _one_chart(self) -> HelmReleaseSpec:
        if (self.chart is None) == (self.chartRef is None):
            raise ValueError("give exactly one of chart (a chart template) and chartRef")
        return self


class HelmRelease(Strict):
    apiVersion: Literal[
        "helm.toolkit.fluxcd.io/v2", "helm.toolkit.fluxcd.io/v2beta2", "helm.toolkit.fluxcd.io/v2beta1"
    ]
    kind: Literal["HelmRelease"]
    metadata: ObjectMeta
    spec: HelmReleaseSpec

    @property
    def release_name(self) -> str:
        """Flux's default: `<targetNamespace>-<name>` when a target namespace is set, else the name."""
        if self.spec.releaseName:
            return self.spec.releaseName
        if self.spec.targetNamespace:
            return f"{self.spec.targetNamespace}-{self.metadata.name}"[:53]
        return self.metadata.name

    @property
    def release_namespace(self) -> str:
        return self.spec.targetNamespace or self.metadata.namespace
