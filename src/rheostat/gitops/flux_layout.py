"""Flux's layout: the kustomization.yaml kustomize-controller generates, and the bootstrap folder.

The rules are those of Flux's generator (fluxcd/pkg `kustomize/kustomize_generator.go`):

- a path with a kustomization.yaml (or .yml, or `Kustomization`) is built as it is;
- otherwise one is generated: its resources are every `.yaml`/`.yml` file under the path, walking down the
  folders, except that a folder holding its own kustomization file is listed as one resource and not
  entered. A YAML file that is not Kubernetes objects fails the build, naming the file;
- the Kustomization's `targetNamespace` becomes the file's `namespace`; its `patches`,
  `patchesStrategicMerge`, `patchesJson6902` and `components` are appended; its `images` replace an entry of
  the same name or are appended; `namePrefix` and `nameSuffix` are set;
- `commonMetadata` and `postBuild` act on the built objects (build.py).

Flux does this in a scratch copy of the artifact; so does `prepare`, so the artifact is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rheostat.model.flags import is_flagd_document
from rheostat.model.gitops import KustomizationSpec
from rheostat.model.yaml_limits import safe_load, safe_load_all

KUSTOMIZE_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
BOOTSTRAP_FILES = ("gotk-components.yaml", "gotk-sync.yaml")
FLUX_PART_OF = "flux"  # app.kubernetes.io/part-of on every object of gotk-components.yaml


class LayoutError(Exception):
    """The path cannot be turned into a kustomization as Flux would; names the file."""


def kustomization_file(directory: Path) -> Path | None:
    return next((directory / n for n in KUSTOMIZE_FILES if (directory / n).is_file()), None)


def uses_kustomize(directory: Path, spec: KustomizationSpec | None = None) -> bool:
    """True when Flux's build of this path goes through kustomize in a way plain reading would not match:
    a kustomization file here or in a folder below, or Kustomization fields only kustomize applies."""
    if spec is not None and spec.needs_kustomize:
        return True
    if kustomization_file(directory) is not None:
        return True
    return any(p.name in KUSTOMIZE_FILES for p in _walk(directory))


def _walk(directory: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames)]
    return out


@dataclass
class Scan:
    resources: list[str] = field(default_factory=list)  # relative to the path, "./x.yaml", "./sub"
    flag_files: list[Path] = field(default_factory=list)  # flagd files: read by Rheostat, not by kustomize


def scan(directory: Path) -> Scan:
    """Flux's generator walk of a path that has no kustomization file."""
    out = Scan()

    def visit(folder: Path) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.is_symlink():
                continue
            rel = "./" + entry.relative_to(directory).as_posix()
            if entry.is_dir():
                if kustomization_file(entry) is not None:
                    out.resources.append(rel)  # built by its own kustomization, not entered
                else:
                    visit(entry)
            elif entry.suffix in (".yaml", ".yml"):
                if _objects_or_flags(entry) == "flags":
                    out.flag_files.append(entry)
                else:
                    out.resources.append(rel)
            elif entry.suffix == ".json" and _is_flag_json(entry):
                out.flag_files.append(entry)  # flagd's JSON files, as a plain folder reads them

    visit(directory)
    return out


def _is_flag_json(path: Path) -> bool:
    try:
        return is_flagd_document(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, RecursionError):
        return False


