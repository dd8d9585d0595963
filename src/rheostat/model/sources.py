"""Flux's artifact sources besides Git: `OCIRepository` (an OCI artifact in a registry) and `Bucket` (S3).

Every API version Flux still converts is read (model/flux.py warns about the deprecated ones). What Rheostat
cannot do is refused by name: cloud identity providers (no workload identity here), proxies, notation."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rheostat.model.base import ObjectMeta, Strict
from rheostat.model.gitops import LocalRef
from rheostat.util.durations import parse_duration

FLUX_LAYER = "application/vnd.cncf.flux.content.v1.tar+gzip"


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class OCIRef(Strict):
    """Flux's precedence: tag < semver < digest (the later field wins); nothing set means `latest`."""

    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    semver: str | None = None
    semverFilter: str | None = None
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")

    @field_validator("semverFilter")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"{v!r} is not a regular expression: {exc}") from None
        return v


class LayerSelector(Strict):
    mediaType: str | None = None
    operation: Literal["extract", "copy"] = "extract"


class OIDCIdentity(Strict):
    issuer: str
    subject: str


class OCIVerify(Strict):
    provider: Literal["cosign", "notation"] = "cosign"
    secretRef: LocalRef | None = None
    matchOIDCIdentity: list[OIDCIdentity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _supported(self) -> OCIVerify:
        if self.provider == "notation":
            raise ValueError(
                "provider: notation is not supported by Rheostat yet: there is no maintained Python "
                "verifier of Notation signatures; sign with cosign and a key (verify.secretRef)"
            )
        if self.secretRef is None:
            raise ValueError(
                "secretRef: cosign keyless verification is not supported by Rheostat yet: it needs the "
                "Sigstore public-good trust root and Rekor online; sign with a key and list its public key "
                "(`*.pub`) in a Secret named by verify.secretRef"
            )
        return self


def _oci_url(v: str) -> str:
    if not v.startswith("oci://"):
        raise ValueError(f"{v!r} must start with oci://")
    rest = v[len("oci://") :]
    host, _, repo = rest.partition("/")
    if not host or not repo:
        raise ValueError(f"{v!r} must be oci://<host>[:<port>]/<repository>")
    if "@" in repo or ":" in repo:
        raise ValueError(f"{v!r} must not hold a tag or digest; put it in spec.ref")
    if not re.fullmatch(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*", repo):
        raise ValueError(f"{v!r}: repository {repo!r} is not a valid OCI repository name")
    return v


class OCIRepositorySpec(Strict):
    url: str
    ref: OCIRef | None = None
    layerSelector: LayerSelector | None = None
    provider: Literal["generic", "aws", "azure", "gcp"] = "generic"
    secretRef: LocalRef | None = None
    certSecretRef: LocalRef | None = None  # ca.crt, tls.crt and tls.key
    verify: OCIVerify | None = None
    interval: str = "5m"
    timeout: str = "60s"
    ignore: str | None = None
    insecure: bool = False
    suspend: bool = False

    @field_validator("interval", "timeout")
    @classmethod
    def _durations(cls, v: str) -> str:
        return _duration(v)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _oci_url(v)

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        if v != "generic":
            raise ValueError(
                f"provider {v!r} is not supported by Rheostat yet: it signs in with the cloud's workload "
                "identity, which Rheostat does not have; use provider: generic with a docker-config Secret "
                "in spec.secretRef"
            )
        return v


class OCIRepository(Strict):
    apiVersion: Literal["source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2"]
    kind: Literal["OCIRepository"]
    metadata: ObjectMeta
    spec: OCIRepositorySpec


class BucketSpec(Strict):
    bucketName: str = Field(min_length=3, max_length=63)
    endpoint: str
    provider: Literal["generic", "aws", "gcp", "azure"] = "generic"
    region: str | None = None
    prefix: str | None = None
    insecure: bool = False
    secretRef: LocalRef | None = None
    certSecretRef: LocalRef | None = None  # ca.crt, tls.crt and tls.key
    interval: str = "5m"
    timeout: str = "60s"
    ignore: str | None = None
    suspend: bool = False

    @field_validator("interval", "timeout")
    @classmethod
    def _durations(cls, v: str) -> str:
        return _duration(v)

    @field_validator("provider")
    @classmethod
    def _provider(cls, v: str) -> str:
        if v in ("gcp", "azure"):
            raise ValueError(
                f"provider {v!r} is not supported by Rheostat yet: only S3-compatible buckets are read; "
                "use provider: generic against the store's S3-compatible endpoint (GCS offers one, with "
                "HMAC keys in spec.secretRef)"
            )
        return v

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, v: str) -> str:
        if "://" in v and not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r}: an endpoint is host[:port], or an http(s):// URL")
        if not v.split("://")[-1].split("/")[0]:
            raise ValueError(f"{v!r} has no host")
        return v


class Bucket(Strict):
    apiVersion: Literal[
        "source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2", "source.toolkit.fluxcd.io/v1beta1"
    ]
    kind: Literal["Bucket"]
    metadata: ObjectMeta
    spec: BucketSpec
