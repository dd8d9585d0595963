"""Fetching a Flux GitRepository source with the real git binary.

One call resolves the ref with `git ls-remote`, fetches just that commit (depth 1) into a bare cache repository
in `workdir`, checks signatures when asked, and extracts the commit's tree, with the ignore rules applied, to
`workdir/artifacts/<sha>`. Only the newest artifact is kept. When the resolved commit already has an artifact
made with the same rules (and verification), nothing is fetched or extracted again, also after a restart.

Behaviour worth knowing:
- A force-pushed branch simply resolves to its new commit. A deleted tag is RefNotFound.
- With no ref at all the remote's HEAD branch is used (Flux uses `master`).
- `resolve` with only `commit` set asks the remote nothing: a commit id cannot be looked up with ls-remote.
- Credentials reach git only through environment variables and 0600 files in a private temp directory that
  is removed after the call; they never appear in argv, URLs, messages or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import shutil
import tarfile
import tempfile
import weakref
from collections.abc import AsyncIterator
from pathlib import Path

from rheostat.gitops import git_ignore
from rheostat.gitops.git_auth import Remote, build_auth, check_url
from rheostat.gitops.git_refs import Target, choose, parse_ls_remote, patterns
from rheostat.gitops.git_run import Runner, base_env
from rheostat.gitops.git_types import Artifact, Credentials, GitError, GitRef, Verification
from rheostat.gitops.git_verify import Verifier

__all__ = ["Artifact", "Credentials", "GitError", "GitRef", "Verification", "fetch", "resolve"]

_LOCAL_REF = "refs/rheostat/target"
_locks: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = weakref.WeakValueDictionary()


async def resolve(
    url: str, ref: GitRef, *, credentials: Credentials | None = None, timeout_s: float = 60.0
) -> tuple[str, str]:
    """(remote ref name, commit) by `git ls-remote` only: the cheap "has it changed?" check.

    The ref name is "" for a bare commit ref.
    """
    remote = check_url(url)
    async with _session(remote, credentials, timeout_s) as (runner, _):
        target = await _resolve(runner, remote, ref)
    return target.refname, target.commit


async def fetch(
    url: str,
    ref: GitRef,
    *,
    workdir: Path,
    credentials: Credentials | None = None,
    verify: Verification | None = None,
    ignore: str | None = None,
    timeout_s: float = 60.0,
    last: Artifact | None = None,
) -> Artifact:
    """The artifact of the commit `ref` resolves to; GitError with a Flux reason otherwise.

    A commit that fails verification produces no artifact, and the previous one stays on disk.
    `last` is accepted from callers that keep the previous result, but whether the resolved commit needs
    fetching is decided by the stamp kept beside each artifact, which also holds across a restart.
    """
    del last  # see above: the stamp on disk is the record
    remote = check_url(url)
    workdir = _absolute(workdir)
    async with _lock(workdir), _session(remote, credentials, timeout_s) as (runner, scratch):
        target = await _resolve(runner, remote, ref)
        stamp = _Stamp.read(workdir, target.commit)
        rules = git_ignore.rules_digest(ignore)
        if (
            stamp is not None
            and stamp.rules == rules
            and (verify is None or stamp.verify == _vkey(verify, target))
            and await _still_on_branch(runner, workdir, target)
        ):
            path = stamp.path(workdir)
            return Artifact(
                target.revision, target.commit, path, stamp.verified_by if verify else None, stamp.message
            )

        cache = await _cache(runner, workdir)
        target = await _fetch(runner, remote, cache, ref, target)
        verified_by = None
        if verify is not None:
            verified_by = await Verifier(runner, cache, scratch, verify).check(target)
        message = (await runner.git("log", "-1", "--format=%s", target.commit, cwd=cache)).out.strip()
        previous = _Stamp.latest(workdir, other_than=target.commit)
        changed: tuple[str, ...] | None = None
        if stamp is not None and stamp.rules == rules and stamp.path(workdir).is_dir():
            path = stamp.path(workdir)  # only the verification was new: the tree is still good
        elif (
            previous is not None
            and previous.rules == rules
            and (updated := await _update(runner, cache, workdir, previous.commit, target.commit, ignore))
        ):
            path, changed = updated
        else:
            path = await _extract(runner, cache, workdir, target.commit, ignore)
        new = _Stamp(target.commit, rules, _vkey(verify, target) if verify else "", verified_by, message)
        new.write(workdir)
        _prune(workdir, keep=target.commit)
        return Artifact(
            target.revision,
            target.commit,
            path,
            verified_by,
            message,
            changed,
            previous.commit if previous is not None and changed is not None else None,
        )


@contextlib.asynccontextmanager
async def _session(
    remote: Remote, credentials: Credentials | None, timeout_s: float
) -> AsyncIterator[tuple[Runner, Path]]:
    scratch = Path(tempfile.mkdtemp(prefix="rheostat-git-"))  # 0700; holds 0600 key and credential files
    try:
        auth = build_auth(remote, credentials, scratch)
        env = base_env() | auth.finish()
        yield Runner(env, timeout_s, auth.secrets), scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _absolute(workdir: Path) -> Path:
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _lock(workdir: Path) -> asyncio.Lock:
    """One fetch at a time per workdir (per event loop: asyncio locks belong to one loop)."""
    key = (id(asyncio.get_running_loop()), str(workdir))
    lock = _locks.get(key)
    if lock is None:
        lock = asyncio.Lock()
        _locks[key] = lock
    return lock


async def _resolve(runner: Runner, remote: Remote, ref: GitRef) -> Target:
    wanted = patterns(ref)
    if not wanted:  # a bare commit: nothing to ask the remote
        return choose(ref, {}, None)
    res = await runner.git("ls-remote", "--symref", remote.url, *wanted)
    refs, head = parse_ls_remote(res.out)
    return choose(ref, refs, head)


async def _cache(runner: Runner, workdir: Path) -> Path:
    cache = workdir / "cache.git"
    if not (cache / "HEAD").exists():
        await runner.git("init", "--bare", "--quiet", str(cache))
        # The artifact is the tree as committed: no export-ignore / export-subst rewriting by `git archive`.
        (cache / "info").mkdir(exist_ok=True)
        (cache / "info" / "attributes").write_text("* -export-ignore -export-subst\n")
    return cache


async def _still_on_branch(runner: Runner, workdir: Path, target: Target) -> bool:
    """A commit-on-branch artifact is reusable only while the branch (maybe force-pushed) holds the commit."""
    if target.branch_tip is None:
        return True
    check = ("merge-base", "--is-ancestor", target.commit, target.branch_tip)
    return (await runner.git(*check, cwd=workdir / "cache.git", check=False)).rc == 0


async def _has(runner: Runner, cache: Path, obj: str) -> bool:
    return (await runner.git("cat-file", "-e", obj, cwd=cache, check=False)).rc == 0


async def _fetch(runner: Runner, remote: Remote, cache: Path, ref: GitRef, target: Target) -> Target:
    """Bring the target commit (and its tag object) into the cache; the fewest objects that do it."""
    if not target.refname:  # a bare commit id
        if not await _has(runner, cache, f"{target.commit}^{{commit}}"):
            await _fetch_or_missing(
                runner, cache, remote, target.commit, f"commit {target.commit}", "--depth", "1"
            )
        await runner.git("update-ref", _LOCAL_REF, target.commit, cwd=cache)
        return target
    if ref.commit:  # commit on a branch: the branch's history is needed to see that it holds the commit
        deepen = await runner.git("rev-parse", "--is-shallow-repository", cwd=cache)
        extra = ["--unshallow"] if deepen.out.strip() == "true" else []
        spec = f"+{target.refname}:{_LOCAL_REF}"
        await _fetch_or_missing(runner, cache, remote, spec, f"branch {target.label!r}", *extra)
        inside = await runner.git(
            "merge-base", "--is-ancestor", target.commit, _LOCAL_REF, cwd=cache, check=False
        )
        if inside.rc != 0:
            raise GitError("RefNotFound", f"commit {target.commit} is not on branch {target.label!r}")
        return target
    wanted = target.tag_object or target.commit
    if await _has(runner, cache, wanted):
        await runner.git("update-ref", _LOCAL_REF, wanted, cwd=cache)
        return target
    await _fetch_or_missing(
        runner, cache, remote, f"+{target.refname}:{_LOCAL_REF}", target.label, "--depth", "1"
    )
    # The ref may have moved since ls-remote: take what was fetched.
    res = await runner.git("rev-parse", _LOCAL_REF, f"{_LOCAL_REF}^{{commit}}", cwd=cache)
    obj, commit = res.out.split()
    return dataclasses.replace(target, commit=commit, tag_object=obj if obj != commit else None)


async def _fetch_or_missing(
    runner: Runner, cache: Path, remote: Remote, spec: str, what: str, *extra: str
) -> None:
    try:
        await runner.git(
            "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", *extra, remote.url, spec, cwd=cache
        )
    except GitError as exc:
        if exc.reason == "RefNotFound":
            raise GitError("RefNotFound", f"{what} not found on the remote") from None
        raise
    if not spec.startswith("+") and not await _has(runner, cache, f"{spec}^{{commit}}"):
        raise GitError("RefNotFound", f"{what} not found on the remote")


MAX_INCREMENTAL = 500  # changed paths; past this a full extraction is as quick


async def _extract(runner: Runner, cache: Path, workdir: Path, commit: str, ignore: str | None) -> Path:
    store = workdir / "artifacts"
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{commit}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    archive = store / f".{commit}.tar"
    try:
        await runner.git("archive", "--format=tar", f"--output={archive}", commit, cwd=cache)
        await asyncio.to_thread(_unpack, archive, tmp, ignore)
        dest = store / commit
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest
    finally:
        archive.unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


async def _update(
    runner: Runner, cache: Path, workdir: Path, previous: str, commit: str, ignore: str | None
) -> tuple[Path, tuple[str, ...]] | None:
    """The previous tree turned into `commit` by applying only what changed (one file changed in a large
    repository costs one file, not the whole tree). None when a full extraction is the better way."""
    store = workdir / "artifacts"
    try:
        diff = (
            await runner.git("diff", "--no-renames", "--name-status", "-z", previous, commit, cwd=cache)
        ).out
    except GitError:
        return None  # the previous commit is no longer in the cache: extract in full
    fields = diff.split("\0")
    changes = [(fields[i], fields[i + 1]) for i in range(0, len(fields) - 1, 2)]
    if len(changes) > MAX_INCREMENTAL or any(
        p.rsplit("/", 1)[-1] == git_ignore.SOURCEIGNORE for _, p in changes
    ):
        return None
    tmp = store / f".{commit}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    (store / previous).rename(tmp)
    archive = store / f".{commit}.tar"
    try:
        for status, rel in changes:
            if status == "D":
                (tmp / rel).unlink(missing_ok=True)
        changed = [rel for status, rel in changes if status != "D"]
        if changed:
            await runner.git(
                "archive", "--format=tar", f"--output={archive}", commit, "--", *changed, cwd=cache
            )
            await asyncio.to_thread(_unpack_over, archive, tmp, ignore, changed)
        dest = store / commit
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest, tuple(rel for _, rel in changes)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        archive.unlink(missing_ok=True)


def _unpack_over(archive: Path, dest: Path, ignore: str | None, paths: list[str]) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter=_safe_member)
    git_ignore.apply_paths(dest, ignore, paths)


def _unpack(archive: Path, dest: Path, ignore: str | None) -> None:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter=_safe_member)
    git_ignore.apply(dest, ignore)


def _safe_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """tarfile's "data" rules; a member they refuse (a link out of the tree) is left out, not fatal."""
    try:
        return tarfile.data_filter(member, dest)
    except tarfile.FilterError:
        return None


