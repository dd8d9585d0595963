"""Reading manifests: YAML files to typed objects, with errors that name file, object and field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rheostat.model.alert_provider import AlertProvider
from rheostat.model.canary import Canary
from rheostat.model.flags import (
    FLAG_KINDS,
    FeatureFlag,
    FlagSet,
    flag_set_from_document,
    flag_set_name,
    is_flagd_document,
)
from rheostat.model.gitops import GitRepository, Kustomization, Receiver
from rheostat.model.metric_template import MetricTemplate
from rheostat.model.policy import (
    POLICY_KINDS,
    Constraint,
    ConstraintTemplate,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    is_constraint,
)
from rheostat.model.workload import Workload
from rheostat.model.yaml_limits import YamlLimitError, safe_load_all

Manifest = (
    Canary
    | MetricTemplate
    | AlertProvider
    | Workload
    | GitRepository
    | Kustomization
    | Receiver
    | ConstraintTemplate
    | Constraint
    | ValidatingAdmissionPolicy
    | ValidatingAdmissionPolicyBinding
    | FlagSet
    | FeatureFlag
)
MANIFEST_TYPES = (
    Canary,
    MetricTemplate,
    AlertProvider,
    Workload,
    GitRepository,
    Kustomization,
    Receiver,
    ConstraintTemplate,
    Constraint,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    FlagSet,
    FeatureFlag,
)

KINDS: dict[tuple[str, str], type[BaseModel]] = {
    ("flagger.app/v1beta1", "Canary"): Canary,
    ("flagger.app/v1beta1", "MetricTemplate"): MetricTemplate,
    ("flagger.app/v1beta1", "AlertProvider"): AlertProvider,
    ("rheostat.dev/v1alpha1", "Workload"): Workload,
    ("source.toolkit.fluxcd.io/v1", "GitRepository"): GitRepository,
    ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"): Kustomization,
    ("notification.toolkit.fluxcd.io/v1", "Receiver"): Receiver,
    **POLICY_KINDS,
    **FLAG_KINDS,
}


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str


class ManifestError(Exception):
    """A manifest that cannot be used, with where it is and every field that is wrong."""

    def __init__(self, source: str, obj: str, errors: list[FieldError]) -> None:
        self.source = source
        self.obj = obj
        self.errors = errors
        detail = "; ".join(f"{e.path}: {e.message}" if e.path else e.message for e in errors)
        super().__init__(f"{source}: {obj}: {detail}")


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-after", "function-before", "function-wrap")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def _describe(doc: dict[str, Any], index: int) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    name = meta.get("name", f"document {index + 1}")
    ns = meta.get("namespace", "default")
    return f"{doc.get('kind', 'object')} {ns}/{name}"


def parse_object(doc: Any, source: str = "<input>", index: int = 0) -> Manifest:
    """One decoded YAML document to a typed object, or ManifestError."""
    if not isinstance(doc, dict):
        raise ManifestError(source, f"document {index + 1}", [FieldError("", "expected a mapping")])
    if is_flagd_document(doc):  # a flagd file: its `metadata` is the flag set's, not an object's
        try:
            return flag_set_from_document(doc, source)
        except ValidationError as exc:
            errors = [
                FieldError(_path(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()
            ]
            raise ManifestError(source, f"flag set {flag_set_name(doc, source)}", errors) from exc
    obj = _describe(doc, index)
    key = (doc.get("apiVersion"), doc.get("kind"))
    for field, value in zip(("apiVersion", "kind"), key, strict=True):
        if not isinstance(value, str):
            why = "is missing" if value is None else f"expected a string, got {type(value).__name__}"
            raise ManifestError(source, obj, [FieldError(field, why)])
    model = Constraint if is_constraint(doc) else KINDS.get(key)  # type: ignore[arg-type]
    if model is None:
        known = ", ".join(f"{k} ({a})" for a, k in KINDS)
        raise ManifestError(
            source,
            obj,
            [FieldError("kind", f"unknown kind {key[1]!r} of apiVersion {key[0]!r}; known: {known}")],
        )
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        errors = [FieldError(_path(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        raise ManifestError(source, obj, errors) from exc
    assert isinstance(parsed, MANIFEST_TYPES)
    return parsed


def parse_text(text: str, source: str = "<input>") -> list[Manifest]:
    """Every object of a multi-document YAML text; the first bad one raises ManifestError."""
    try:
        docs = safe_load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc)
        if not isinstance(exc, YamlLimitError):
            problem = f"malformed YAML: {problem}"
        raise ManifestError(source, where, [FieldError("", problem)]) from exc
    return [parse_object(doc, source, i) for i, doc in enumerate(docs)]


def load_file(path: Path) -> list[Manifest]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(str(path), "file", [FieldError("", f"cannot read: {exc}")]) from exc
    return parse_text(text, str(path))


def manifest_files(root: Path) -> Iterator[Path]:
    """YAML files under root, in a stable order, skipping hidden folders such as .git."""
    if root.is_file():
        yield root
        return
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            yield path
        elif path.is_file() and path.suffix == ".json" and _is_flag_file(path):
            yield path  # flagd flag definitions are JSON as often as YAML; other JSON files are not ours


def _is_flag_file(path: Path) -> bool:
    try:
        return is_flagd_document(json.loads(path.read_text(encoding="utf-8")))
    except RecursionError:
        return True  # too deep to tell: read as YAML, where the depth is refused with its line
    except (OSError, ValueError):
        return False


def load_tree(root: Path) -> list[Manifest]:
    """All objects under root, or ManifestError for the first bad file: all or nothing."""
    out: list[Manifest] = []
    seen: dict[tuple[str, str], str] = {}
    for path in manifest_files(root):
        for obj in load_file(path):
            ident = (obj.kind, obj.metadata.key)
            if ident in seen:
                raise ManifestError(
                    str(path),
                    f"{obj.kind} {obj.metadata.key}",
                    [FieldError("metadata.name", f"also declared in {seen[ident]}")],
                )
            seen[ident] = str(path)
            out.append(obj)
    return out
