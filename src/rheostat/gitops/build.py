"""Building a Kustomization's objects from a source tree: plain YAML, or a real kustomize; then postBuild."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rheostat.model.base import object_key
from rheostat.model.load import FieldError, Manifest, ManifestError, manifest_files, parse_text

KUSTOMIZE_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_VAR = re.compile(r"\$(\$?)\{([_a-zA-Z][_a-zA-Z0-9]*)(?::([=-])([^}]*))?\}")


class BuildError(Exception):
    """The tree could not be built; names the path, the file and what is wrong."""


@dataclass(frozen=True)
class Built:
    objects: list[Manifest]
    files: dict[str, str]  # "Kind ns/name" -> the file it came from (for trace)
    bodies: list[str] = field(default_factory=list)  # each object as the store keeps it (sorted-key JSON)


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


def kustomize_command() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    raise BuildError(
        "a kustomization.yaml needs kustomize: install `kubectl` (it carries Kustomize) or a "
        "`kustomize` binary"
    )


async def kustomize(directory: Path, timeout_s: float) -> str:
    cmd = [*kustomize_command(), str(directory)]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BuildError(f"{' '.join(cmd[:2])} {directory} did not finish in {timeout_s:g}s") from None
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd[:2])} {directory} failed: {err.decode(errors='replace').strip()}")
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
) -> Built:
    """Every object under `root/path`, validated; BuildError or ManifestError for the first problem.

    With a cache, a revision and path built before is not read again, and text parsed before is not parsed
    again (a new revision where this path did not change)."""
    substituted = None if variables is None else dict(variables)
    at_revision = json.dumps([revision, str(root), path, substituted, target_namespace])
    if cache is not None and revision is not None and (hit := cache.get(at_revision)) is not None:
        return hit
    directory = (root / path).resolve()  # a few stats of a local tree: not worth a thread
    if not directory.is_relative_to(root.resolve()):  # noqa: ASYNC240
        raise BuildError(f"path {path!r} leaves the source")
    if not directory.is_dir():
        raise BuildError(f"path {path!r} not found in the source")
    texts: list[tuple[str, str]] = []
    if any((directory / name).is_file() for name in KUSTOMIZE_FILES):
        texts.append((f"{path} (kustomize build)", await kustomize(directory, timeout_s)))
    else:
        for f in manifest_files(directory):
            try:
                texts.append((str(f.relative_to(root)), f.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise BuildError(f"{f.relative_to(root)}: cannot read: {exc}") from exc
    key = hashlib.sha256(json.dumps([texts, substituted, target_namespace]).encode()).hexdigest()
    if cache is not None and (hit := cache.get(key)) is not None:
        return _remember(cache, [at_revision], hit)
    objects: list[Manifest] = []
    files: dict[str, str] = {}
    for source, text in texts:
        if variables is not None:  # only with postBuild, as Flux
            text = substitute(text, variables, source)
        for obj in parse_text(text, source):
            if target_namespace is not None:
                meta = obj.metadata.model_copy(update={"namespace": target_namespace})
                obj = obj.model_copy(update={"metadata": meta})
            ident = f"{obj.kind} {object_key(obj.metadata.namespace, obj.metadata.name)}"
            if ident in files:
                raise ManifestError(
                    source, ident, [FieldError("metadata.name", f"also declared in {files[ident]}")]
                )
            files[ident] = source
            objects.append(obj)
    bodies = [
        json.dumps(o.model_dump(mode="json", exclude_none=True, by_alias=True), sort_keys=True)
        for o in objects
    ]
    return _remember(cache, [key, at_revision], Built(objects, files, bodies))


def _remember(cache: BuildCache | None, keys: list[str], built: Built) -> Built:
    if cache is not None:
        for key in keys:
            cache.put(key, built)
    return built
