"""The repository source: real git, snapshots exported once, relative data dirs included."""

from __future__ import annotations

from pathlib import Path

import pytest

from rheostat.reactor.source import LocalSource, SourceError
from tests.servers import git


def test_git_snapshot_with_a_relative_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "a.yaml").write_text("x: 1\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first thing")
    monkeypatch.chdir(tmp_path)
    src = LocalSource(Path("repo"), Path(".rheostat/artifacts"))
    rev = src.revision()
    assert rev == git(repo, "rev-parse", "HEAD")
    snap = src.snapshot(rev)
    assert (snap.root / "a.yaml").read_text() == "x: 1\n"
    assert snap.describe == f"{rev[:7]}: first thing"
    (repo / "a.yaml").write_text("x: 2\n")
    git(repo, "commit", "-qam", "second")
    rev2 = src.revision()
    assert rev2 != rev and (src.snapshot(rev2).root / "a.yaml").read_text() == "x: 2\n"
    assert not (tmp_path / ".rheostat/artifacts" / rev).exists()  # only the last artifact is kept


def test_folder_revision_follows_content(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    src = LocalSource(tmp_path, tmp_path / "work")
    first = src.revision()
    (tmp_path / "a.yaml").write_text("x: 2\n")
    assert src.revision() != first
    with pytest.raises(SourceError, match="does not exist"):
        LocalSource(tmp_path / "nope", tmp_path / "work")
