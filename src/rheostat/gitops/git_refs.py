"""Turning a GitRef and the remote's advertised refs (`git ls-remote`) into one commit, Flux's way."""

from __future__ import annotations

import re
from dataclasses import dataclass

import nodesemver  # type: ignore[import-untyped]

from rheostat.gitops.git_types import GitError, GitRef

_BAD_NAME = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class Target:
    refname: str  # the remote ref to fetch ("refs/heads/main"); "" for a bare commit
    label: str  # the revision's name part ("main", "v1.2.0", "refs/pull/1/head"); "" for a bare commit
    commit: str
    tag_object: str | None = None  # set for an annotated tag: the object whose signature Tag mode checks
    branch_tip: str | None = None  # for commit-on-branch: the branch's head, which must contain the commit

    @property
    def revision(self) -> str:
        return f"{self.label}@sha1:{self.commit}" if self.label else f"sha1:{self.commit}"


def patterns(ref: GitRef) -> list[str]:
    """What to ask `git ls-remote` for, so a remote with many refs answers with few lines."""
    _check_names(ref)
    if ref.commit:
        return [f"refs/heads/{ref.branch}"] if ref.branch else []
    if ref.name:
        return [ref.name, f"{ref.name}^{{}}"]
    if ref.semver:
        return ["refs/tags/*"]
    if ref.tag:
        return [f"refs/tags/{ref.tag}", f"refs/tags/{ref.tag}^{{}}"]
    if ref.branch:
        return [f"refs/heads/{ref.branch}"]
    return ["HEAD"]


def parse_ls_remote(text: str) -> tuple[dict[str, str], str | None]:
    """Refs to object ids, and the branch the remote HEAD points at (from `--symref`)."""
    refs: dict[str, str] = {}
    head = None
    for line in text.splitlines():
        sha, _, name = line.partition("\t")
        if sha.startswith("ref: ") and name == "HEAD":
            head = sha.removeprefix("ref: ")
        elif name:
            refs[name] = sha
    return refs, head


def choose(ref: GitRef, refs: dict[str, str], head: str | None) -> Target:
    """Flux precedence: commit (with an optional branch) > name > semver > tag > branch > remote HEAD."""
    if ref.commit:
        commit = ref.commit.lower()
        if not _SHA.match(commit):
            raise GitError("InvalidSpec", f"commit {ref.commit!r} is not a full SHA-1 hex id")
        if not ref.branch:
            return Target("", "", commit)
        tip = _need(refs, f"refs/heads/{ref.branch}", f"branch {ref.branch!r}")
        return Target(f"refs/heads/{ref.branch}", ref.branch, commit, branch_tip=tip)
    if ref.name:
        return _target(refs, ref.name, ref.name, f"ref {ref.name!r}")
    if ref.semver:
        tag = best_tag(ref.semver, [n.removeprefix("refs/tags/") for n in refs if _plain_tag(n)])
        return _target(refs, f"refs/tags/{tag}", tag, f"tag {tag!r}")
    if ref.tag:
        return _target(refs, f"refs/tags/{ref.tag}", ref.tag, f"tag {ref.tag!r}")
    if ref.branch:
        return _target(refs, f"refs/heads/{ref.branch}", ref.branch, f"branch {ref.branch!r}")
    sha = _need(refs, "HEAD", "a HEAD (is the repository empty?)")
    if head is None:  # a detached remote HEAD
        return Target("HEAD", "HEAD", sha)
    return Target(head, head.removeprefix("refs/heads/"), sha)


def best_tag(spec: str, tags: list[str]) -> str:
    """The highest tag in the Masterminds-style range, parsed by node-semver (npm ranges; ',' means AND).

    Pre-release tags count only when the range names a pre-release, and then any of them does, as in
    Masterminds (`>=1.0.0-0` takes 1.1.0-rc.1; npm would take only pre-releases of 1.0.0).
    """
    rng = " ".join(spec.replace(",", " ").split())
    if not rng or nodesemver.valid_range(rng, True) is None:
        raise GitError("InvalidSpec", f"semver range {spec!r} is not valid")
    versions = [t for t in tags if nodesemver.valid(t, True) is not None]
    pre = re.search(r"\d-[0-9A-Za-z]", rng) is not None  # "1.0.0-0", not the hyphen range "1.0 - 2.0"
    best: object = nodesemver.max_satisfying(versions, rng, loose=True, include_prerelease=pre)
    if not isinstance(best, str):
        raise GitError(
            "RefNotFound", f"no tag matches the semver range {spec!r} ({len(versions)} version tags)"
        )
    return best


def _check_names(ref: GitRef) -> None:
    """Names reach git's argv: refuse what git could read as an option or what no ref can be called."""
    for field, value in (("branch", ref.branch), ("tag", ref.tag), ("name", ref.name)):
        if value is not None and (not value or value.startswith("-") or _BAD_NAME.search(value)):
            raise GitError("InvalidSpec", f"ref {field} {value!r} is not a valid git ref name")
    if ref.name and not ref.name.startswith("refs/") and ref.name != "HEAD":
        raise GitError("InvalidSpec", f"ref name {ref.name!r} must be a full ref such as refs/pull/1/head")


def _plain_tag(name: str) -> bool:
    return name.startswith("refs/tags/") and not name.endswith("^{}")


def _need(refs: dict[str, str], name: str, what: str) -> str:
    sha = refs.get(name)
    if sha is None:
        raise GitError("RefNotFound", f"{what} not found on the remote")
    return sha


def _target(refs: dict[str, str], name: str, label: str, what: str) -> Target:
    sha = _need(refs, name, what)
    peeled = refs.get(f"{name}^{{}}")  # only an annotated tag has a peeled line
    if peeled is not None:
        return Target(name, label, peeled, tag_object=sha)
    return Target(name, label, sha)
