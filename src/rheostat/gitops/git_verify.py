"""Signature checks with real gpg and ssh-keygen, driven by `git verify-commit` / `git verify-tag`.

The trusted keys go into a private GNUPGHOME and an allowed-signers file made for this one check, so
nothing from the user's own keyrings can vouch for a commit.
"""

from __future__ import annotations

import re
from pathlib import Path

from rheostat.gitops.git_auth import write_private
from rheostat.gitops.git_refs import Target
from rheostat.gitops.git_run import Runner
from rheostat.gitops.git_types import GitError, Verification

_PGP_GOOD = re.compile(r"^\[GNUPG:\] GOODSIG ([0-9A-F]+) ", re.M)
_SSH_GOOD = re.compile(r'^Good "git" signature for \S+ with \S+ key (SHA256:\S+)', re.M)
_PGP_FAIL = re.compile(r"^\[GNUPG:\] (NO_PUBKEY|BADSIG|EXPKEYSIG|REVKEYSIG|EXPSIG|ERRSIG) ?(\S*)", re.M)
_PGP_WHY = {
    "BADSIG": "bad PGP signature",
    "NO_PUBKEY": "signed by a PGP key that is not trusted",
    "EXPKEYSIG": "signed by an expired PGP key",
    "REVKEYSIG": "signed by a revoked PGP key",
    "EXPSIG": "the PGP signature has expired",
    "ERRSIG": "the PGP signature could not be checked",
}


class Verifier:
    def __init__(self, runner: Runner, cache: Path, scratch: Path, verification: Verification) -> None:
        self.runner = runner
        self.cache = cache
        self.scratch = scratch
        self.verification = verification
        self.ready = False

    async def check(self, target: Target) -> str:
        """The key id(s) that signed what the mode asks for; VerificationFailed otherwise."""
        mode = self.verification.mode
        signers: list[str] = []
        if mode in ("Tag", "TagAndHEAD"):
            if not target.refname.startswith("refs/tags/"):
                raise GitError("VerificationFailed", f"verify mode {mode} needs a tag or semver ref")
            if target.tag_object is None:
                raise GitError(
                    "VerificationFailed",
                    f"tag {target.label!r} is lightweight: only an annotated tag is signed",
                )
            signers.append(await self._verify("tag", target.tag_object, f"tag {target.label!r}"))
        if mode in ("HEAD", "TagAndHEAD"):
            signers.append(await self._verify("commit", target.commit, f"commit {target.commit[:12]}"))
        return ", ".join(dict.fromkeys(signers))

    async def _verify(self, kind: str, obj: str, what: str) -> str:
        await self._prepare()
        allowed = f"gpg.ssh.allowedSignersFile={self.scratch / 'allowed_signers'}"
        res = await self.runner.git(
            "-c", allowed, f"verify-{kind}", "--raw", obj, cwd=self.cache, check=False
        )
        text = res.out + res.err
        ssh = _SSH_GOOD.search(text)
        pgp = _PGP_GOOD.search(text)
        if res.rc == 0 and ssh:
            return ssh.group(1)
        if res.rc == 0 and pgp and not _PGP_FAIL.search(text):
            return pgp.group(1)
        raise GitError("VerificationFailed", f"{what}: {_why(text)}")

    async def _prepare(self) -> None:
        if self.ready:
            return
        home = self.scratch / "gnupg"
        home.mkdir(mode=0o700)
        (home / "gpg.conf").write_text("no-autostart\n")  # importing public keys needs no agent: start none
        self.runner.env["GNUPGHOME"] = str(home)
        for i, key in enumerate(self.verification.pgp_keys):
            path = write_private(self.scratch / f"key{i}.asc", key)
            res = await self.runner.run("gpg", "--batch", "--quiet", "--import", str(path), check=False)
            if res.rc != 0:
                raise GitError("VerificationFailed", f"PGP key #{i + 1} could not be imported")
        lines = [
            f'* namespaces="git" {line.strip()}'
            for key in self.verification.ssh_keys
            for line in key.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        write_private(self.scratch / "allowed_signers", "\n".join(lines))
        self.ready = True


def _why(text: str) -> str:
    if not text.strip() or "no signature found" in text:
        return "not signed"
    if "No principal matched" in text or 'Good "git" signature with' in text:
        return "signed by an SSH key that is not trusted"
    found = dict(_PGP_FAIL.findall(text))
    for status, why in _PGP_WHY.items():  # gpg says ERRSIG along with the more telling status
        if status in found:
            return f"{why} (key {found[status]})"
    return "signature could not be verified"
