"""The tutorial's folder and what runs on it: a Git repository, `rheostat run`, and simulated users.

Everything started here is ended by `Sandbox.stop`: `rheostat run` gets SIGTERM and ends Envoy and the
replicas with it (`--stop-data-plane`); the users are threads of this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rheostat.tutorial.files import NS, Ports

PROGRESS = "progress.json"
START_TIMEOUT_S = 60.0


class SandboxError(Exception):
    """The sandbox could not be set up or reached; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds: TIME_WAIT is no owner
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Progress:
    """What survives between runs of `rheostat tutorial`, in <folder>/progress.json."""

    done: list[int] = field(default_factory=list)
    api_port: int = 0
    service_port: int = 0
    run_pid: int = 0  # the `rheostat run` of the last session, ended if it is still alive

    @classmethod
    def load(cls, path: Path) -> Progress:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            raise SandboxError(f"cannot read {path}: {exc} (start over with --reset)") from exc
        return cls(
            done=[int(n) for n in data.get("done", [])],
            api_port=int(data.get("apiPort", 0)),
            service_port=int(data.get("servicePort", 0)),
            run_pid=int(data.get("runPid", 0)),
        )

    def save(self, path: Path) -> None:
        body = {"done": self.done, "apiPort": self.api_port, "servicePort": self.service_port}
        body["runPid"] = self.run_pid
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=2) + "\n")
        tmp.replace(path)


