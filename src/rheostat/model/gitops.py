"""Flux's kinds: `GitRepository`, `Kustomization` and `Receiver`, with the fields Rheostat acts on.

Every API version Flux still converts is read (model/flux.py warns about the deprecated ones); a Flux field
that is not here is refused by load.py with what to do instead."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from rheostat.model.base import ObjectMeta, Strict
from rheostat.util.durations import parse_duration


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class LocalRef(Strict):
    name: str


class GitRef(Strict):
    """Flux's precedence: branch < tag < semver < name < commit (commit may go with branch)."""

    branch: str | None = None
    tag: str | None = None
    semver: str | None = None
    name: str | None = None
    commit: str | None = Field(default=None, pattern=r"^[0-9a-f]{40}$")  # a full SHA-1, as Flux


class Verify(Strict):
    mode: Literal["HEAD", "head", "Tag", "TagAndHEAD"] = "HEAD"
    secretRef: LocalRef


class GitRepositorySpec(Strict):
    url: str
    ref: GitRef | None = None
    interval: str = "1m"
    timeout: str = "60s"
    secretRef: LocalRef | None = None
    ignore: str | None = None
    verify: Verify | None = None
    suspend: bool = False
    provider: Literal["generic"] = "generic"
    gitImplementation: str | None = None  # v1beta1/v1beta2, deprecated and without effect in Flux

    @field_validator("interval", "timeout")
    @classmethod
    def _durations(cls, v: str) -> str:
        return _duration(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if "://" not in v and ":" in v.split("/")[0] and "@" in v.split(":")[0]:
            raise ValueError(
                f"{v!r}: the scp-like form user@host:repo is not supported; use ssh://user@host/repo"
            )
        return v


class GitRepository(Strict):
    apiVersion: Literal[
        "source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2", "source.toolkit.fluxcd.io/v1beta1"
    ]
    kind: Literal["GitRepository"]
    metadata: ObjectMeta
    spec: GitRepositorySpec


class SourceRef(Strict):
    kind: str
    name: str
    namespace: str | None = None
    apiVersion: str | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v == "ExternalArtifact":
            raise ValueError(
                f"{v} is not supported by Rheostat yet: use a GitRepository, an OCIRepository or a Bucket"
            )
        if v not in ("GitRepository", "OCIRepository", "Bucket"):
            raise ValueError(
                f"{v!r}: a Kustomization's source is a GitRepository, an OCIRepository or a Bucket"
            )
        return v


class DependsOn(Strict):
    name: str
    namespace: str | None = None


class HealthCheck(Strict):
    apiVersion: str | None = None
    kind: str
    name: str
    namespace: str | None = None


class SubstituteReference(Strict):
    """A ConfigMap or Secret in the Kustomization's namespace whose keys are variables."""

    kind: Literal["ConfigMap", "Secret"]
    name: str
    optional: bool = False


class PostBuild(Strict):
    substitute: dict[str, str] = Field(default_factory=dict)
    substituteFrom: list[SubstituteReference] = Field(default_factory=list)

    @field_validator("substitute")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[_a-zA-Z][_a-zA-Z0-9]*", name):
                raise ValueError(f"variable name {name!r} must match ^[_[:alpha:]][_[:alpha:][:digit:]]*$")
        return v


class Selector(Strict):
    """kustomize's patch target; name, namespace and the selectors are as kustomize reads them (regex)."""

    group: str | None = None
    version: str | None = None
    kind: str | None = None
    name: str | None = None
    namespace: str | None = None
    labelSelector: str | None = None
    annotationSelector: str | None = None


class Patch(Strict):
    patch: str
    target: Selector | None = None


class Json6902Patch(Strict):  # v1beta1/v1beta2, deprecated
    patch: list[dict[str, Any]]
    target: Selector


class Image(Strict):
    name: str
    newName: str | None = None
    newTag: str | None = None
    digest: str | None = None


class CommonMetadata(Strict):
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Decryption(Strict):
    """Flux's SOPS decryption; the keys are age identities (entries ending in .agekey) of the Secret."""

    provider: Literal["sops"]
    secretRef: LocalRef


class KustomizationSpec(Strict):
    sourceRef: SourceRef
    prune: bool
    path: str = "./"
    interval: str = "10m"
    retryInterval: str | None = None
    timeout: str | None = None
    wait: bool = False
    healthChecks: list[HealthCheck] = Field(default_factory=list)
    dependsOn: list[DependsOn] = Field(default_factory=list)
    suspend: bool = False
    targetNamespace: str | None = None
    postBuild: PostBuild | None = None
    decryption: Decryption | None = None
    force: bool = False
    commonMetadata: CommonMetadata | None = None
    namePrefix: str | None = None
    nameSuffix: str | None = None
    patches: list[Patch] = Field(default_factory=list)
    images: list[Image] = Field(default_factory=list)
    components: list[str] = Field(default_factory=list)
    patchesStrategicMerge: list[dict[str, Any]] = Field(default_factory=list)  # deprecated (v1beta*)
    patchesJson6902: list[Json6902Patch] = Field(default_factory=list)  # deprecated (v1beta*)
    validation: str | None = None  # v1beta*, deprecated and without effect in Flux

    @property
    def needs_kustomize(self) -> bool:
        """Fields only kustomize applies: the path is then built through a kustomization.yaml."""
        return bool(
            self.namePrefix
            or self.nameSuffix
            or self.patches
            or self.images
            or self.components
            or self.patchesStrategicMerge
            or self.patchesJson6902
        )

    @field_validator("interval", "retryInterval", "timeout")
    @classmethod
    def _durations(cls, v: str | None) -> str | None:
        return None if v is None else _duration(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if v.startswith("/") or ".." in v.split("/"):
            raise ValueError(f"path {v!r} must stay inside the source (relative, no '..')")
        return v


class Kustomization(Strict):
    apiVersion: Literal[
        "kustomize.toolkit.fluxcd.io/v1",
        "kustomize.toolkit.fluxcd.io/v1beta2",
        "kustomize.toolkit.fluxcd.io/v1beta1",
    ]
    kind: Literal["Kustomization"]
    metadata: ObjectMeta
    spec: KustomizationSpec


class ReceiverResource(Strict):
    apiVersion: str | None = None
    kind: Literal["GitRepository", "OCIRepository", "Bucket", "Kustomization"]
    name: str
    namespace: str | None = None


class ReceiverSpec(Strict):
    type: Literal["github", "gitlab", "generic-hmac", "generic"]
    secretRef: LocalRef
    resources: list[ReceiverResource] = Field(min_length=1)
    events: list[str] = Field(default_factory=list)


class Receiver(Strict):
    apiVersion: Literal[
        "notification.toolkit.fluxcd.io/v1",
        "notification.toolkit.fluxcd.io/v1beta2",
        "notification.toolkit.fluxcd.io/v1beta1",
    ]
    kind: Literal["Receiver"]
    metadata: ObjectMeta
    spec: ReceiverSpec
