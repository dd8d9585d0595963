"""Running git (and gpg) as bounded subprocesses, and turning their failures into Flux reasons."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rheostat.gitops.git_types import GitError, Reason

log = logging.getLogger("rheostat.gitops.git")

# Parent variables that would point git at another repository, index or config, or make it prompt.
_DROPPED = ("GIT_", "SSH_ASKPASS", "GNUPGHOME")

_AUTH_SIGNS = (
    "authentication failed",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "returned error: 401",
    "returned error: 403",
    "permission denied",
    "host key verification failed",
    "access denied",
    "invalid username or password",
)
_REF_SIGNS = ("couldn't find remote ref", "not our ref", "no such remote ref", "unadvertised object")
_USERINFO = re.compile(r"://[^/@\s:]+:[^/@\s]+@")


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str


def classify(stderr: str) -> Reason:
    text = stderr.lower()
    if any(sign in text for sign in _AUTH_SIGNS):
        return "AuthenticationFailed"
    if any(sign in text for sign in _REF_SIGNS):
        return "RefNotFound"
    return "GitOperationFailed"


def base_env() -> dict[str, str]:
    """The parent's environment without git's own variables; no prompts, no user or system config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
    env.update(
        LC_ALL="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    return env


class Runner:
    """Runs commands under one deadline, with one environment, and redacts the given secrets from errors."""

    def __init__(self, env: Mapping[str, str], timeout_s: float, secrets: Sequence[str] = ()) -> None:
        self.env = dict(env)
        self.timeout_s = timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout_s
        self.secrets = tuple(s for s in secrets if s)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _USERINFO.sub("://***@", text)

    async def git(
        self, *args: str, cwd: Path | None = None, check: bool = True, out: Path | None = None
    ) -> Result:
        return await self.run("git", *args, cwd=cwd, check=check, out=out)

    async def run(
        self, *argv: str, cwd: Path | None = None, check: bool = True, out: Path | None = None
    ) -> Result:
        verb = _verb(argv)
        left = self.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise GitError("Timeout", f"{verb} not started: the {self.timeout_s:g}s timeout has passed")
        sink = out.open("wb") if out is not None else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=sink if sink is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # one process group: ssh and remote helpers die with git
            )
        except FileNotFoundError as exc:
            raise GitError(
                "GitOperationFailed", f"{argv[0]} is not installed (apt-get install {argv[0]})"
            ) from exc
        finally:
            if sink is not None:
                sink.close()
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), left)
        except TimeoutError:
            raise GitError("Timeout", f"{verb} did not finish within {self.timeout_s:g}s") from None
        finally:
            if proc.returncode is None:  # timed out or cancelled
                _kill(proc.pid)
                await proc.wait()
        rc = proc.returncode if proc.returncode is not None else -1
        result = Result(rc, (stdout or b"").decode(errors="replace"), stderr.decode(errors="replace"))
        log.debug("%s: rc=%d", verb, rc)
        if check and rc != 0:
            detail = self.redact(_tail(result.err) or f"exit status {rc}")
            raise GitError(classify(result.err), f"{verb} failed: {detail}")
        return result


def _verb(argv: Sequence[str]) -> str:
    """`git fetch`: enough to say what failed, never an argument that could hold a URL."""
    i = 1
    while argv[0] == "git" and i < len(argv):
        if argv[i] in ("-C", "-c"):
            i += 2
        elif argv[i].startswith("-"):
            i += 1
        else:
            return f"git {argv[i]}"
    return argv[0]


def _tail(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("hint:")]
    return "; ".join(lines[-4:])


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
