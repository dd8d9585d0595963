"""Shared fixtures. Upstream conformance data lives in ../shared beside the repository (as CI lays it)."""

from __future__ import annotations

import os
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
