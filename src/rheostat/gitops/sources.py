"""Fetching sources: a Git repository through real git, or a plain local folder."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rheostat.model.gitops import GitRepository
from rheostat.model.load import manifest_files


class FetchError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Fetched:
    revision: str  # Flux's form: "main@sha1:<sha>", or "sha256:<digest>" for a folder
    path: Path
    message: str = ""
    verified_by: str | None = None
    changed: tuple[str, ...] | None = None  # paths changed since `previous`; None when not known
    previous: str | None = None  # the revision `changed` is relative to


class Fetcher(Protocol):
    async def fetch(self, repo: GitRepository, last: Fetched | None) -> Fetched: ...

    async def preview(self, repo: GitRepository) -> Fetched:
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
    """Chooses git or folder per repository URL. A source that cannot be read (permissions, a file that is
    not readable) is a FetchError naming the path, never an exception out of the reconciler's pass."""

    def __init__(self, git: Fetcher, folder: Fetcher | None = None) -> None:
        self.git = git
        self.folder = folder or FolderFetcher()

    async def fetch(self, repo: GitRepository, last: Fetched | None) -> Fetched:
        try:
            return await (self.git if is_git(repo.spec.url) else self.folder).fetch(repo, last)
        except OSError as exc:
            raise unreadable(repo, exc) from None

    async def preview(self, repo: GitRepository) -> Fetched:
        try:
            return await (self.git if is_git(repo.spec.url) else self.folder).preview(repo)
        except OSError as exc:
            raise unreadable(repo, exc) from None


def unreadable(repo: GitRepository, exc: OSError) -> FetchError:
    """The same message for the same fault, so it is one event however often the fetch is retried."""
    where = f" ({exc.filename})" if exc.filename else ""
    return FetchError("GitOperationFailed", f"cannot read {repo.spec.url}: {exc.strerror or exc}{where}")