def git(repo: Path, *args: str) -> str:
    env = {**os.environ}
    env.setdefault("GIT_AUTHOR_NAME", "rheostat tutorial")
    env.setdefault("GIT_AUTHOR_EMAIL", "tutorial@localhost")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    try:
        # its own session, so that Ctrl-C does not reach it: a git killed mid-commit leaves index.lock behind
        proc = subprocess.Popen(
            ["git", "-C", str(repo), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise SandboxError("the tutorial needs git (apt-get install git)") from exc
    try:
        out, err = proc.communicate()
    except KeyboardInterrupt:
        proc.communicate()  # let it finish, then stop
        raise
    if proc.returncode != 0:
        raise SandboxError(f"git {' '.join(args)}: {err.strip()}")
    return out.strip()


def rheostat_command() -> list[str]:
    """The `rheostat` of this installation: the console script beside this Python, else `python -m`."""
    script = shutil.which("rheostat", path=os.path.dirname(sys.executable))
    if script is not None:
        return [script]
    return [sys.executable, "-c", "from rheostat.cli.main import main; main()"]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Users(threading.Thread):
    """Simulated users: a few requests a second to `web`, and checkouts by stable user ids (for the flag)."""

    def __init__(self, service_port: int) -> None:
        super().__init__(name="tutorial-users", daemon=True)
        self.url = f"http://127.0.0.1:{service_port}"
        self.halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            n = 0
            while not self.halt.is_set():
                n += 1
                with contextlib.suppress(httpx.HTTPError):  # not listening yet, a replica replaced: go on
                    if n % 3 == 0:
                        http.get(f"{self.url}/")
                    else:
                        http.get(f"{self.url}/checkout", params={"user": f"user-{random.randrange(500)}"})
                self.halt.wait(1 / 15)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)


class Sandbox:
    """The tutorial folder: `repo/` (Git), `data/` (the controller's state), `run.log`, `progress.json`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.absolute()
        self.repo = self.folder / "repo"
        self.data = self.folder / "data"
        self.log = self.folder / "run.log"
        self.progress = Progress()
        self.proc: subprocess.Popen[bytes] | None = None
        self.users: Users | None = None
        self.http = httpx.Client(timeout=10.0)

    # -- the folder --------------------------------------------------------------------------------

    @property
    def progress_file(self) -> Path:
        return self.folder / PROGRESS

    def _refuse_foreign(self) -> None:
        """A folder with a repo/ or data/ the tutorial did not make is the user's: never write or delete there."""
        if not self.progress_file.exists() and (self.repo.exists() or self.data.exists()):
            raise SandboxError(
                f"{self.folder} has a repo/ or data/ but no {PROGRESS}: it is not a tutorial folder, so the "
                "tutorial leaves it alone (choose another with --dir)"
            )

    def open(self) -> None:
        self._refuse_foreign()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.progress = Progress.load(self.progress_file)
        self._end_leftover()
        if not self.progress.api_port or not self.progress.service_port:
            self.progress.api_port, self.progress.service_port = free_port(), free_port()
        self.save()

    def save(self) -> None:
        self.progress.save(self.progress_file)

    def reset(self) -> None:
        """Forget everything: the repository, the controller's state, the progress."""
        self._refuse_foreign()
        self.progress = Progress.load(self.progress_file) if self.progress_file.exists() else Progress()
        self._end_leftover()
        for path in (self.repo, self.data):
            shutil.rmtree(path, ignore_errors=True)
        for path in (self.log, self.progress_file):
            path.unlink(missing_ok=True)

    def _end_leftover(self) -> None:
        """A `rheostat run` left by a session that was killed holds the data dir: end it first."""
        pid = self.progress.run_pid
        if pid and str(self.data) in _cmdline(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while str(self.data) in _cmdline(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        self.progress.run_pid = 0

    @property
    def ports(self) -> Ports:
        return Ports(self.progress.api_port, self.progress.service_port)

    @property
    def api(self) -> str:
        return self.ports.api_url

    @property
    def service(self) -> str:
        return f"http://127.0.0.1:{self.progress.service_port}"

    # -- Git ---------------------------------------------------------------------------------------

    def has_repo(self) -> bool:
        return (self.repo / ".git").is_dir()

    def init_repo(self) -> None:
        self.repo.mkdir(parents=True, exist_ok=True)
        if not self.has_repo():
            git(self.repo, "init", "-q", "-b", "main")

    def read(self, rel: str) -> str | None:
        path = self.repo / rel
        return path.read_text() if path.is_file() else None

    def write(self, files: Mapping[str, str | None]) -> list[str]:
        """Write whole files (None deletes one); returns the paths that changed."""
        changed = []
        for rel, text in files.items():
            path = self.repo / rel
            if text is None:
                if path.exists():
                    path.unlink()
                    changed.append(rel)
                continue
            if self.read(rel) != text:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                changed.append(rel)
        return changed

    def commit(self, message: str) -> str | None:
        """Commit whatever changed in the repository; returns the new commit, or None if nothing changed."""
        git(self.repo, "add", "-A")
        if not git(self.repo, "status", "--porcelain"):
            return None
        git(self.repo, "commit", "-q", "-m", message)
        return self.head()

    def committed(self, rel: str) -> str | None:
        """A file as the last commit has it."""
        try:
            return git(self.repo, "show", f"HEAD:{rel}") if self.head() else None
        except SandboxError:
            return None

    def set_aside(self) -> bool:
        """Stash uncommitted changes (an edit cut short by an interruption); True when there were some."""
        if not self.head() or not self.dirty():  # before the first commit, lesson 1 writes every file anew
            return False
        git(self.repo, "stash", "push", "--include-untracked", "-m", "set aside by rheostat tutorial")
        return True

    def dirty(self) -> list[str]:
        """Paths with uncommitted changes (new, edited or deleted)."""
        if not self.has_repo():
            return []
        out = git(self.repo, "status", "--porcelain", "--untracked-files=all")
        return [line[3:] for line in out.splitlines() if line]

    def head(self) -> str:
        """The commit checked out; "" before the first one."""
        try:
            return git(self.repo, "rev-parse", "--verify", "HEAD")
        except SandboxError:
            return ""

    # -- processes ---------------------------------------------------------------------------------

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start `rheostat run` on the repository and the simulated users; return once the API answers."""
        if self.running():
            return
        # The repository's files name both ports: they are kept for good, and must still be free.
        for what, port in (("API", self.progress.api_port), ("service", self.progress.service_port)):
            if not port_free(port):
                raise SandboxError(
                    f"port {port} (the tutorial's {what}) is taken by another process (a `rheostat run` you "
                    f"started on {self.data}? stop it first), or start over with --reset"
                )
        argv = [
            *rheostat_command(),
            "run",
            "--repo",
            str(self.repo),
            "--data-dir",
            str(self.data),
            "--listen",
            f"127.0.0.1:{self.progress.api_port}",
            "--stop-data-plane",
        ]
        with open(self.log, "ab") as log:
            # its own session: Ctrl-C reaches the tutorial only, which then ends it in order
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        self.progress.run_pid = self.proc.pid
        self.save()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise SandboxError(f"`rheostat run` exited with {self.proc.returncode}: {' '.join(tail)}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(f"{self.api}/healthz", timeout=1.0).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise SandboxError(f"`rheostat run` did not answer within {START_TIMEOUT_S:.0f}s; see {self.log}")
        if self.users is None:
            self.users = Users(self.progress.service_port)
            self.users.start()

    def stop(self) -> None:
        """End the users and `rheostat run` (which ends Envoy and the replicas)."""
        if self.users is not None:
            self.users.stop()
            self.users = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc is not None:
            self.progress.run_pid = 0
            self.save()
        self.http.close()

    # -- the API -----------------------------------------------------------------------------------

    def token(self) -> str:
        return (self.data / "token").read_text().strip()

    def get(self, path: str, **params: Any) -> Any:
        """GET /api/v1<path>; None when the object is not there (yet)."""
        try:
            resp = self.http.get(f"{self.api}/api/v1{path}", params=params)
        except httpx.HTTPError as exc:
            raise SandboxError(f"cannot reach `rheostat run` at {self.api}: {exc} (see {self.log})") from exc
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return resp.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> None:
        headers = {"Authorization": f"Bearer {self.token()}"}
        resp = self.http.post(f"{self.api}/api/v1{path}", json=body, headers=headers)
        if resp.status_code >= 400:
            raise SandboxError(f"POST {path}: {resp.status_code} {resp.text.strip()}")

    def canary(self, name: str = "web") -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.get(f"/canaries/{NS}/{name}")
        return found

    def served(self, n: int = 10, **headers: str) -> dict[str, int]:
        """What users get from `web` right now: versions (or status codes) and how often."""
        seen: dict[str, int] = {}
        for _ in range(n):
            try:
                resp = self.http.get(f"{self.service}/", headers=headers, timeout=5.0)
                what = str(resp.json()["version"]) if resp.status_code == 200 else str(resp.status_code)
            except (httpx.HTTPError, ValueError, KeyError):
                what = "no answer"
            seen[what] = seen.get(what, 0) + 1
        return seen

    def evaluate(self, key: str, user: str) -> Any:
        """The flag's value for one user, over OFREP as an application asks for it."""
        resp = self.http.post(
            f"{self.api}/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": user}}
        )
        return resp.json().get("value")
