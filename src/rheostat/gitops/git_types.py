"""The values the git fetch layer takes and gives back; kept apart so its helper modules can share them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Reason = Literal[
    "AuthenticationFailed",
    "GitOperationFailed",
    "RefNotFound",
    "VerificationFailed",
    "Timeout",
    "InvalidSpec",
]
VerifyMode = Literal["HEAD", "Tag", "TagAndHEAD"]


class GitError(Exception):
    """A failed fetch; `reason` is the Flux-style condition reason. The message never holds a credential."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


@dataclass(frozen=True)
class GitRef:
    """Which commit to fetch. Later fields win, as in Flux: branch < tag < semver < name < commit.

    `commit` together with `branch` means "this commit, and it must be on that branch". With nothing set the
    remote's HEAD branch is used (Flux defaults to `master`; the remote's own default is what users mean).
    """

    branch: str | None = None
    tag: str | None = None
    semver: str | None = None
    name: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class Credentials:
    """The contents of a Flux secretRef. `password` is the key's passphrase for ssh:// URLs."""

    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None
    identity: str | None = None  # SSH private key text
    known_hosts: str | None = None
    ca_crt: str | None = None

    def __repr__(self) -> str:  # a stray log of the object must not print the secrets
        present = [k for k, v in vars(self).items() if v]
        return f"Credentials(<{', '.join(present) or 'empty'}>)"

    @classmethod
    def from_secret(cls, data: Mapping[str, str]) -> Credentials:
        """Flux's secret keys: username, password, bearerToken, identity, known_hosts, ca.crt."""
        return cls(
            username=data.get("username"),
            password=data.get("password"),
            bearer_token=data.get("bearerToken"),
            identity=data.get("identity"),
            known_hosts=data.get("known_hosts"),
            ca_crt=data.get("ca.crt"),
        )


@dataclass(frozen=True)
class Verification:
    """Which signatures must be good, and the trusted public keys (armored PGP; SSH authorized_keys lines)."""

    mode: VerifyMode
    pgp_keys: tuple[str, ...] = ()
    ssh_keys: tuple[str, ...] = ()

    @classmethod
    def from_secret(cls, mode: str, data: Mapping[str, str]) -> Verification:
        """Keys ending `.sshpub` are SSH keys; `.asc` and keys with no suffix are PGP, as in Flux."""
        modes: dict[str, VerifyMode] = {"head": "HEAD", "tag": "Tag", "tagandhead": "TagAndHEAD"}
        normal = modes.get(mode.lower())
        if normal is None:
            raise GitError("InvalidSpec", f"unknown verify mode {mode!r} (HEAD, Tag or TagAndHEAD)")
        ssh = tuple(v for k, v in sorted(data.items()) if k.endswith(".sshpub"))
        pgp = tuple(v for k, v in sorted(data.items()) if not k.endswith(".sshpub"))
        return cls(mode=normal, pgp_keys=pgp, ssh_keys=ssh)


@dataclass(frozen=True)
class Artifact:
    revision: str  # "main@sha1:<sha>", "v1.2.3@sha1:<sha>", or "sha1:<sha>" for a bare commit
    commit: str
    path: Path  # the commit's tree, extracted, with the ignore rules applied
    verified_by: str | None  # PGP key id or SSH "SHA256:" fingerprint(s) when verified
    message: str  # commit subject
    changed: tuple[str, ...] | None = None  # paths changed since `previous_commit`; None: not known
    previous_commit: str | None = None
