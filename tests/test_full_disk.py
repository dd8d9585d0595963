"""`rheostat run` on a full disk: one `error:` line, no traceback, nothing left running.

The disk is a real one: a small tmpfs mounted by the test (root, as in CI) and filled to the last block.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rheostat.store import Store
from tests.servers import free_port, git


@pytest.fixture(params=["new data dir", "data dir in use before"])
def full_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test mounts a tmpfs: CI runs as root")
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        (mount / "data").mkdir()
        if request.param == "data dir in use before":
            Store(mount / "data" / "state.db").close()
            (mount / "data" / "controller.lock").write_text("1\n")
            (mount / "data" / "token").write_text("t" * 32 + "\n")
        with open(mount / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        yield mount / "data"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_run_on_a_full_disk_is_one_error_line(tmp_path: Path, full_disk: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("nothing to run\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "empty")
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "rheostat"),
            "run",
            "--repo",
            str(repo),
            "--data-dir",
            str(full_disk),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--stop-data-plane",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:")
    assert "No space left on device" in lines[0] or "full" in lines[0], lines[0]
    assert "Traceback" not in done.stderr
