"""Fetching sources: one fetcher per source kind (GitRepository, OCIRepository, Bucket), chosen by kind.

A GitRepository is fetched through real git, or read as a plain local folder; the other kinds have the
fetchers that `gitops/fetch.py` registers. Every fetcher gives back the same thing: a revision in Flux's form
and a folder holding the artifact, which a Kustomization builds from."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from rheostat.model.gitops import GitRepository
from rheostat.model.load import manifest_files
from rheostat.model.sources import Bucket, OCIRepository

Source = GitRepository | OCIRepository | Bucket
SOURCE_TYPES = (GitRepository, OCIRepository, Bucket)
SOURCE_KINDS = ("GitRepository", "OCIRepository", "Bucket")  # what a Kustomization's sourceRef may name
S_contra = TypeVar("S_contra", contravariant=True)


class FetchError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Fetched:
    # Flux's form: "main@sha1:<sha>"; "<tag>@sha256:<digest>" (OCI); "sha256:<digest>" (Bucket, folder)
    revision: str
    path: Path
    message: str = ""
    verified_by: str | None = None
    changed: tuple[str, ...] | None = None  # paths changed since `previous`; None when not known
    previous: str | None = None  # the revision `changed` is relative to


class Fetcher(Protocol[S_contra]):
    async def fetch(self, repo: S_contra, last: Fetched | None) -> Fetched: ...

    async def preview(self, repo: S_contra) -> Fetched:
        """What `fetch` would give now, without touching the artifact the source keeps (for `diff`)."""


SecretLookup = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> keys


def local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" not in url:
        return Path(url)
    return None


class FolderFetcher:
    """A plain folder (not a Git repository): its revision is a digest of its YAML files."""

    async def preview(self, repo: GitRepository) -> Fetched:
        return await self.fetch(repo, None)

    async def fetch(self, repo: GitRepository, last: Fetched | None) -> Fetched:
        root = local_path(repo.spec.url)
        if root is None or not root.is_dir():
            raise FetchError("GitOperationFailed", f"folder {repo.spec.url} does not exist")
        digest = hashlib.sha256()
        for f in manifest_files(root):
            digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
        return Fetched(f"sha256:{digest.hexdigest()[:16]}", root, f"folder {root}")


def is_git(url: str) -> bool:
    path = local_path(url)
    return path is None or (path / ".git").exists() or (path / "HEAD").is_file()


class SourceFetchers:
    """The registry of source kinds: kind -> fetcher; a GitRepository goes to git or folder by its URL.

    A kind with no fetcher registered is a FetchError naming it, never a silent skip. A source that cannot be
    read (permissions, a file that is not readable) is a FetchError naming the path, never an exception out
    of the reconciler's pass."""

    def __init__(
        self,
        git: Fetcher[GitRepository],
        folder: Fetcher[GitRepository] | None = None,
        kinds: dict[str, Fetcher[Any]] | None = None,
    ) -> None:
        self.git = git
        self.folder = folder or FolderFetcher()
        self.kinds: dict[str, Fetcher[Any]] = {}
        for kind, fetcher in (kinds or {}).items():
            self.register(kind, fetcher)

    def register(self, kind: str, fetcher: Fetcher[Any]) -> None:
        if kind == "GitRepository" or kind in self.kinds:
            raise ValueError(f"a fetcher for {kind} is already registered")
        if kind not in SOURCE_KINDS:
            raise ValueError(f"{kind} is not a source kind ({', '.join(SOURCE_KINDS)})")
        self.kinds[kind] = fetcher

    def _for(self, repo: Source) -> Fetcher[Any]:
        if isinstance(repo, GitRepository):
            return self.git if is_git(repo.spec.url) else self.folder
        fetcher = self.kinds.get(repo.kind)
        if fetcher is None:
            known = ", ".join(["GitRepository", *sorted(self.kinds)])
            raise FetchError("InvalidSpec", f"no fetcher for {repo.kind} here (this setup reads {known})")
        return fetcher

    async def fetch(self, repo: Source, last: Fetched | None) -> Fetched:
        try:
            return await self._for(repo).fetch(repo, last)
        except OSError as exc:
            raise unreadable(repo, exc) from None

    async def preview(self, repo: Source) -> Fetched:
        try:
            return await self._for(repo).preview(repo)
        except OSError as exc:
            raise unreadable(repo, exc) from None


def location(repo: Source) -> str:
    """Where a source is, as a user wrote it: the URL, or the bucket at its endpoint."""
    if isinstance(repo, Bucket):
        prefix = f"/{repo.spec.prefix}" if repo.spec.prefix else ""
        return f"bucket {repo.spec.bucketName}{prefix} at {repo.spec.endpoint}"
    return repo.spec.url


def unreadable(repo: Source, exc: OSError) -> FetchError:
    """The same message for the same fault, so it is one event however often the fetch is retried."""
    where = f" ({exc.filename})" if exc.filename else ""
    reason = "GitOperationFailed" if isinstance(repo, GitRepository) else "StorageOperationFailed"
    return FetchError(reason, f"cannot read {location(repo)}: {exc.strerror or exc}{where}")
