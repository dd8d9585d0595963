"""Where desired state comes from: a local Git repository (real git) or a plain folder."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from rheostat.model.load import manifest_files


class SourceError(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    revision: str
    root: Path
    describe: str  # "1a2b3c4: subject" or "folder PATH@hash"


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, timeout=30
        )
    except FileNotFoundError as exc:
        raise SourceError("git is not installed (apt-get install git)") from exc
    except subprocess.CalledProcessError as exc:
        raise SourceError(f"git {' '.join(args)} failed in {repo}: {exc.stderr.strip()}") from exc
    return out.stdout.strip()


class LocalSource:
    """Snapshots of a repository's branch, or of a folder's content; each exported once to `workdir`."""

    def __init__(self, path: Path, workdir: Path, branch: str | None = None) -> None:
        self.path = path.resolve()
        self.workdir = workdir.resolve()  # git archive --output is relative to the repository otherwise
        self.branch = branch
        if not self.path.exists():
            raise SourceError(f"repository {self.path} does not exist")
        self.is_git = (self.path / ".git").exists()

    def revision(self) -> str:
        if self.is_git:
            ref = f"refs/heads/{self.branch}" if self.branch else "HEAD"
            return _git(self.path, "rev-parse", "--verify", f"{ref}^{{commit}}")
        digest = hashlib.sha256()
        for f in manifest_files(self.path):
            digest.update(str(f.relative_to(self.path)).encode() + b"\0")
            digest.update(f.read_bytes() + b"\0")
        return "sha256:" + digest.hexdigest()[:16]

    def snapshot(self, revision: str) -> Snapshot:
        if not self.is_git:
            return Snapshot(revision, self.path, f"folder {self.path}@{revision[7:19]}")
        target = self.workdir / revision
        if not target.exists():
            tmp = self.workdir / f".{revision}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            archive = tmp / "tree.tar"
            _git(self.path, "archive", "--format=tar", f"--output={archive}", revision)
            with tarfile.open(archive) as tar:
                tar.extractall(tmp / "tree", filter="data")
            archive.unlink()
            (tmp / "tree").rename(target)
            shutil.rmtree(tmp, ignore_errors=True)
            self._prune(keep=revision)
        subject = _git(self.path, "log", "-1", "--format=%s", revision)
        return Snapshot(revision, target, f"{revision[:7]}: {subject}")

    def _prune(self, keep: str) -> None:
        """Keep the newest artifact only (the last fetched revision stays on disk)."""
        for child in self.workdir.iterdir():
            if child.name != keep and not child.name.startswith("."):
                shutil.rmtree(child, ignore_errors=True)
