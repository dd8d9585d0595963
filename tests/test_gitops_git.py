"""The git fetch layer against real repositories: local bare ones, one served by `git http-backend` over HTTP
with basic auth, and commits and tags signed with real gpg and ssh-keygen keys made here."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rheostat.gitops.git import Artifact, Credentials, GitError, GitRef, Verification, fetch, resolve
from rheostat.gitops.git_run import classify

GIT_CONFIG = {"user.name": "Test", "user.email": "test@example.com", "init.defaultBranch": "main"}


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    full = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, **(env or {})}
    full["GIT_CONFIG_COUNT"] = str(len(GIT_CONFIG))
    for i, (k, v) in enumerate(GIT_CONFIG.items()):
        full[f"GIT_CONFIG_KEY_{i}"], full[f"GIT_CONFIG_VALUE_{i}"] = k, v
    res = subprocess.run(argv, cwd=cwd, env=full, capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 0, f"{argv}: {res.stderr}"
    return res.stdout.strip()


class Repo:
    """A work tree that pushes to a bare `origin` (the repository the code under test fetches)."""

    def __init__(self, root: Path) -> None:
        self.origin = root / "origin.git"
        self.work = root / "work"
        run("git", "init", "--bare", "--quiet", str(self.origin))
        run("git", "init", "--quiet", str(self.work))
        run("git", "remote", "add", "origin", str(self.origin), cwd=self.work)

    def git(self, *args: str, env: dict[str, str] | None = None) -> str:
        return run("git", *args, cwd=self.work, env=env)

    def commit(
        self, files: dict[str, str], message: str, *sign: str, env: dict[str, str] | None = None
    ) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self.git("add", "-A")
        self.git(
            *sign, "commit", "--quiet", "--allow-empty", "-m", message, *(["-S"] if sign else []), env=env
        )
        return self.git("rev-parse", "HEAD")

    def push(self, *refs: str) -> None:
        self.git("push", "--quiet", "--force", "origin", *refs)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo")


def text(artifact: Artifact, name: str) -> str:
    return (artifact.path / name).read_text()


# --- refs and revisions ---------------------------------------------------------------------------------


async def test_default_is_remote_head_branch_and_revision_strings(repo: Repo, tmp_path: Path) -> None:
    first = repo.commit({"app.yaml": "v: 1\n"}, "first commit")
    repo.git("checkout", "--quiet", "-b", "dev")
    dev = repo.commit({"app.yaml": "v: dev\n"}, "dev work")
    repo.git("checkout", "--quiet", "main")
    repo.push("main", "dev")

    art = await fetch(str(repo.origin), GitRef(), workdir=tmp_path / "w")
    assert art.revision == f"main@sha1:{first}"
    assert (art.commit, art.message, text(art, "app.yaml")) == (first, "first commit", "v: 1\n")
    assert art.path == (tmp_path / "w" / "artifacts" / first)

    art = await fetch(f"file://{repo.origin}", GitRef(branch="dev"), workdir=tmp_path / "w")
    assert art.revision == f"dev@sha1:{dev}"
    assert text(art, "app.yaml") == "v: dev\n"
    assert await resolve(str(repo.origin), GitRef(branch="dev")) == ("refs/heads/dev", dev)


async def test_flux_precedence_branch_tag_semver_name_commit(repo: Repo, tmp_path: Path) -> None:
    c1 = repo.commit({"f": "1"}, "one")
    repo.git("tag", "v1.0.0")
    c2 = repo.commit({"f": "2"}, "two")
    repo.git("tag", "-a", "-m", "annotated", "v1.1.0")
    c3 = repo.commit({"f": "3"}, "three")
    repo.git("update-ref", "refs/pull/7/head", c2)
    c4 = repo.commit({"f": "4"}, "four")
    repo.push("main", "--tags", "refs/pull/7/head")
    url, w = str(repo.origin), tmp_path / "w"

    async def rev(ref: GitRef) -> str:
        return (await fetch(url, ref, workdir=w)).revision

    assert await rev(GitRef(branch="main")) == f"main@sha1:{c4}"
    assert await rev(GitRef(branch="main", tag="v1.0.0")) == f"v1.0.0@sha1:{c1}"
    assert await rev(GitRef(branch="main", tag="v1.0.0", semver=">=1.0.0")) == f"v1.1.0@sha1:{c2}"  # peeled
    assert (
        await rev(GitRef(tag="v1.0.0", semver="*", name="refs/pull/7/head")) == f"refs/pull/7/head@sha1:{c2}"
    )
    assert await rev(GitRef(tag="v1.0.0", name="refs/pull/7/head", commit=c3)) == f"sha1:{c3}"
    assert await rev(GitRef(branch="main", commit=c1)) == f"main@sha1:{c1}"
    assert text(await fetch(url, GitRef(commit=c3), workdir=w), "f") == "3"

    repo.git("checkout", "--quiet", "-b", "side", c1)
    stray = repo.commit({"f": "side"}, "side")
    repo.push("side")
    with pytest.raises(GitError) as err:
        await fetch(url, GitRef(branch="main", commit=stray), workdir=w)
    assert err.value.reason == "RefNotFound" and "is not on branch 'main'" in str(err.value)
    for missing in (GitRef(branch="nope"), GitRef(tag="v9"), GitRef(name="refs/pull/1/head")):
        with pytest.raises(GitError) as err:
            await fetch(url, missing, workdir=w)
        assert err.value.reason == "RefNotFound"
    with pytest.raises(GitError) as err:
        await fetch(url, GitRef(commit="0" * 40), workdir=w)
    assert err.value.reason == "RefNotFound"
    with pytest.raises(GitError) as err:
        await fetch(url, GitRef(name="--upload-pack=touch /tmp/x"), workdir=w)
    assert err.value.reason == "InvalidSpec"


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        (">=1.0.0 <2.0.0", "v1.3.0"),
        (">=1.0.0, <2.0.0", "v1.3.0"),
        ("~1.2", "1.2.5"),
        ("^1.2", "v1.3.0"),
        ("1.2.x", "1.2.5"),
        ("*", "2.0.0"),
        (">=2.1.0-rc.0", "2.1.0-rc.1"),
        ("<1.2.0 || >=2.0.0 <2.0.1", "2.0.0"),
    ],
)
async def test_semver_ranges(tmp_path: Path, spec: str, want: str, semver_repo: Repo) -> None:
    art = await fetch(str(semver_repo.origin), GitRef(semver=spec), workdir=tmp_path / "w")
    assert art.revision.startswith(f"{want}@sha1:")
    assert text(art, "version") == want


@pytest.fixture(scope="module")
def semver_repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    repo = Repo(tmp_path_factory.mktemp("semver"))
    for tag in ("1.0.0", "1.2.0", "1.2.5", "v1.3.0", "2.0.0", "2.1.0-rc.1", "latest"):
        repo.commit({"version": tag}, f"release {tag}")
        repo.git("tag", "-a", "-m", tag, tag)
    repo.push("main", "--tags")
    return repo


async def test_semver_without_a_match_or_invalid(semver_repo: Repo, tmp_path: Path) -> None:
    with pytest.raises(GitError) as err:
        await fetch(str(semver_repo.origin), GitRef(semver=">=3.0.0"), workdir=tmp_path)
    assert err.value.reason == "RefNotFound" and ">=3.0.0" in str(err.value)
    with pytest.raises(GitError) as err:
        await fetch(str(semver_repo.origin), GitRef(semver="not a range!"), workdir=tmp_path)
    assert err.value.reason == "InvalidSpec"


async def test_force_pushed_branch_and_deleted_tag(repo: Repo, tmp_path: Path) -> None:
    repo.commit({"f": "base"}, "base")
    old = repo.commit({"f": "old"}, "old")
    repo.git("tag", "v1")
    repo.push("main", "v1")
    w = tmp_path / "w"
    assert (await fetch(str(repo.origin), GitRef(branch="main"), workdir=w)).commit == old

    repo.git("reset", "--quiet", "--hard", "HEAD~1")
    new = repo.commit({"f": "rewritten"}, "rewritten")
    repo.push("main")  # --force: history rewritten
    art = await fetch(str(repo.origin), GitRef(branch="main"), workdir=w)
    assert (art.commit, text(art, "f")) == (new, "rewritten")

    pinned = await fetch(str(repo.origin), GitRef(branch="main", commit=new), workdir=w)
    assert pinned.revision == f"main@sha1:{new}"
    repo.git("reset", "--quiet", "--hard", "HEAD~1")
    repo.commit({"f": "again"}, "again")
    repo.push("main")  # the pinned commit is no longer on main
    with pytest.raises(GitError) as err:
        await fetch(str(repo.origin), GitRef(branch="main", commit=new), workdir=w)
    assert err.value.reason == "RefNotFound" and "is not on branch" in str(err.value)

    repo.git("push", "--quiet", "origin", ":refs/tags/v1")
    with pytest.raises(GitError) as err:
        await fetch(str(repo.origin), GitRef(tag="v1"), workdir=w)
    assert err.value.reason == "RefNotFound" and "'v1'" in str(err.value)
    assert pinned.path.is_dir()  # the last good artifact stays


# --- artifacts and ignore rules --------------------------------------------------------------------------


async def test_last_artifact_kept_older_removed_no_reextraction(repo: Repo, tmp_path: Path) -> None:
    c1 = repo.commit({"a.yaml": "1"}, "one")
    repo.push("main")
    w = tmp_path / "w"
    first = await fetch(str(repo.origin), GitRef(branch="main"), workdir=w)
    (first.path / "marker").write_text("still the same tree")

    again = await fetch(str(repo.origin), GitRef(branch="main"), workdir=w, last=first)
    assert again == first and (again.path / "marker").exists()
    restarted = await fetch(str(repo.origin), GitRef(branch="main"), workdir=w)  # no `last`: the stamp
    assert restarted == first and (restarted.path / "marker").exists()
    changed_rules = await fetch(str(repo.origin), GitRef(branch="main"), workdir=w, ignore="*.md")
    assert changed_rules.commit == c1 and not (changed_rules.path / "marker").exists()

    c2 = repo.commit({"a.yaml": "2"}, "two")
    repo.push("main")
    second = await fetch(str(repo.origin), GitRef(branch="main"), workdir=w, last=first)
    assert second.commit == c2 and text(second, "a.yaml") == "2"
    assert not first.path.exists()
    assert sorted(p.name for p in (w / "artifacts").iterdir()) == [c2, f"{c2}.json"]


async def test_ignore_rules_defaults_and_sourceignore(repo: Repo, tmp_path: Path) -> None:
    repo.commit(
        {
            "deploy/app.yaml": "kind: Workload\n",
            "deploy/notes.md": "notes",
            "deploy/.sourceignore": "*.tmp\n!keep.tmp\n",
            "deploy/scratch.tmp": "x",
            "deploy/keep.tmp": "x",
            "secret/key.yaml": "x",
            ".sourceignore": "secret/\n",
            ".github/workflows/ci.yml": "x",
            ".gitlab-ci.yml": "x",
            ".gitignore": "x",
            "logo.png": "x",
            "docs/shot.jpg": "x",
            "sub/.sops.yaml": "x",
            "bundle.tar.gz": "x",
            ".gitattributes": "deploy/app.yaml export-ignore\n",
        },
        "layout",
    )
    repo.push("main")
    art = await fetch(str(repo.origin), GitRef(), workdir=tmp_path / "w", ignore="*.md\n!logo.png\n")
    files = sorted(p.relative_to(art.path).as_posix() for p in art.path.rglob("*") if p.is_file())
    assert files == [
        ".sourceignore",
        "deploy/.sourceignore",
        "deploy/app.yaml",
        "deploy/keep.tmp",
        "logo.png",
    ]


def relative(path: Path) -> str:
    return os.path.relpath(path)


async def test_url_forms(repo: Repo, tmp_path: Path) -> None:
    repo.commit({"f": "x"}, "x")
    repo.push("main")
    assert (await fetch(relative(repo.origin), GitRef(), workdir=tmp_path / "w")).message == "x"
    for bad, words in (
        ("git@github.com:org/repo.git", "scp-like"),
        ("ftp://example.com/repo.git", "not supported"),
        ("http://user:hunter2@127.0.0.1:1/repo.git", "password in the URL"),
    ):
        with pytest.raises(GitError) as err:
            await fetch(bad, GitRef(), workdir=tmp_path / "w")
        assert err.value.reason == "InvalidSpec" and words in str(err.value)
        assert "hunter2" not in str(err.value)


# --- HTTP with basic auth, unreachable servers, timeouts -------------------------------------------------


@dataclass
class HttpGit:
    base: str
    user: str
    password: str
    token: str


class _Handler(BaseHTTPRequestHandler):
    """`git http-backend` as CGI behind basic (or bearer) auth."""

    root: Path
    expected: tuple[str, ...]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().strip() or b"0", 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return data
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _serve(self) -> None:
        if self.headers.get("Authorization") not in self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "PATH": os.environ["PATH"],
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "test",
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=30
        ).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(sep)
        status, headers = 200, []
        for line in head.decode().splitlines():
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            elif key:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_git(repo: Repo) -> Iterator[HttpGit]:
    user, password, token = "flux", "s3cr3t-Pa55word", "tok-0123456789"
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    handler = type(
        "Handler", (_Handler,), {"root": repo.origin.parent, "expected": (basic, f"Bearer {token}")}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpGit(f"http://127.0.0.1:{server.server_address[1]}/origin.git", user, password, token)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


async def test_http_basic_auth(
    repo: Repo,
    http_git: HttpGit,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    argvs: list[tuple[str, ...]] = []
    real_exec = asyncio.create_subprocess_exec

    async def spy(*argv: Any, **kw: Any) -> asyncio.subprocess.Process:
        argvs.append(tuple(map(str, argv)))
        return await real_exec(*argv, **kw)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    sha = repo.commit({"app.yaml": "over http"}, "served")
    repo.git("tag", "-a", "-m", "t", "v1.0.0")
    repo.push("main", "v1.0.0")
    good = Credentials(username=http_git.user, password=http_git.password)

    art = await fetch(http_git.base, GitRef(branch="main"), workdir=tmp_path / "w", credentials=good)
    assert (art.revision, text(art, "app.yaml")) == (f"main@sha1:{sha}", "over http")
    art = await fetch(http_git.base, GitRef(semver="^1"), workdir=tmp_path / "w", credentials=good)
    assert art.revision == f"v1.0.0@sha1:{sha}"
    bearer = Credentials(bearer_token=http_git.token)
    assert await resolve(http_git.base, GitRef(), credentials=bearer) == ("refs/heads/main", sha)

    wrong = Credentials(username=http_git.user, password="wrong-" + http_git.password)
    for creds in (wrong, None):
        with pytest.raises(GitError) as err:
            await fetch(http_git.base, GitRef(branch="main"), workdir=tmp_path / "x", credentials=creds)
        assert err.value.reason == "AuthenticationFailed", err.value
    secrets = (
        http_git.password,
        http_git.token,
        base64.b64encode(f"flux:{http_git.password}".encode()).decode(),
    )
    for secret in secrets:
        assert secret not in str(err.value) and secret not in caplog.text
        assert all(secret not in " ".join(argv) for argv in argvs)
    assert any(a[:2] == ("git", "fetch") for a in argvs)
    assert http_git.password not in repr(good)


def file_mode(path: str) -> int:
    """Permission bits, or -1 when the file does not exist."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        return -1


