"""docs/api.md is what the code prints, and names every operation the API describes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rheostat.server.dashboard.openapi import OPERATIONS
from rheostat.server.reference import markdown

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_api_reference_is_what_the_code_prints() -> None:
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == markdown(), "docs/api.md is stale: python -m rheostat.server.reference > docs/api.md"
    for path, method in OPERATIONS:
        assert f"\n## {method.upper()} `{path}`\n" in committed


def test_the_reference_script_prints_the_same_as_the_function() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rheostat.server.reference"], capture_output=True, text=True, check=True
    )
    assert out.stdout == markdown()
