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
from rheostat.model.core import CORE_KINDS, CoreObject
from rheostat.model.flags import (
    FLAG_KINDS,
    FeatureFlag,
    FlagSet,
    flag_set_from_document,
    flag_set_name,
    is_flagd_document,
)
from rheostat.model.flux import (
    VERSIONS,
    field_refusal,
    is_kustomize_file,
    not_yet,
    version_problem,
    warnings_of,
)
from rheostat.model.gitops import GitRepository, Kustomization, Receiver
from rheostat.model.helm import HelmChart, HelmRelease, HelmRepository
from rheostat.model.metric_template import MetricTemplate
from rheostat.model.notification import Alert, Provider
from rheostat.model.policy import (
    POLICY_KINDS,
    Constraint,
    ConstraintTemplate,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    is_constraint,
)
from rheostat.model.sources import Bucket, OCIRepository
from rheostat.model.workload import Workload
from rheostat.model.yaml_limits import YamlLimitError, safe_load_all
from rheostat.util.errors import json_type

Manifest = (
    Canary
    | MetricTemplate
    | AlertProvider
    | Workload
    | GitRepository
    | Kustomization
    | Receiver
    | Provider
    | Alert
    | HelmRepository
    | HelmChart
    | HelmRelease
    | OCIRepository
    | Bucket
    | ConstraintTemplate
    | Constraint
    | ValidatingAdmissionPolicy
    | ValidatingAdmissionPolicyBinding
    | FlagSet
    | FeatureFlag
    | CoreObject
)
MANIFEST_TYPES = (
    Canary,
    MetricTemplate,
    AlertProvider,
    Workload,
    GitRepository,
    Kustomization,
    Receiver,
    Provider,
    Alert,
    HelmRepository,
    HelmChart,
    HelmRelease,
    OCIRepository,
    Bucket,
    ConstraintTemplate,
    Constraint,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    FlagSet,
    FeatureFlag,
    CoreObject,
)
_FLUX_MODELS: dict[str, type[BaseModel]] = {
    "GitRepository": GitRepository,
    "Kustomization": Kustomization,
    "Receiver": Receiver,
    "Provider": Provider,
    "Alert": Alert,
    "HelmRepository": HelmRepository,
    "HelmChart": HelmChart,
    "HelmRelease": HelmRelease,
    "OCIRepository": OCIRepository,
    "Bucket": Bucket,
}

KINDS: dict[tuple[str, str], type[BaseModel]] = {
    ("flagger.app/v1beta1", "Canary"): Canary,
    ("flagger.app/v1beta1", "MetricTemplate"): MetricTemplate,
    ("flagger.app/v1beta1", "AlertProvider"): AlertProvider,
    ("rheostat.dev/v1alpha1", "Workload"): Workload,
    **{
        (f"{group}/{version}", kind): _FLUX_MODELS[kind]
        for (group, kind), (current, old) in VERSIONS.items()
        for version in (current, *old)
    },
    **POLICY_KINDS,
    **FLAG_KINDS,
    **dict.fromkeys(CORE_KINDS, CoreObject),
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


class ManifestErrors(ManifestError):
    """Several bad objects, reported at once; `source`, `obj` and `errors` are the first one's."""

    def __init__(self, problems: list[ManifestError]) -> None:
        first = problems[0]
        self.problems = problems
        super().__init__(first.source, first.obj, first.errors)
        self.args = ("; ".join(str(p) for p in problems) + f" ({len(problems)} objects refused)",)

    def __str__(self) -> str:
        return str(self.args[0])


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
            why = "is missing" if value is None else f"expected a string, got {json_type(value)}"
            raise ManifestError(source, obj, [FieldError(field, why)])
    model = Constraint if is_constraint(doc) else KINDS.get(key)  # type: ignore[arg-type]
    doc_key = (str(key[0]), str(key[1]))
    if model is None and is_kustomize_file(doc):
        why = (
            "kustomize's own file: it says how to build a folder and is read only as `kustomization.yaml`, "
            "`kustomization.yml` or `Kustomization`"
        )
        raise ManifestError(source, f"kustomize {doc_key[1]}", [FieldError("kind", why)])
    if model is None and (refusal := not_yet(*doc_key)) is not None:
        raise ManifestError(source, obj, [FieldError("kind", refusal)])
    if model is None and (refusal := version_problem(*doc_key)) is not None:
        raise ManifestError(source, obj, [FieldError("apiVersion", refusal)])
    if model is None:
        known = ", ".join(sorted({k for _, k in KINDS}))
        raise ManifestError(
            source,
            obj,
            [FieldError("kind", f"unknown kind {key[1]!r} of apiVersion {key[0]!r}; Rheostat reads {known}")],
        )
    try:
        parsed = model.model_validate(doc)
    except ValidationError as exc:
        flux = key[1] if model in _FLUX_MODELS.values() else None
        errors = [_field_error(e["loc"], e["type"], e["msg"], flux) for e in exc.errors()]
        raise ManifestError(source, obj, errors) from exc
    assert isinstance(parsed, MANIFEST_TYPES)
    return parsed


def _field_error(loc: Iterable[int | str], kind: str, message: str, flux_kind: str | None) -> FieldError:
    """pydantic's error, said in Flux's words for Flux kinds: a field Flux has but Rheostat does not run is
    refused by name, and one Flux does not have is called unknown (never "Extra inputs are not permitted")."""
    path = _path(loc)
    if flux_kind is not None and kind == "extra_forbidden":
        dotted = ".".join(p for p in path.replace("[", ".[").split(".") if not p.startswith("["))
        refusal = field_refusal(flux_kind, dotted)
        if refusal is None:
            refusal = f"{flux_kind} has no field {path.rsplit('.', 1)[-1]!r} here (check the spelling)"
        return FieldError(path, refusal)
    return FieldError(path, message.removeprefix("Value error, "))


@dataclass
class Loaded:
    """Every object of a text that could be read, every one that could not, and what loads but should change."""

    objects: list[Manifest]
    errors: list[ManifestError]
    warnings: list[tuple[str, str]]  # ("Kind ns/name", message)


def read_text(text: str, source: str = "<input>") -> Loaded:
    """Every document of a YAML text, the bad ones collected rather than raised."""
    try:
        docs = documents(text, source)
    except ManifestError as exc:
        return Loaded([], [exc], [])
    return read_documents(docs, source)


def read_documents(docs: list[Any], source: str = "<input>") -> Loaded:
    """`read_text` for documents already decoded (a kustomize build, filtered)."""
    out = Loaded([], [], [])
    for i, doc in enumerate(docs):
        try:
            out.objects.append(parse_object(doc, source, i))
        except ManifestError as exc:
            out.errors.append(exc)
            continue
        out.warnings += [(_describe(doc, i), w) for w in warnings_of(doc)]
    return out


def parse_text(text: str, source: str = "<input>") -> list[Manifest]:
    """Every object of a multi-document YAML text; the first bad one raises ManifestError."""
    return [parse_object(doc, source, i) for i, doc in enumerate(documents(text, source))]


def documents(text: str, source: str) -> list[Any]:
    """The decoded documents of a YAML text, within the YAML bounds; ManifestError with the line."""
    try:
        docs = safe_load_all(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = getattr(exc, "problem", None) or str(exc)
        if not isinstance(exc, YamlLimitError):
            problem = f"malformed YAML: {problem}"
        raise ManifestError(source, where, [FieldError("", problem)]) from exc
    return list(docs)


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
