"""Building a Kustomization's objects from a source tree: plain YAML, or a real kustomize; then postBuild."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rheostat.gitops.flux_layout import (
    KUSTOMIZE_FILES,
    Bootstrap,
    LayoutError,
    components_note,
    find_bootstrap,
    is_flux_component,
    prepare,
    uses_kustomize,
)
from rheostat.gitops.sops import DecryptionError, Decryptor, all_or_first_error
from rheostat.model.base import object_key
from rheostat.model.core import CoreObject
from rheostat.model.gitops import KustomizationSpec
from rheostat.model.load import (
    FieldError,
    Manifest,
    ManifestError,
    ManifestErrors,
    documents,
    manifest_files,
    read_documents,
)

__all__ = ["KUSTOMIZE_FILES", "BuildCache", "BuildError", "Built", "build", "substitute", "uses_kustomize"]

_VAR = re.compile(r"\$(\$?)\{([_a-zA-Z][_a-zA-Z0-9]*)(?::([=-])([^}]*))?\}")


class BuildError(Exception):
    """The tree could not be built; names the path, the file and what is wrong."""


@dataclass(frozen=True)
class Built:
    objects: list[Manifest]
    files: dict[str, str]  # "Kind ns/name" -> the file it came from (for trace)
    bodies: list[str] = field(default_factory=list)  # each object as the store keeps it (sorted-key JSON)
    notes: list[str] = field(default_factory=list)  # what was left out or only stored, once per revision
    deprecated: list[str] = field(default_factory=list)  # deprecated Flux API versions and fields used
    # "ns/name" -> a Secret's values as built (decrypted): memory only, never in bodies (the store redacts)
    secret_values: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)


def substitute(text: str, variables: Mapping[str, str], source: str) -> str:
    """Flux's postBuild: ${var}, ${var:=default}, ${var:-default}; $${var} stays literal; strict."""

    def sub(m: re.Match[str]) -> str:
        escaped, name, op, default = m.groups()
        if escaped:
            return m.group(0)[1:]
        if name in variables:
            return variables[name]
        if op:
            return default
        raise BuildError(
            f"{source}: variable ${{{name}}} is not set and has no default (postBuild.substitute)"
        )

    return _VAR.sub(sub, text)


DISABLED = "kustomize.toolkit.fluxcd.io/substitute"


def _substituted(text: str, variables: Mapping[str, str], source: str) -> str:
    """The text substituted, except objects labelled or annotated `substitute: disabled` (Flux's opt-out)."""
    if DISABLED not in text:
        return substitute(text, variables, source)
    out: list[Any] = []
    for doc in documents(text, source):
        meta: Any = doc.get("metadata") if isinstance(doc, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        marks = [
            m.get(DISABLED) for m in (meta.get("labels"), meta.get("annotations")) if isinstance(m, dict)
        ]
        if "disabled" in marks:
            out.append(doc)
        else:  # as Flux: the object as YAML, substituted, read again
            out += documents(substitute(yaml.safe_dump(doc, sort_keys=False), variables, source), source)
    return yaml.safe_dump_all(out, sort_keys=False)


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise BuildError(
        "a kustomization.yaml needs kustomize: install `kubectl` (it carries Kustomize) or a "
        "`kustomize` binary"
    )


async def kustomize(directory: Path, timeout_s: float, shown: str | None = None) -> str:
    cmd = [*kustomize_command(), str(directory)]
    where = shown or str(directory)
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildError(f"{' '.join(cmd[:2])} {where} did not finish in {timeout_s:g}s") from None
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:2])} {where} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


