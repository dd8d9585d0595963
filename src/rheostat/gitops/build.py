"""Building a Kustomization's objects from a source tree: plain YAML, or a real kustomize; then postBuild."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
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


async def build(
    root: Path,
    path: str,
    *,
    variables: Mapping[str, str] | None = None,
    target_namespace: str | None = None,
    timeout_s: float = 60.0,
) -> Built:
    """Every object under `root/path`, validated; BuildError or ManifestError for the first problem."""
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
    return Built(objects, files)
