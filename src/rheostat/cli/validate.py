"""`rheostat validate DIR`: schemas, `run`'s cross-object checks and policies over a folder, for a pull request."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rheostat import __version__
from rheostat.gitops.checks import check_flags, find_problems, resolve_host
from rheostat.gitops.flux_layout import KUSTOMIZE_FILES, components_note, is_flux_component
from rheostat.model.flux import is_kustomize_file
from rheostat.model.load import Manifest, ManifestError, documents, manifest_files, read_documents
from rheostat.model.policy import is_policy
from rheostat.model.yaml_limits import safe_load
from rheostat.policy import Inventory, PolicyError, PolicySet, starter_documents
from rheostat.rollout.backends import EMBEDDED, Catalogue


@dataclass(frozen=True)
class Result:
    rule: str  # "schema", "cross-object" (what `run` checks across objects), or the policy's name
    level: str  # "error" (blocks), "warning", "note"
    file: str
    object: str
    message: str


def _body(obj: Any) -> dict[str, Any]:
    return dict(obj.model_dump(mode="json", exclude_none=True, by_alias=True))


def validate(
    paths: Iterable[Path], *, starter: bool = False, catalogue: Catalogue = EMBEDDED
) -> list[Result]:
    results: list[Result] = []
    objects: list[tuple[str, dict[str, Any]]] = []
    parsed: list[tuple[str, Manifest]] = []
    for root in paths:
        tree = list(manifest_files(root))
        patches = _patch_files(tree)
        for f in tree:
            if f.name in KUSTOMIZE_FILES or f.resolve() in patches:
                continue  # kustomize's recipe and the patches it applies: not objects of their own
            problems, loaded = _read(f)
            results += problems
            for obj in loaded:
                objects.append((str(f), _body(obj)))
                parsed.append((str(f), obj))
    results += cross_object(parsed, catalogue)
    policies = [b for _, b in objects if is_policy(b)]
    if starter:  # the library, but not where the folder has its own copy (as `rheostat bootstrap` writes)
        have = {(b.get("kind"), b.get("metadata", {}).get("name")) for b in policies}
        policies += [d for d in starter_documents() if (d.get("kind"), d["metadata"].get("name")) not in have]
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


def _read(f: Path) -> tuple[list[Result], list[Manifest]]:
    """Every problem of one file (not only the first), and the objects that loaded."""
    try:
        docs = documents(f.read_text(encoding="utf-8"), str(f))
    except (OSError, UnicodeDecodeError) as exc:
        return [Result("schema", "error", str(f), "file", f"cannot read: {exc}")], []
    except ManifestError as exc:
        return _schema_results(exc, str(f)), []
    flux: Counter[str] = Counter()
    kept = []
    for doc in docs:
        if is_kustomize_file(doc):
            continue  # kustomize's recipe, whatever the file is called
        if is_flux_component(doc):
            flux[str(doc.get("kind"))] += 1
        else:
            kept.append(doc)
    loaded = read_documents(kept, str(f))
    out = [r for exc in loaded.errors for r in _schema_results(exc, str(f))]
    out += [Result("deprecated", "warning", str(f), obj, why) for obj, why in loaded.warnings]
    if flux:
        out.append(Result("flux-components", "note", str(f), "file", components_note(flux)))
    return out, loaded.objects


def _patch_files(files: list[Path]) -> set[Path]:
    """Files that a kustomization.yaml applies as patches: partial objects, checked by kustomize."""
    out: set[Path] = set()
    for f in files:
        if f.name not in KUSTOMIZE_FILES:
            continue
        try:
            kus = safe_load(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        if not isinstance(kus, dict):
            continue
        named = [p.get("path") for p in kus.get("patches") or [] if isinstance(p, dict)]
        named += [p for p in kus.get("patchesStrategicMerge") or [] if isinstance(p, str) and "\n" not in p]
        named += [p.get("path") for p in kus.get("patchesJson6902") or [] if isinstance(p, dict)]
        out |= {(f.parent / n).resolve() for n in named if isinstance(n, str)}
    return out


def _schema_results(exc: ManifestError, file: str) -> list[Result]:
    out = []
    for e in exc.errors or [None]:  # type: ignore[list-item]
        detail = f"{e.path}: {e.message}" if e is not None and e.path else (e.message if e else str(exc))
        out.append(Result("schema", "error", file, exc.obj, detail))
    return out


def cross_object(parsed: list[tuple[str, Manifest]], catalogue: Catalogue = EMBEDDED) -> list[Result]:
    """The checks `run` makes before applying a revision (gitops/checks.py), the folder being one revision.

    A webhook host that does not resolve here is a warning: `run` does not look hosts up when it applies.
    """
    manifests = [obj for _, obj in parsed]
    out = [
        Result(
            "cross-object",
            "warning" if p.warning else "error",
            parsed[p.at][0],
            p.obj,
            f"{p.field}: {p.message}",
        )
        for p in find_problems(manifests, resolve=functools.cache(resolve_host), catalogue=catalogue)
    ]
    try:
        check_flags(manifests, [])
    except ManifestError as exc:
        files = {f"{obj.kind} {obj.metadata.key}": file for file, obj in parsed}
        out.append(Result("cross-object", "error", files.get(exc.obj, ""), exc.obj, exc.errors[0].message))
    return out


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