async def test_ssh_url_uses_private_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []
    modes: list[int] = []
    real_exec = asyncio.create_subprocess_exec

    async def spy(*argv: Any, **kw: Any) -> asyncio.subprocess.Process:
        env = kw["env"]
        seen.append(env)
        for word in shlex.split(env.get("GIT_SSH_COMMAND", "")):
            if word.startswith(tempfile.gettempdir()) or "UserKnownHostsFile=" in word:
                modes.append(file_mode(word.split("=")[-1]))
        return await real_exec(*argv, **kw)

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    creds = Credentials(
        identity="-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n", known_hosts="x ssh-ed25519 AAAA"
    )
    start = time.monotonic()
    with pytest.raises(GitError) as err:
        await fetch(
            f"ssh://git@127.0.0.1:{_free_port()}/repo.git", GitRef(), workdir=tmp_path, credentials=creds
        )
    assert err.value.reason == "GitOperationFailed" and time.monotonic() - start < 10
    command = shlex.split(seen[0]["GIT_SSH_COMMAND"])
    assert "StrictHostKeyChecking=yes" in command and "-i" in command
    assert modes == [0o600, 0o600]
    assert file_mode(command[command.index("-i") + 1]) == -1  # removed after the call
    assert all("not-a-real-key" not in v for env in seen for v in env.values())


