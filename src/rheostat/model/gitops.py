"""Flux's kinds: `GitRepository`, `Kustomization` and `Receiver`, with the fields Rheostat acts on."""

from __future__ import annotations

import re
from typing import Literal

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
    apiVersion: Literal["source.toolkit.fluxcd.io/v1"]
    kind: Literal["GitRepository"]
    metadata: ObjectMeta
    spec: GitRepositorySpec


class SourceRef(Strict):
    kind: Literal["GitRepository"]
    name: str
    namespace: str | None = None


class DependsOn(Strict):
    name: str
    namespace: str | None = None


class HealthCheck(Strict):
    apiVersion: str | None = None
    kind: str
    name: str
    namespace: str | None = None


class PostBuild(Strict):
    substitute: dict[str, str] = Field(default_factory=dict)

    @field_validator("substitute")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.fullmatch(r"[_a-zA-Z][_a-zA-Z0-9]*", name):
                raise ValueError(f"variable name {name!r} must match ^[_[:alpha:]][_[:alpha:][:digit:]]*$")
        return v


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
    force: bool = False

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
    apiVersion: Literal["kustomize.toolkit.fluxcd.io/v1"]
    kind: Literal["Kustomization"]
    metadata: ObjectMeta
    spec: KustomizationSpec


class ReceiverResource(Strict):
    apiVersion: str | None = None
    kind: Literal["GitRepository", "Kustomization"]
    name: str
    namespace: str | None = None


class ReceiverSpec(Strict):
    type: Literal["github", "gitlab", "generic-hmac", "generic"]
    secretRef: LocalRef
    resources: list[ReceiverResource] = Field(min_length=1)
    events: list[str] = Field(default_factory=list)


class Receiver(Strict):
    apiVersion: Literal["notification.toolkit.fluxcd.io/v1"]
    kind: Literal["Receiver"]
    metadata: ObjectMeta
    spec: ReceiverSpec
