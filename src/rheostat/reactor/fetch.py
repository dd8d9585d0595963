"""Fetching a local Git repository with real git (the full remote fetcher lives in rheostat.gitops.git)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rheostat.gitops.sources import Fetched, FetchError, local_path
from rheostat.model.gitops import GitRepository
from rheostat.reactor.source import LocalSource, SourceError


class LocalGitFetcher:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    async def fetch(self, repo: GitRepository, last: Fetched | None) -> Fetched:
        path = local_path(repo.spec.url)
        if path is None:
            raise FetchError("GitOperationFailed", f"{repo.spec.url}: only local repositories here")
        branch = repo.spec.ref.branch if repo.spec.ref else None
        try:
            src = LocalSource(path, self.workdir / repo.metadata.namespace / repo.metadata.name, branch)
            rev = await asyncio.to_thread(src.revision)
            if last is not None and last.revision.endswith(rev) and last.path.exists():
                return last
            snap = await asyncio.to_thread(src.snapshot, rev)
        except SourceError as exc:
            raise FetchError("GitOperationFailed", str(exc)) from exc
        return Fetched(f"{branch or 'HEAD'}@sha1:{rev}", snap.root, snap.describe)