@pytest.mark.parametrize(
    ("stderr", "reason"),
    [
        (
            "git@host: Permission denied (publickey).\nfatal: Could not read from remote repository.",
            "AuthenticationFailed",
        ),
        ("Host key verification failed.", "AuthenticationFailed"),
        (
            "fatal: unable to access 'https://h/r/': The requested URL returned error: 403",
            "AuthenticationFailed",
        ),
        ("ssh: connect to host h port 22: Connection refused", "GitOperationFailed"),
        ("fatal: couldn't find remote ref refs/heads/x", "RefNotFound"),
    ],
)
def test_error_reasons(stderr: str, reason: str) -> None:
    assert classify(stderr) == reason


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_fails_fast(tmp_path: Path) -> None:
    port = _free_port()  # nothing listens there any more: connection refused
    start = time.monotonic()
    with pytest.raises(GitError) as err:
        await fetch(f"http://127.0.0.1:{port}/repo.git", GitRef(), workdir=tmp_path, timeout_s=10)
    assert err.value.reason == "GitOperationFailed"
    assert time.monotonic() - start < 5


async def test_silent_server_times_out_and_git_is_killed(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts connections (backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(GitError) as err:
            await fetch(f"http://127.0.0.1:{port}/repo.git", GitRef(), workdir=tmp_path, timeout_s=1.0)
        assert err.value.reason == "Timeout"
        assert time.monotonic() - start < 4
    assert processes_naming(f"127.0.0.1:{port}") == []


def processes_naming(word: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended while we looked
        if word in argv:
            found.append(argv)
    return found


# --- signatures ------------------------------------------------------------------------------------------


@dataclass
class Keys:
    home: Path
    good: str  # fingerprint
    good_pub: str
    other: str
    other_pub: str
    ssh_good: Path
    ssh_other: Path

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}

    def pgp(self, fpr: str) -> tuple[str, ...]:
        return ("-c", "gpg.format=openpgp", "-c", f"user.signingkey={fpr}")

    def ssh(self, key: Path) -> tuple[str, ...]:
        return ("-c", "gpg.format=ssh", "-c", f"user.signingkey={key}")


@pytest.fixture(scope="module")
def keys() -> Iterator[Keys]:
    home = Path(tempfile.mkdtemp(prefix="rg", dir="/tmp"))  # short: gpg-agent's socket lives here
    env = {"GNUPGHOME": str(home)}
    fprs, pubs = [], []
    try:
        for uid in ("Good Signer <good@example.com>", "Other Signer <other@example.com>"):
            run(
                "gpg",
                "--batch",
                "--quiet",
                "--passphrase",
                "",
                "--quick-gen-key",
                uid,
                "ed25519",
                "sign",
                "never",
                env=env,
            )
            listing = run("gpg", "--batch", "--with-colons", "--list-keys", uid, env=env)
            fprs.append(next(ln.split(":")[9] for ln in listing.splitlines() if ln.startswith("fpr:")))
            pubs.append(run("gpg", "--batch", "--armor", "--export", fprs[-1], env=env))
        for name in ("ssh_good", "ssh_other"):
            run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(home / name))
        yield Keys(home, fprs[0], pubs[0], fprs[1], pubs[1], home / "ssh_good", home / "ssh_other")
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, **env}, check=False, timeout=30)
        shutil.rmtree(home, ignore_errors=True)