class BuildCache:
    """Parsed objects by the text they came from: an unchanged path is not parsed again (no-change reconciles,
    and every other Kustomization of a source when one file changes)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: dict[str, Built] = {}

    def get(self, key: str) -> Built | None:
        return self._items.get(key)

    def put(self, key: str, built: Built) -> None:
        if len(self._items) >= self.size:
            self._items.pop(next(iter(self._items)))
        self._items[key] = built


async def build(
    root: Path,
    path: str,
    *,
    variables: Mapping[str, str] | None = None,
    target_namespace: str | None = None,
    timeout_s: float = 60.0,
    cache: BuildCache | None = None,
    revision: str | None = None,
    spec: KustomizationSpec | None = None,
    decryptor: Decryptor | None = None,
) -> Built:
    """Every object under `root/path`, validated, built as Flux's kustomize-controller would (flux_layout.py);
    BuildError, or ManifestError naming every bad object.

    With a cache, a revision and path built before is not read again, and text parsed before is not parsed
    again (a new revision where this path did not change)."""
    substituted = None if variables is None else dict(variables)
    if spec is not None:
        target_namespace = spec.targetNamespace
    spec_key = None if spec is None else spec.model_dump(mode="json", exclude_none=True)
    if decryptor is not None and decryptor.keys is not None:  # new keys: build again
        spec_key = {"spec": spec_key, "keys": decryptor.keys.digest}
    at_revision = json.dumps([revision, str(root), path, substituted, target_namespace, spec_key])
    if cache is not None and revision is not None and (hit := cache.get(at_revision)) is not None:
        return hit
    directory = (root / path).resolve()  # a few stats of a local tree: not worth a thread
    if not directory.is_relative_to(root.resolve()):  # noqa: ASYNC240
        raise BuildError(f"path {path!r} leaves the source")
    if not directory.is_dir():
        raise BuildError(f"path {path!r} not found in the source")
    boot, kustomized = await asyncio.to_thread(_layout, root, directory, spec)
    texts: list[tuple[str, str]] = []
    if kustomized:
        texts += await _kustomize_path(root, path, spec, timeout_s)
    else:
        for f in manifest_files(directory):
            try:
                texts.append((str(f.relative_to(root)), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise BuildError(f"{f.relative_to(root)}: cannot read: {exc}") from exc
    key = hashlib.sha256(json.dumps([texts, substituted, target_namespace, spec_key]).encode()).hexdigest()
    if cache is not None and (hit := cache.get(key)) is not None:
        return _remember(cache, [at_revision], hit)
    if decryptor is not None and any(_may_be_encrypted(text) for _, text in texts):
        texts = await _decrypted(texts, decryptor)
    built = _objects(texts, variables, None if kustomized else target_namespace, spec, boot)
    return _remember(cache, [key, at_revision], built)


def _may_be_encrypted(text: str) -> bool:
    """sops metadata, or a Secret (a generated one carries its SOPS files base64-encoded in `data`)."""
    return "sops" in text or "Secret" in text


async def _decrypted(texts: list[tuple[str, str]], decryptor: Decryptor) -> list[tuple[str, str]]:
    """SOPS parts decrypted (gitops/sops.py), before postBuild as in Flux; the text stays in memory."""

    async def one(source: str, text: str) -> tuple[str, str]:
        if not _may_be_encrypted(text):
            return source, text
        docs = documents(text, source)
        plain = await decryptor.documents(docs, source)
        if any(a is not b for a, b in zip(docs, plain, strict=True)):
            text = yaml.safe_dump_all(plain, sort_keys=False)
        return source, text

    try:  # every file at once (the decryptor bounds the sops runs in flight); the first failure stops all
        return await all_or_first_error([one(source, text) for source, text in texts])
    except DecryptionError as exc:
        raise BuildError(str(exc)) from None


def _layout(root: Path, directory: Path, spec: KustomizationSpec | None) -> tuple[Bootstrap, bool]:
    return find_bootstrap(root.resolve(), directory), uses_kustomize(directory, spec)


async def _kustomize_path(
    root: Path, path: str, spec: KustomizationSpec | None, timeout_s: float
) -> list[tuple[str, str]]:
    """kustomize's output for the path, after Flux's generated kustomization; flagd files beside it as read."""
    with tempfile.TemporaryDirectory(prefix="rheostat-build-") as scratch:
        try:
            directory, found = await asyncio.to_thread(prepare, root, path, spec, Path(scratch))
        except LayoutError as exc:
            raise BuildError(f"{path}: {exc}") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise BuildError(f"{path}: cannot prepare the kustomize build: {exc}") from exc
        try:
            texts = [(f"{path} (kustomize build)", await kustomize(directory, timeout_s, shown=path))]
        except BuildError as exc:  # kustomize names the scratch copy: say the path in the source instead
            raise BuildError(str(exc).replace(f"{Path(scratch) / 'source'}/", "")) from None
        copy = Path(scratch) / "source"
        texts += await asyncio.to_thread(
            lambda: [(str(f.relative_to(copy)), _text(f)) for f in found.flag_files]
        )
    return texts


def _text(f: Path) -> str:
    try:
        return f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BuildError(f"{f.name}: cannot read: {exc}") from exc


def _objects(
    texts: list[tuple[str, str]],
    variables: Mapping[str, str] | None,
    target_namespace: str | None,
    spec: KustomizationSpec | None,
    boot: Bootstrap,
) -> Built:
    objects: list[Manifest] = []
    files: dict[str, str] = {}
    problems: list[ManifestError] = []
    notes: list[str] = []
    deprecated: list[str] = []
    flux_parts: Counter[str] = Counter()
    adopted: list[str] = []
    not_run: list[str] = []
    secret_values: dict[str, dict[str, str]] = {}
    for source, text in texts:
        if variables is not None:  # only with postBuild, as Flux
            text = _substituted(text, variables, source)
        docs = []
        for doc in documents(text, source):
            if is_flux_component(doc):
                flux_parts[str(doc.get("kind"))] += 1
            elif (sync := _ident(doc)) in boot.adopted:
                adopted.append(f"{sync[0]} {sync[1]}")
            else:
                docs.append(doc)
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                secret_values[
                    _ident(doc)[1] if target_namespace is None else _renamed(doc, target_namespace)
                ] = _values(doc)
        loaded = read_documents(docs, source)
        problems += loaded.errors
        deprecated += [f"{obj}: {why}" for obj, why in loaded.warnings]
        for obj in loaded.objects:
            obj = _placed(obj, target_namespace, spec)
            ident = f"{obj.kind} {object_key(obj.metadata.namespace, obj.metadata.name)}"
            if ident in files:
                problems.append(
                    ManifestError(
                        source, ident, [FieldError("metadata.name", f"also declared in {files[ident]}")]
                    )
                )
                continue
            if isinstance(obj, CoreObject):
                not_run.append(f"{obj.kind} {obj.metadata.key}")
            files[ident] = source
            objects.append(obj)
    if problems:
        raise problems[0] if len(problems) == 1 else ManifestErrors(problems)
    if flux_parts:
        notes.insert(0, components_note(flux_parts))
    if adopted:
        paths = f" (it applies {', '.join(boot.sync_paths)})" if boot.sync_paths else ""
        notes.insert(
            0,
            f"adopted from {', '.join(boot.folders)}: {', '.join(sorted(adopted))}; they describe the repository "
            f"Rheostat already follows{paths}",
        )
    if not_run:
        notes.append(f"stored, not run on the local platform: {', '.join(not_run)}")
    bodies = [
        json.dumps(o.model_dump(mode="json", exclude_none=True, by_alias=True), sort_keys=True)
        for o in objects
    ]
    return Built(objects, files, bodies, notes, deprecated, secret_values)


def _values(doc: dict[str, Any]) -> dict[str, str]:
    """A Secret's values as text: `data` base64-decoded, then `stringData` over it (as the API server)."""
    out: dict[str, str] = {}
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    assert isinstance(data, dict)
    for name, value in data.items():
        try:
            out[str(name)] = base64.b64decode("".join(str(value).split()), validate=True).decode()
        except (binascii.Error, ValueError):
            continue  # a binary value is no variable
    string = doc.get("stringData") if isinstance(doc.get("stringData"), dict) else {}
    assert isinstance(string, dict)
    out.update({str(k): str(v) for k, v in string.items()})
    return out


def _renamed(doc: dict[str, Any], namespace: str) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return f"{namespace}/{meta.get('name', '')}"


def _ident(doc: Any) -> tuple[str, str]:
    if not isinstance(doc, dict):
        return ("", "")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return (str(doc.get("kind")), f"{meta.get('namespace', 'default')}/{meta.get('name', '')}")


def _placed(obj: Manifest, target_namespace: str | None, spec: KustomizationSpec | None) -> Manifest:
    """targetNamespace on a plain folder (kustomize sets it otherwise), then Flux's commonMetadata."""
    update: dict[str, Any] = {}
    if target_namespace is not None and obj.kind != "Namespace":
        update["namespace"] = target_namespace
    common = spec.commonMetadata if spec is not None else None
    if common is not None:
        update["labels"] = {**obj.metadata.labels, **common.labels}
        update["annotations"] = {**obj.metadata.annotations, **common.annotations}
    if not update:
        return obj
    return obj.model_copy(update={"metadata": obj.metadata.model_copy(update=update)})


def _remember(cache: BuildCache | None, keys: list[str], built: Built) -> Built:
    if cache is not None:
        for key in keys:
            cache.put(key, built)
    return built
