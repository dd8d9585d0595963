"""A source that cannot be read is Ready=False with the reason and one event, and recovers by itself.

Root reads through permission bits, so two real faults are used:
- a manifest that is a symlink to a write-only sysctl file (`/proc/sys/vm/drop_caches`): reading it is EACCES
  for root too;
- `chmod 000` on the repository folder (git and plain) and on `.git/objects`: as root, with the uid switched
  to 65534 for the test (root kept as the saved uid), so the kernel enforces the bits on this process and on
  the git it runs.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (imported lazily by to_thread: load it while still root)
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from rheostat.gitops import conditions as cond
from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import GitOps
from rheostat.gitops.sources import FolderFetcher, SourceFetchers
from rheostat.store import Store
from tests.servers import git
from tests.test_gitops_reconciler import Clock, keys, root, workload

WRITE_ONLY = Path("/proc/sys/vm/drop_caches")
NOBODY = 65534


def readable(path: Path) -> bool:
    try:
        path.read_bytes()
    except PermissionError:
        return False
    return True


def reconciler(tmp: Path, repo: Path) -> tuple[GitOps, Store, Clock]:
    store, clock = Store(":memory:"), Clock()
    fetchers = SourceFetchers(GitFetcher(tmp / "data", lambda ns, name: None), FolderFetcher())
    return GitOps(store, fetchers, None, bootstrap=root(repo), clock=clock.now), store, clock


def source_ready(g: GitOps) -> dict[str, str]:
    c = cond.condition(g.state("GitRepository", "flux-system/root"), "Ready")
    assert c is not None
    return c


def fetch_failures(store: Store) -> list[str]:
    return [e.message for e in store.events(kind="GitRepository") if e.reason == "FetchFailed"]


async def passes(g: GitOps, clock: Clock, n: int) -> None:
    """`n` passes a minute apart: each one due to fetch again (the back-off is shorter)."""
    for _ in range(n):
        clock.t += 60
        await g.reconcile_once()


async def unreadable_then_readable(tmp: Path, repo: Path, break_it: list[Path], words: str) -> None:
    g, store, clock = reconciler(tmp, repo)
    await g.reconcile_once()
    assert source_ready(g)["status"] == "True", source_ready(g)
    assert keys(store) == ["apps/a"]
    for p in break_it:
        p.chmod(0)
    try:
        await passes(g, clock, 5)
        ready = source_ready(g)
        assert (ready["status"], ready["reason"]) == ("False", "GitOperationFailed")
        assert words in ready["message"]
        assert len(fetch_failures(store)) == 1  # one event, not one per pass
        assert keys(store) == ["apps/a"]  # the last good revision keeps running
    finally:
        for p in reversed(break_it):
            p.chmod(0o755)
    await passes(g, clock, 1)
    assert source_ready(g)["status"] == "True"


async def test_an_unreadable_manifest_fails_the_source_once_and_recovers(tmp_path: Path) -> None:
    if readable(WRITE_ONLY):  # pragma: no cover - Linux keeps it write-only, for root too
        pytest.fail(f"{WRITE_ONLY} is readable here: this test needs a file that cannot be read")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.yaml").write_text(workload("a"))
    g, store, clock = reconciler(tmp_path, repo)
    await g.reconcile_once()
    (repo / "b.yaml").symlink_to(WRITE_ONLY)
    await passes(g, clock, 5)
    ready = source_ready(g)
    assert (ready["status"], ready["reason"]) == ("False", "GitOperationFailed")
    assert f"cannot read {repo}: Permission denied ({repo / 'b.yaml'})" == ready["message"]
    assert fetch_failures(store) == [f"GitOperationFailed: {ready['message']}"]
    assert keys(store) == ["apps/a"]
    (repo / "b.yaml").unlink()
    (repo / "b.yaml").write_text(workload("b"))
    await passes(g, clock, 1)
    assert source_ready(g)["status"] == "True" and keys(store) == ["apps/a", "apps/b"]


@contextlib.contextmanager
def unprivileged(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder of our own and, as root, uid 65534 meanwhile, so that the kernel enforces permission bits on
    this process and on the git it runs; root again afterwards (through the saved uid)."""
    folder = Path(tempfile.mkdtemp(prefix="rheostat-unreadable-"))
    monkeypatch.setenv("HOME", str(folder))  # git reads ~/.gitconfig; root's home is not ours
    # The git it runs starts in our working directory, which the clone's folder may not let uid 65534 reach
    # (a `mktemp -d` folder is 0700): work from the folder of our own instead.
    monkeypatch.chdir(folder)
    root = os.geteuid() == 0
    try:
        if root:
            os.chown(folder, NOBODY, NOBODY)
            os.setresgid(NOBODY, NOBODY, 0)
            os.setresuid(NOBODY, NOBODY, 0)  # real too (a shell git starts would reset to it); saved stays 0
        yield folder
    finally:
        if root:
            os.setresuid(0, 0, 0)
            os.setresgid(0, 0, 0)
        for dirpath, dirnames, _ in os.walk(folder):  # put back any bits a failed test left off
            for d in dirnames:
                with contextlib.suppress(OSError):
                    Path(dirpath, d).chmod(0o755)
        shutil.rmtree(folder)


def committed(tmp: Path, kind: str = "git") -> Path:
    repo = tmp / "repo"
    repo.mkdir()
    (repo / "a.yaml").write_text(workload("a"))
    if kind == "git":
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "a")
    return repo


@pytest.mark.parametrize("kind", ["git", "folder"])
async def test_a_folder_without_permissions_fails_the_source_once_and_recovers(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    with unprivileged(monkeypatch) as tmp:
        repo = committed(tmp, kind)
        await unreadable_then_readable(tmp, repo, [repo], "Permission denied")


async def test_unreadable_git_objects_fail_the_source_once_and_recover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with unprivileged(monkeypatch) as tmp:
        repo = committed(tmp)
        await unreadable_then_readable(tmp, repo, [repo / ".git" / "objects"], "git ls-remote failed")
