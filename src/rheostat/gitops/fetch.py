"""A GitRepository fetched through the real-git layer, with its secrets resolved here and nowhere else; and
the registry of every source kind's fetcher (`source_fetchers`)."""

from __future__ import annotations

from pathlib import Path

from rheostat.gitops import git
from rheostat.gitops.bucket import BucketFetcher
from rheostat.gitops.oci import OCIFetcher
from rheostat.gitops.sources import Fetched, FetchError, SecretLookup, SourceFetchers
from rheostat.model.gitops import GitRepository
from rheostat.util.durations import parse_duration


class GitFetcher:
    def __init__(self, workdir: Path, secrets: SecretLookup) -> None:
        self.workdir = workdir
        self.secrets = secrets

    def _secret(self, repo: GitRepository, name: str, what: str) -> dict[str, str]:
        try:
            data = self.secrets(repo.metadata.namespace, name)
        except (ValueError, OSError) as exc:  # a secret file that cannot be read or is not a mapping
            raise FetchError(
                "AuthenticationFailed" if what == "secretRef" else "VerificationFailed", f"{what}: {exc}"
            ) from None
        if data is None:
            raise FetchError(
                "AuthenticationFailed" if what == "secretRef" else "VerificationFailed",
                f"{what}: secret {repo.metadata.namespace}/{name} not found",
            )
        return dict(data)

    async def preview(self, repo: GitRepository) -> Fetched:
        return await self.fetch(repo, None, workdir=self.workdir / ".preview")

    async def fetch(
        self, repo: GitRepository, last: Fetched | None, *, workdir: Path | None = None
    ) -> Fetched:
        spec = repo.spec
        ref = spec.ref
        credentials = None
        if spec.secretRef is not None:
            credentials = git.Credentials.from_secret(self._secret(repo, spec.secretRef.name, "secretRef"))
        verify = None
        if spec.verify is not None:
            keys = self._secret(repo, spec.verify.secretRef.name, "verify.secretRef")
            verify = git.Verification.from_secret(spec.verify.mode, keys)
        try:
            artifact = await git.fetch(
                spec.url,
                git.GitRef(
                    branch=ref.branch, tag=ref.tag, semver=ref.semver, name=ref.name, commit=ref.commit
                )
                if ref
                else git.GitRef(),
                workdir=(workdir or self.workdir) / repo.metadata.namespace / repo.metadata.name,
                credentials=credentials,
                verify=verify,
                ignore=spec.ignore,
                timeout_s=parse_duration(spec.timeout),
            )
        except git.GitError as exc:
            raise FetchError(exc.reason, exc.message) from exc
        previous = None
        if (
            artifact.previous_commit is not None
            and last is not None
            and last.revision.endswith(artifact.previous_commit)
        ):
            previous = last.revision
        return Fetched(
            artifact.revision,
            artifact.path,
            artifact.message,
            artifact.verified_by,
            artifact.changed if previous else None,
            previous,
        )


def source_fetchers(workdir: Path, secrets: SecretLookup) -> SourceFetchers:
    """Every source kind Rheostat reads, each fetched into its own folder of the one artifact store."""
    return SourceFetchers(
        GitFetcher(workdir, secrets),
        kinds={"OCIRepository": OCIFetcher(workdir, secrets), "Bucket": BucketFetcher(workdir, secrets)},
    )
