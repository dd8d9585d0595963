"""Checking a source URL, and handing credentials to git through the environment and 0600 temp files."""

from __future__ import annotations

import base64
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rheostat.gitops.git_types import Credentials, GitError

_SCP_LIKE = re.compile(r"^(?:[^@/:]+@)?[^/:]+:(?!//)")


@dataclass(frozen=True)
class Remote:
    url: str  # what git is given: an absolute path, or the URL unchanged
    kind: str  # "local" | "http" | "ssh"


def check_url(url: str) -> Remote:
    """Local paths, file://, http(s):// and ssh:// are accepted; the scp-like `user@host:repo` is not (Flux)."""
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "file":
            return Remote(url, "local")
        if scheme in ("http", "https"):
            if parts.password:
                raise GitError("InvalidSpec", "a password in the URL is not allowed: put it in the secret")
            return Remote(url, "http")
        if scheme == "ssh":
            if not parts.hostname:
                raise GitError("InvalidSpec", "an ssh:// URL needs a host: ssh://user@host:22/repo.git")
            return Remote(url, "ssh")
        raise GitError("InvalidSpec", f"URL scheme {scheme!r} is not supported (file, http, https, ssh)")
    if _SCP_LIKE.match(url) and not url.startswith(("/", ".")):
        raise GitError(
            "InvalidSpec",
            f"the scp-like URL {url!r} is not supported, as in Flux: write it as ssh://user@host/path",
        )
    return Remote(str(Path(url).expanduser().resolve()), "local")


@dataclass
class Auth:
    """Environment additions for git, and the secret strings that must never show in a message."""

    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    config: list[tuple[str, str]] = field(default_factory=list)

    def finish(self) -> dict[str, str]:
        """Config goes through GIT_CONFIG_COUNT/KEY/VALUE, so no value ever lands in argv (visible to ps)."""
        env = dict(self.env)
        env["GIT_CONFIG_COUNT"] = str(len(self.config))
        for i, (key, value) in enumerate(self.config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env


def write_private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return path


def build_auth(remote: Remote, creds: Credentials | None, scratch: Path) -> Auth:
    """`scratch` is a 0700 directory the caller removes; every secret file written here is 0600."""
    auth = Auth()
    creds = creds or Credentials()
    if remote.kind == "http":
        _http(auth, creds, scratch)
    elif remote.kind == "ssh":
        _ssh(auth, creds, scratch)
    return auth


def _http(auth: Auth, creds: Credentials, scratch: Path) -> None:
    header = None
    if creds.bearer_token:
        header = f"Authorization: Bearer {creds.bearer_token}"
        auth.secrets.append(creds.bearer_token)
    elif creds.username and creds.password:
        token = base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()
        header = f"Authorization: Basic {token}"
        auth.secrets += [creds.password, token]
    if header:
        auth.config.append(("http.extraHeader", header))
    if creds.ca_crt:
        auth.config.append(("http.sslCAInfo", str(write_private(scratch / "ca.crt", creds.ca_crt))))


def _ssh(auth: Auth, creds: Credentials, scratch: Path) -> None:
    known_hosts = write_private(scratch / "known_hosts", creds.known_hosts or "")
    cmd = [
        "ssh",
        "-F",
        os.devnull,
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    cmd += [
        "-o",
        "IdentityAgent=none",
        "-o",
        "PasswordAuthentication=no",
        "-o",
        "KbdInteractiveAuthentication=no",
    ]
    if creds.identity:
        key = write_private(scratch / "identity", creds.identity)
        cmd += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        auth.secrets.append(creds.identity)
    if creds.password:  # the key's passphrase, read by ssh through an askpass script from a 0600 file
        secret = write_private(scratch / "passphrase", creds.password)
        askpass = scratch / "askpass"
        askpass.write_text(f"#!/bin/sh\nexec cat {shlex.quote(str(secret))}\n")
        askpass.chmod(0o700)
        auth.env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY="none")
        auth.secrets.append(creds.password)
    else:
        cmd += ["-o", "BatchMode=yes"]
    auth.env["GIT_SSH_COMMAND"] = shlex.join(cmd)
    auth.env["GIT_SSH_VARIANT"] = "ssh"
