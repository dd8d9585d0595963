"""Shared fixtures. Upstream conformance data lives in ../shared beside the repository (as CI lays it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared, or a skip that says so; in CI its absence is a failure, never a skip."""
    if not SHARED.is_dir():
        if in_ci():
            pytest.fail(f"CI=true but the shared conformance data is missing at {SHARED}")
        pytest.skip(f"upstream conformance data not found at {SHARED} (a user's own clone)")
    return SHARED


def _end_data_planes_under(folder: Path) -> list[str]:
    """End every Envoy and replica whose data dir lies under `folder`; what had to be ended."""
    from rheostat.plugins.platforms.local import procfs

    pids = procfs.marked("RHEOSTAT_DATA_PLANE", f"{folder.absolute()}/")
    sessions = sorted({sid for pid in pids if (sid := procfs.session_of(pid)) is not None})
    found = [f"{pid} ({procfs.cmdline(pid, 120)})" for pid in pids]
    procfs.kill_sessions(sessions, grace_s=0)
    return found


@pytest.fixture(autouse=True)
def _no_data_plane_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Safety net: a test that leaves Envoy or a replica of its data dir running fails, and they are ended."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is not None and (left := _end_data_planes_under(tmp)):
        pytest.fail(f"the test left its data plane running (now ended): {'; '.join(left)}")


@pytest.fixture(autouse=True, scope="session")
def _no_data_plane_left_in_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The same for module- and session-scoped data dirs, once all tests are done."""
    yield
    if left := _end_data_planes_under(tmp_path_factory.getbasetemp()):
        pytest.fail(f"tests left data planes running (now ended): {'; '.join(left)}")