def _prune(workdir: Path, keep: str) -> None:
    for entry in (workdir / "artifacts").iterdir():
        if entry.name in (keep, f"{keep}.json"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _vkey(verify: Verification, target: Target) -> str:
    """What a verification result depends on: the mode, the keys, and the tag object that was checked."""
    blob = json.dumps([verify.mode, verify.pgp_keys, verify.ssh_keys, target.tag_object])
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class _Stamp:
    """Written beside an artifact: what it was made with, so an unchanged commit is not fetched again."""

    commit: str
    rules: str
    verify: str
    verified_by: str | None
    message: str

    def path(self, workdir: Path) -> Path:
        return workdir / "artifacts" / self.commit

    @classmethod
    def latest(cls, workdir: Path, other_than: str) -> _Stamp | None:
        """The artifact kept from the last fetch, if any (pruning keeps one)."""
        for file in (workdir / "artifacts").glob("*.json"):
            if file.stem != other_than and (stamp := cls.read(workdir, file.stem)) is not None:
                return stamp
        return None

    @classmethod
    def read(cls, workdir: Path, commit: str) -> _Stamp | None:
        file = workdir / "artifacts" / f"{commit}.json"
        try:
            stamp = cls(**json.loads(file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        return stamp if stamp.path(workdir).is_dir() else None

    def write(self, workdir: Path) -> None:
        file = workdir / "artifacts" / f"{self.commit}.json"
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(file)
