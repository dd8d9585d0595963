"""An OCIRepository fetched from a registry: the `flux push artifact` format, as Flux's source-controller.

One fetch resolves the ref (digest > semver > tag > `latest`) to a manifest digest with one HEAD (or a tag
list for semver). When an artifact of that digest made with the same rules is already on disk nothing more is
asked, also after a restart. Otherwise the manifest and the selected layer are pulled, each checked against
its digest, the signature verified when asked, and the gzip tarball unpacked (safely: archive.py) into
`<workdir>/ocirepository/<ns>/<name>/artifacts/<digest hex>`. Only the newest artifact is kept, and one that
fails any check leaves the previous one in place.

The revision is Flux's: `<tag>@sha256:<hex>`, or `sha256:<hex>` for a digest ref.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import httpx

from rheostat.gitops import git_ignore, oci_verify
from rheostat.gitops.archive import MAX_BYTES, ArchiveError, extract_tgz
from rheostat.gitops.git_refs import best_tag
from rheostat.gitops.git_types import GitError
from rheostat.gitops.oci_registry import (
    DOCKER_LIST,
    OCI_INDEX,
    Registry,
    RegistryError,
    client_tls,
    docker_config_auth,
    parse_url,
)
from rheostat.gitops.sources import Fetched, FetchError, SecretLookup
from rheostat.model.sources import OCIRepository
from rheostat.util.durations import parse_duration

FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
SOURCE_ANNOTATION = "org.opencontainers.image.source"
REVISION_ANNOTATION = "org.opencontainers.image.revision"
MAX_BLOB = MAX_BYTES  # compressed; the uncompressed bound is archive.MAX_BYTES


class OCIFetcher:
    def __init__(
        self, workdir: Path, secrets: SecretLookup, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.transport = transport
        self.last_requests = 0  # round trips of the last fetch (bench/oci.py reports them)

    async def preview(self, repo: OCIRepository) -> Fetched:
        return await self.fetch(repo, None, workdir=self.workdir / ".preview")

    async def fetch(
        self, repo: OCIRepository, last: Fetched | None, *, workdir: Path | None = None
    ) -> Fetched:
        del last  # the stamp beside each artifact is the record, as for git
        where = (workdir or self.workdir) / "ocirepository" / repo.metadata.namespace / repo.metadata.name
        try:
            return await self._fetch(repo, where.resolve())
        except RegistryError as exc:
            raise FetchError(exc.reason, f"{exc.field}: {exc}") from None
        except ArchiveError as exc:
            raise FetchError("OCIArtifactLayerOperationFailed", f"spec.layerSelector: {exc}") from None

    def _secret(self, repo: OCIRepository, name: str, field: str) -> dict[str, str]:
        try:
            data = self.secrets(repo.metadata.namespace, name)
        except (ValueError, OSError) as exc:
            raise RegistryError("AuthenticationFailed", f"secret {name}: {exc}", field) from None
        if data is None:
            raise RegistryError(
                "AuthenticationFailed", f"secret {repo.metadata.namespace}/{name} not found", field
            )
        return dict(data)

    def _credentials(self, repo: OCIRepository, host: str) -> tuple[str, str] | None:
        if repo.spec.secretRef is None:
            return None
        name = repo.spec.secretRef.name
        try:
            found = docker_config_auth(self._secret(repo, name, "spec.secretRef"), host)
        except ValueError as exc:
            raise RegistryError(
                "AuthenticationFailed", f"secret {repo.metadata.namespace}/{name} {exc}", "spec.secretRef"
            ) from None
        if found is None:
            raise RegistryError(
                "AuthenticationFailed",
                f"secret {repo.metadata.namespace}/{name} has no credentials for {host}",
                "spec.secretRef",
            )
        return found

    async def _fetch(self, repo: OCIRepository, where: Path) -> Fetched:
        spec = repo.spec
        ref = parse_url(spec.url, spec.insecure)
        verify_keys: list[tuple[str, object]] | None = None
        signers = ""  # the Secret holding the trusted keys, as "namespace/name"
        if spec.verify is not None and spec.verify.secretRef is not None:
            secret = spec.verify.secretRef.name
            signers = f"{repo.metadata.namespace}/{secret}"
            try:
                verify_keys = oci_verify.public_keys(self._secret(repo, secret, "spec.verify.secretRef"))
            except ValueError as exc:
                raise RegistryError(
                    "VerificationFailed",
                    f"secret {repo.metadata.namespace}/{secret} {exc}",
                    "spec.verify.secretRef",
                ) from None
        rules = _rules(repo, verify_keys)
        tls = None
        if spec.certSecretRef is not None:
            name = spec.certSecretRef.name
            try:
                tls = client_tls(self._secret(repo, name, "spec.certSecretRef"))
            except ValueError as exc:
                raise RegistryError(
                    "AuthenticationFailed",
                    f"secret {repo.metadata.namespace}/{name} {exc}",
                    "spec.certSecretRef",
                ) from None
        async with Registry(
            ref, self._credentials(repo, ref.host), parse_duration(spec.timeout), self.transport, tls
        ) as reg:
            try:
                label, digest = await _resolve(reg, repo)
                revision = f"{label}@{digest}" if label else digest
                stamp = _Stamp.read(where, digest)
                if stamp is not None and stamp.rules == rules:
                    return Fetched(revision, stamp.path(where), stamp.message, stamp.verified_by)
                manifest, digest = await reg.manifest(digest, field="spec.ref")
                layer = _select(manifest, repo)
                verified_by = None
                if verify_keys is not None:
                    verified_by = await oci_verify.verify(reg, digest, verify_keys, signers)
                message = _message(manifest)
                path = await self._pull(reg, where, digest, layer, repo)
            finally:
                self.last_requests = reg.requests
        _Stamp(digest, rules, verified_by, message).write(where)
        _prune(where, keep=digest)
        return Fetched(revision, path, message, verified_by)

    async def _pull(
        self, reg: Registry, where: Path, digest: str, layer: dict[str, Any], repo: OCIRepository
    ) -> Path:
        store = where / "artifacts"
        store.mkdir(parents=True, exist_ok=True)
        hex_ = digest.removeprefix("sha256:")
        scratch = Path(tempfile.mkdtemp(prefix=f".{hex_[:12]}.", dir=store))
        try:
            blob = scratch / "layer.tgz"
            await reg.blob_to(str(layer.get("digest")), blob, MAX_BLOB)
            tree = scratch / "tree"
            tree.mkdir()
            try:
                await asyncio.to_thread(extract_tgz, blob, tree)
            except ArchiveError as exc:
                raise ArchiveError(
                    f"layer {layer.get('digest')} of {digest}: {exc}; nothing was extracted"
                ) from None
            if repo.spec.layerSelector is None or repo.spec.layerSelector.operation == "extract":
                await asyncio.to_thread(git_ignore.apply, tree, repo.spec.ignore)
            dest = store / hex_
            shutil.rmtree(dest, ignore_errors=True)
            tree.rename(dest)
            return dest
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


async def _resolve(reg: Registry, repo: OCIRepository) -> tuple[str, str]:
    """(tag or "", manifest digest); Flux's precedence: digest > semver > tag > latest."""
    ref = repo.spec.ref
    if ref is not None and ref.digest:
        return "", ref.digest
    if ref is not None and ref.semver:
        tags = await reg.tags()
        if ref.semverFilter:
            pattern = re.compile(ref.semverFilter)
            tags = [t for t in tags if pattern.search(t)]
        try:
            tag = best_tag(ref.semver, tags)
        except GitError as exc:
            raise RegistryError(
                "OCIArtifactPullFailed", f"{exc.message} in {reg.ref.url}", "spec.ref.semver"
            ) from None
    else:
        tag = ref.tag if ref is not None and ref.tag else "latest"
    digest = await reg.manifest_digest(tag)
    if digest is None:  # the registry did not say: the manifest itself tells
        _, digest = await reg.manifest(tag)
    return tag, digest