def ssh_pub(key: Path) -> str:
    return key.with_name(key.name + ".pub").read_text()


def fingerprint(key: Path) -> str:
    return run("ssh-keygen", "-l", "-f", str(key.with_name(key.name + ".pub"))).split()[1]


async def test_pgp_signed_commit(repo: Repo, keys: Keys, tmp_path: Path) -> None:
    w, url = tmp_path / "w", str(repo.origin)
    head = Verification("HEAD", pgp_keys=(keys.good_pub,))
    signed = repo.commit({"f": "signed"}, "signed", *keys.pgp(keys.good), env=keys.env)
    repo.push("main")
    art = await fetch(url, GitRef(branch="main"), workdir=w, verify=head)
    assert (art.commit, art.verified_by) == (signed, keys.good[-16:])

    repo.commit({"f": "unsigned"}, "unsigned")
    repo.push("main")
    with pytest.raises(GitError) as err:
        await fetch(url, GitRef(branch="main"), workdir=w, verify=head, last=art)
    assert err.value.reason == "VerificationFailed" and "not signed" in str(err.value)
    assert art.path.is_dir() and sorted(p.name for p in (w / "artifacts").iterdir()) == [
        signed,
        f"{signed}.json",
    ]

    repo.commit({"f": "other"}, "other", *keys.pgp(keys.other), env=keys.env)
    repo.push("main")
    with pytest.raises(GitError) as err:
        await fetch(url, GitRef(branch="main"), workdir=w, verify=head)
    assert err.value.reason == "VerificationFailed" and "not trusted" in str(err.value)
    both = Verification("HEAD", pgp_keys=(keys.good_pub, keys.other_pub))
    assert (await fetch(url, GitRef(branch="main"), workdir=w, verify=both)).verified_by == keys.other[-16:]


