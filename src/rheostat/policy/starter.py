"""The starter library shipped in `rheostat/policy/library/`: policies for Rheostat's own kinds."""

from __future__ import annotations

from importlib import resources
from typing import Any

from rheostat.model.yaml_limits import safe_load_all
from rheostat.policy.engine import PolicySet


def starter_documents() -> list[dict[str, Any]]:
    """Every document of every library YAML file, in file-name order."""
    folder = resources.files("rheostat.policy") / "library"
    docs: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            docs += safe_load_all(entry.read_text(encoding="utf-8"))
    return docs


def starter_policies() -> PolicySet:
    return PolicySet.from_documents(starter_documents())
