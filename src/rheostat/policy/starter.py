"""The starter library shipped in `rheostat/policy/library/`: policies for Rheostat's own kinds."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from rheostat.policy.engine import PolicySet


def starter_documents() -> list[dict[str, Any]]:
    """Every document of every library YAML file, in file-name order."""
    folder = resources.files("rheostat.policy") / "library"
    docs: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            docs += [d for d in yaml.safe_load_all(entry.read_text(encoding="utf-8")) if d is not None]
    return docs


def starter_policies() -> PolicySet:
    return PolicySet.from_documents(starter_documents())