async def test_ssh_signed_commit(repo: Repo, keys: Keys, tmp_path: Path) -> None:
    w, url = tmp_path / "w", str(repo.origin)
    sha = repo.commit({"f": "ssh"}, "ssh signed", *keys.ssh(keys.ssh_good))
    repo.push("main")
    secret = {"author.sshpub": ssh_pub(keys.ssh_good), "someone.asc": keys.other_pub}
    verify = Verification.from_secret("head", secret)
    assert (verify.mode, verify.ssh_keys, verify.pgp_keys) == (
        "HEAD",
        (ssh_pub(keys.ssh_good),),
        (keys.other_pub,),
    )
    art = await fetch(url, GitRef(), workdir=w, verify=verify)
    assert (art.commit, art.verified_by) == (sha, fingerprint(keys.ssh_good))
    assert (art.verified_by or "").startswith("SHA256:")

    wrong = Verification("HEAD", ssh_keys=(ssh_pub(keys.ssh_other),))
    with pytest.raises(GitError) as err:
        await fetch(url, GitRef(), workdir=tmp_path / "w2", verify=wrong)
    assert err.value.reason == "VerificationFailed" and "SSH key that is not trusted" in str(err.value)
    assert not (tmp_path / "w2" / "artifacts").exists()


async def test_tag_and_head_modes(repo: Repo, keys: Keys, tmp_path: Path) -> None:
    url = str(repo.origin)
    pgp = (keys.good_pub,)
    plain = repo.commit({"f": "1"}, "unsigned commit")
    repo.git(*keys.pgp(keys.good), "tag", "-s", "-m", "signed tag", "v1.0.0", env=keys.env)
    repo.git("tag", "-a", "-m", "unsigned tag", "v1.0.1")
    repo.git("tag", "v1.0.2")  # lightweight
    signed = repo.commit({"f": "2"}, "signed commit", *keys.ssh(keys.ssh_good))
    repo.git(*keys.ssh(keys.ssh_good), "tag", "-s", "-m", "ssh tag", "v2.0.0")
    repo.push("main", "--tags")

    tag = Verification("Tag", pgp_keys=pgp)
    art = await fetch(url, GitRef(tag="v1.0.0"), workdir=tmp_path / "a", verify=tag)
    assert (art.commit, art.verified_by) == (plain, keys.good[-16:])

    async def refused(ref: GitRef, verify: Verification, words: str) -> None:
        with pytest.raises(GitError) as err:
            await fetch(url, ref, workdir=tmp_path / "b", verify=verify)
        assert err.value.reason == "VerificationFailed" and words in str(err.value), err.value

    await refused(GitRef(tag="v1.0.0"), Verification("TagAndHEAD", pgp_keys=pgp), "not signed")
    await refused(GitRef(tag="v1.0.1"), tag, "not signed")
    await refused(GitRef(tag="v1.0.2"), tag, "lightweight")
    await refused(GitRef(branch="main"), tag, "needs a tag")

    both = Verification("TagAndHEAD", ssh_keys=(ssh_pub(keys.ssh_good),))
    art = await fetch(url, GitRef(semver=">=2"), workdir=tmp_path / "c", verify=both)
    assert (art.revision, art.verified_by) == (f"v2.0.0@sha1:{signed}", fingerprint(keys.ssh_good))
    again = await fetch(url, GitRef(semver=">=2"), workdir=tmp_path / "c", verify=both, last=art)
    assert again == art