def _select(manifest: dict[str, Any], repo: OCIRepository) -> dict[str, Any]:
    if manifest.get("mediaType") in (OCI_INDEX, DOCKER_LIST) or "manifests" in manifest:
        raise RegistryError(
            "OCIArtifactPullFailed",
            f"{repo.spec.url} points at an image index (multi-platform image), not an artifact",
            "spec.ref",
        )
    layers = [layer for layer in manifest.get("layers") or [] if isinstance(layer, dict)]
    if not layers:
        raise RegistryError("OCIArtifactPullFailed", "the artifact has no layers", "spec.ref")
    selector = repo.spec.layerSelector
    if selector is None or not selector.mediaType:
        return layers[0]
    for layer in layers:
        if layer.get("mediaType") == selector.mediaType:
            return layer
    have = ", ".join(sorted({str(layer.get("mediaType")) for layer in layers}))
    raise RegistryError(
        "OCIArtifactLayerOperationFailed",
        f"no layer of media type {selector.mediaType!r} (the artifact has {have})",
        "spec.layerSelector.mediaType",
    )


def _message(manifest: dict[str, Any]) -> str:
    notes = manifest.get("annotations") or {}
    source, revision = notes.get(SOURCE_ANNOTATION), notes.get(REVISION_ANNOTATION)
    if source and revision:
        return f"{source}@{revision}"
    return str(revision or source or "")


def _rules(repo: OCIRepository, keys: list[tuple[str, object]] | None) -> str:
    """What an artifact on disk depends on besides the digest: ignore rules, layer choice, verification."""
    selector = repo.spec.layerSelector
    blob = json.dumps(
        [
            repo.spec.ignore,
            selector.model_dump() if selector else None,
            [(n, oci_verify.fingerprint(k)) for n, k in keys] if keys is not None else None,
        ]
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _prune(where: Path, keep: str) -> None:
    hex_ = keep.removeprefix("sha256:")
    for entry in (where / "artifacts").iterdir():
        if entry.name in (hex_, f"{hex_}.json"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class _Stamp:
    """Written beside an artifact: what it was made with, so an unchanged digest is not pulled again."""

    digest: str
    rules: str
    verified_by: str | None
    message: str

    def path(self, where: Path) -> Path:
        return where / "artifacts" / self.digest.removeprefix("sha256:")

    @classmethod
    def read(cls, where: Path, digest: str) -> _Stamp | None:
        file = where / "artifacts" / f"{digest.removeprefix('sha256:')}.json"
        try:
            stamp = cls(**json.loads(file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return stamp if stamp.digest == digest and stamp.path(where).is_dir() else None

    def write(self, where: Path) -> None:
        file = where / "artifacts" / f"{self.digest.removeprefix('sha256:')}.json"
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(file)
