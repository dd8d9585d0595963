"""Flux's ignore rules on an extracted tree: default exclusions, `.sourceignore` files, then `spec.ignore`.

gitignore semantics (pathspec's gitwildmatch): the last matching rule wins, a `.sourceignore` speaks for its
own directory and below, a deeper one overrides a shallower one, and `spec.ignore` comes last so it can
re-include (`!*.png`) what the defaults or a `.sourceignore` excluded. An excluded directory is removed
whole: as in git, nothing inside it can be re-included.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from pathspec import GitIgnoreSpec

SOURCEIGNORE = ".sourceignore"

DEFAULT_EXCLUSIONS = (
    # version control
    ".git/",
    ".gitignore",
    ".gitmodules",
    ".gitattributes",
    # binaries and archives
    "*.jpg",
    "*.jpeg",
    "*.gif",
    "*.png",
    "*.wmv",
    "*.flv",
    "*.tar.gz",
    "*.zip",
    # CI configuration
    ".github/",
    ".circleci/",
    ".travis.yml",
    ".gitlab-ci.yml",
    "appveyor.yml",
    ".drone.yml",
    "cloudbuild.yaml",
    "codeship-services.yml",
    "codeship-steps.yml",
    # tools that are not manifests
    "**/.goreleaser.yml",
    "**/.sops.yaml",
    "**/.flux.yaml",
)


def rules_digest(ignore: str | None) -> str:
    """Changes when the rules given in the spec change (then an existing tree is extracted again)."""
    return hashlib.sha256((ignore or "").encode()).hexdigest()[:16]


class Rules:
    def __init__(self, ignore: str | None) -> None:
        self.default = GitIgnoreSpec.from_lines(DEFAULT_EXCLUSIONS)
        self.spec = GitIgnoreSpec.from_lines(ignore.splitlines()) if ignore else None
        self.local: dict[str, GitIgnoreSpec] = {}  # directory ("" is the root) -> its .sourceignore

    def ignored(self, rel: str, is_dir: bool) -> bool:
        layers: list[tuple[str, GitIgnoreSpec]] = [("", self.default)]
        parts = rel.split("/")
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            if base in self.local:
                layers.append((base, self.local[base]))
        if self.spec is not None:
            layers.append(("", self.spec))
        decision = False
        for base, spec in layers:
            sub = rel[len(base) + 1 :] if base else rel
            result = spec.check_file(sub + "/" if is_dir else sub)
            if result.include is not None:
                decision = result.include
        return decision


def apply(root: Path, ignore: str | None) -> None:
    """Delete, in place, every path of the tree under `root` that the rules exclude."""
    rules = Rules(ignore)
    for top, dirs, files in os.walk(root, topdown=True):
        here = Path(top)
        rel_top = here.relative_to(root).as_posix()
        prefix = "" if rel_top == "." else rel_top + "/"
        if SOURCEIGNORE in files:
            lines = (here / SOURCEIGNORE).read_text(errors="replace").splitlines()
            rules.local[prefix.rstrip("/")] = GitIgnoreSpec.from_lines(lines)
        for d in list(dirs):
            if rules.ignored(prefix + d, is_dir=not (here / d).is_symlink()):
                _remove(here / d)
                dirs.remove(d)
        for f in files:
            if rules.ignored(prefix + f, is_dir=False):
                (here / f).unlink()


def apply_paths(root: Path, ignore: str | None, paths: list[str]) -> None:
    """`apply` for a few paths of an existing tree: each checked against the .sourceignore files above it."""
    rules = Rules(ignore)
    for rel in paths:
        parts = rel.split("/")
        for depth in range(len(parts)):
            base = "/".join(parts[:depth])
            local = root / base / SOURCEIGNORE
            if base not in rules.local and local.is_file():
                rules.local[base] = GitIgnoreSpec.from_lines(local.read_text(errors="replace").splitlines())
        ignored = any(
            rules.ignored("/".join(parts[: d + 1]), is_dir=d < len(parts) - 1) for d in range(len(parts))
        )
        target = root / rel
        if ignored and (target.exists() or target.is_symlink()):
            _remove(target) if target.is_dir() and not target.is_symlink() else target.unlink()


def _remove(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path)