def test_secrets_stay_out_of_reprs() -> None:
    creds = Credentials.from_secret({"username": "u", "password": "pw-123456", "identity": "KEY"})
    assert "pw-123456" not in repr(creds) and "KEY" not in repr(creds)
    with pytest.raises(GitError):
        Verification.from_secret("sometimes", {})


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


async def test_a_new_commit_updates_the_last_tree_in_place_like_a_full_extraction(
    repo: Repo, tmp_path: Path
) -> None:
    files = {f"apps/a{i}/w.yaml": f"v: {i}\n" for i in range(30)}
    repo.commit({**files, "keep.yaml": "k", "drop.yaml": "d", "ci/.travis.yml": "x"}, "one")
    repo.push("HEAD:main")
    w, url = tmp_path / "w", str(repo.origin)
    first = await fetch(url, GitRef(branch="main"), workdir=w, ignore="secret/\n")
    repo.git("rm", "-q", "drop.yaml")
    repo.commit(
        {"apps/a3/w.yaml": "v: changed\n", "apps/new/w.yaml": "n", "secret/k.yaml": "s", ".travis.yml": "t"},
        "two",
    )
    repo.push("HEAD:main")
    second = await fetch(url, GitRef(branch="main"), workdir=w, ignore="secret/\n")
    assert not first.path.exists()  # renamed into the new tree, not copied
    full = await fetch(url, GitRef(branch="main"), workdir=tmp_path / "fresh", ignore="secret/\n")
    assert tree(second.path) == tree(full.path)
    got = tree(second.path)
    assert got["apps/a3/w.yaml"] == "v: changed\n" and "drop.yaml" not in got
    assert "secret/k.yaml" not in got and ".travis.yml" not in got and "apps/new/w.yaml" in got
