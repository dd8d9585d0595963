"""`rheostat validate DIR`: schemas and policies over a folder of manifests, offline, for a pull request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rheostat import __version__
from rheostat.model.load import ManifestError, manifest_files, parse_text
from rheostat.model.policy import is_policy
from rheostat.policy import Inventory, PolicyError, PolicySet, starter_documents


@dataclass(frozen=True)
class Result:
    rule: str  # "schema", or the policy's name
    level: str  # "error" (blocks), "warning", "note"
    file: str
    object: str
    message: str


def _body(obj: Any) -> dict[str, Any]:
    return dict(obj.model_dump(mode="json", exclude_none=True, by_alias=True))


def validate(paths: Iterable[Path], *, starter: bool = False) -> list[Result]:
    results: list[Result] = []
    objects: list[tuple[str, dict[str, Any]]] = []
    for root in paths:
        for f in manifest_files(root):
            try:
                for obj in parse_text(f.read_text(encoding="utf-8"), str(f)):
                    objects.append((str(f), _body(obj)))
            except ManifestError as exc:
                for e in exc.errors or [None]:  # type: ignore[list-item]
                    detail = (
                        f"{e.path}: {e.message}"
                        if e is not None and e.path
                        else (e.message if e else str(exc))
                    )
                    results.append(Result("schema", "error", str(f), exc.obj, detail))
    policies = [b for _, b in objects if is_policy(b)] + (starter_documents() if starter else [])
    reviewed = [(f, b) for f, b in objects if not is_policy(b)]
    try:
        policy_set = PolicySet.from_documents(policies)
    except PolicyError as exc:
        return [*results, Result(exc.source, "error", "", exc.source, exc.message)]
    files = {
        (b["kind"], b["metadata"].get("namespace", "default"), b["metadata"]["name"]): f for f, b in reviewed
    }
    found = policy_set.evaluate([b for _, b in reviewed], inventory=Inventory([b for _, b in reviewed]))
    for v in found:
        level = "error" if v.blocking else ("warning" if v.action == "warn" else "note")
        file = files.get((v.object_kind, v.object_namespace or "default", v.object_name), "")
        results.append(Result(v.policy, level, file, v.object_ref, v.message))
    return results


def sarif(results: list[Result]) -> dict[str, Any]:
    """SARIF 2.1.0, as code-scanning tools read it."""
    rules = sorted({r.rule for r in results})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "rheostat",
                        "version": __version__,
                        "informationUri": "https://example.invalid/rheostat",
                        "rules": [{"id": r, "shortDescription": {"text": r}} for r in rules],
                    }
                },
                "results": [
                    {
                        "ruleId": r.rule,
                        "ruleIndex": rules.index(r.rule),
                        "level": r.level,
                        "message": {"text": f"{r.object}: {r.message}"},
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.file}}}]
                        if r.file
                        else [],
                    }
                    for r in results
                ],
            }
        ],
    }