def _objects_or_flags(path: Path) -> str:
    try:
        docs = safe_load_all(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise LayoutError(f"failed to decode Kubernetes YAML from {path.name}: {exc}") from exc
    if docs and all(is_flagd_document(d) for d in docs):
        return "flags"
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not doc.get("apiVersion") or not doc.get("kind"):
            raise LayoutError(
                f"failed to decode Kubernetes YAML from {path.name}: document {i + 1} has no apiVersion and "
                "kind (Flux reads every .yaml file of a path without kustomization.yaml)"
            )
    return "objects"


def prepare(root: Path, path: str, spec: KustomizationSpec | None, scratch: Path) -> tuple[Path, Scan]:
    """Copy the source to `scratch` and write the kustomization.yaml Flux would build there; the folder to
    build, and the flagd files found beside the objects."""
    copy = scratch / "source"
    shutil.copytree(root, copy, ignore=_outside(root), copy_function=_link_or_copy)
    directory = copy / path
    existing = kustomization_file(directory)
    found = Scan() if existing is not None else scan(directory)
    kus: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if existing is not None:
        loaded = safe_load(existing.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise LayoutError(f"{path}/{existing.name}: expected a mapping")
        kus = loaded
    else:
        kus["resources"] = found.resources
    if spec is not None:
        _merge(kus, spec, root, directory.relative_to(copy))
    target = existing or directory / "kustomization.yaml"
    if existing is None or spec is not None:
        target.unlink(missing_ok=True)  # maybe a hard link to the artifact's file: never write through it
        target.write_text(yaml.safe_dump(kus, sort_keys=False), encoding="utf-8")
    return directory, found


def _merge(kus: dict[str, Any], spec: KustomizationSpec, root: Path, rel: Path) -> None:
    """The Kustomization's fields into the kustomization file, as Flux's generator writes them."""
    if spec.targetNamespace:
        kus["namespace"] = spec.targetNamespace
    for p in spec.patches:
        entry: dict[str, Any] = {"patch": p.patch}
        if p.target is not None:
            entry["target"] = p.target.model_dump(exclude_none=True)
        kus.setdefault("patches", []).append(entry)
    for sm in spec.patchesStrategicMerge:
        kus.setdefault("patchesStrategicMerge", []).append(yaml.safe_dump(sm))
    for jp in spec.patchesJson6902:
        kus.setdefault("patchesJson6902", []).append(
            {"target": jp.target.model_dump(exclude_none=True), "patch": yaml.safe_dump(jp.patch)}
        )
    for image in spec.images:
        new = image.model_dump(exclude_none=True)
        images = kus.setdefault("images", [])
        same = [i for i, old in enumerate(images) if isinstance(old, dict) and old.get("name") == image.name]
        if same:
            images[same[0]] = new
        else:
            images.append(new)
    for component in spec.components:
        where = (root / rel / component).resolve()
        if not where.is_relative_to(root.resolve()):
            raise LayoutError(f"components: {component!r} leaves the source")
        kus.setdefault("components", []).append(component)
    if spec.namePrefix:
        kus["namePrefix"] = spec.namePrefix
    if spec.nameSuffix:
        kus["nameSuffix"] = spec.nameSuffix


def _outside(root: Path) -> Any:
    """copytree's ignore: .git, and links that lead out of the source (their target is not copied)."""
    top = root.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:
        out = {".git"} & set(names)
        for name in names:
            p = Path(folder) / name
            if p.is_symlink() and not p.resolve().is_relative_to(top):
                out.add(name)
        return out

    return ignore


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or a file the link protection will not let us link
        shutil.copy2(src, dst)
    return dst


# -- the bootstrap folder -------------------------------------------------------------------------------


@dataclass
class Bootstrap:
    """What `flux bootstrap` wrote under the path: its sync objects (adopted) and its own components."""

    folders: list[str] = field(default_factory=list)
    adopted: dict[tuple[str, str], str] = field(default_factory=dict)  # (kind, "ns/name") -> its file
    sync_paths: list[str] = field(default_factory=list)  # spec.path of gotk-sync's Kustomization


def find_bootstrap(root: Path, directory: Path) -> Bootstrap:
    """The `flux-system` folders (gotk-components.yaml, gotk-sync.yaml) under the path being built."""
    out = Bootstrap()
    for f in _walk(directory):
        if f.name != "gotk-sync.yaml" and f.name != "gotk-components.yaml":
            continue
        folder = f.parent.relative_to(root).as_posix()
        if folder not in out.folders:
            out.folders.append(folder)
        if f.name != "gotk-sync.yaml":
            continue
        try:
            docs = safe_load_all(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # the build itself reports the file
        for doc in docs:
            if isinstance(doc, dict) and doc.get("kind") in ("GitRepository", "Kustomization"):
                meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
                assert isinstance(meta, dict)
                key = f"{meta.get('namespace', 'default')}/{meta.get('name', '')}"
                out.adopted[(str(doc["kind"]), key)] = f"{folder}/gotk-sync.yaml"
                spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
                assert isinstance(spec, dict)
                if doc["kind"] == "Kustomization" and isinstance(spec.get("path"), str):
                    out.sync_paths.append(spec["path"])
    return out


def is_flux_component(doc: Any) -> bool:
    """An object of Flux's own install (gotk-components.yaml): its controllers, CRDs, RBAC, namespace."""
    if not isinstance(doc, dict):
        return False
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    assert isinstance(labels, dict)
    if labels.get("app.kubernetes.io/part-of") == FLUX_PART_OF:
        return True
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    return doc.get("kind") == "CustomResourceDefinition" and str(spec.get("group", "")).endswith(
        ".toolkit.fluxcd.io"
    )


def components_note(kinds: Counter[str]) -> str:
    listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return (
        f"Flux's own components are not run, Rheostat does their work: {listed} "
        "(from the bootstrap folder's gotk-components.yaml)"
    )
