"""What a step does when the user presses Enter: edit and commit, start `rheostat run`, approve a gate."""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from rheostat.tutorial import files
from rheostat.tutorial.files import NS
from rheostat.tutorial.sandbox import SandboxError
from rheostat.tutorial.state import FIRST_VERSION, Session, next_version, primary_version, root_kustomization

APPLY_TIMEOUT_S = 30.0


class Action:
    by_hand = True  # the user may do it themselves before pressing Enter

    def prompt(self, s: Session) -> str:
        """What pressing Enter does (and how the user would do it by hand)."""
        raise NotImplementedError

    def run(self, s: Session) -> str:
        """Do it; returns one line saying what was done."""
        raise NotImplementedError

    def show(self, s: Session) -> str:
        """What the action changes, to read before pressing Enter (after `prompt`)."""
        return ""


@dataclass(frozen=True)
class Change:
    files: Mapping[str, str | None]  # whole files; None deletes one
    message: str  # the commit message
    tell: str  # the edit in words, for a user who makes it by hand


class Commit(Action):
    """Edit files in the repository and commit, then wait until `rheostat run` took the commit (applied, or
    refused by the policy gate). A change the user made and committed (or left uncommitted) by hand wins."""

    def __init__(
        self, change: Callable[[Session], Change], remember: Callable[[Session], None] | None = None
    ):
        self.change = change
        self.remember = remember
        self._planned: Change | None = None
        self._head = ""

    def prompt(self, s: Session) -> str:
        if self.remember is not None:
            self.remember(s)
        self._planned = self.change(s)
        self._head = s.sandbox.head() if s.sandbox.has_repo() else ""
        return f"{self._planned.tell}, and commit ({self._planned.message!r})"

    def show(self, s: Session) -> str:
        """The edit as a diff of each YAML file; a new file in full."""
        out: list[str] = []
        for rel, text in (self._planned.files if self._planned else {}).items():
            before = s.sandbox.read(rel)
            if text is None or before == text or not rel.endswith(".yaml"):
                continue
            if before is None:
                out += [f"new file {rel}:", *("  " + line for line in text.splitlines())]
                continue
            diff = difflib.unified_diff(
                before.splitlines(), text.splitlines(), f"a/{rel}", f"b/{rel}", lineterm=""
            )
            out += list(diff)
        return "\n".join(out)

    def run(self, s: Session) -> str:
        sb = s.sandbox
        planned = self._planned or self.change(s)
        if not planned.files:
            return "nothing to change: the repository is already there"
        sb.init_repo()
        user_committed = bool(self._head) and sb.head() != self._head
        edited = self._edited_by_user(s, planned)
        if user_committed and not sb.dirty():
            commit, how = sb.head(), "your commit"
        else:
            # the user's own edit is committed as it is; ours (perhaps half written when an earlier
            # session was interrupted) is written in full
            changed = [] if edited else sb.write(planned.files)
            made = sb.commit(planned.message)
            if made is None:
                return "nothing to change: the repository already says so"
            commit = made
            how = "your edit, committed" if edited else f"wrote {', '.join(changed) or 'it'} and committed"
        if sb.running():
            wait_taken(s, commit)
            return f"{how}: {commit[:7]} {planned.message!r}; `rheostat run` has read it"
        return f"{how}: {commit[:7]} {planned.message!r}"

    @staticmethod
    def _edited_by_user(s: Session, planned: Change) -> bool:
        """Uncommitted changes that are not (part of) the planned edit."""
        for rel in s.sandbox.dirty():
            if rel not in planned.files or s.sandbox.read(rel) != planned.files[rel]:
                return True
        return False


def wait_taken(s: Session, commit: str) -> None:
    """Until the root Kustomization has attempted the commit (applied, or refused by the gate)."""
    deadline = time.monotonic() + APPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        k = root_kustomization(s)
        if k is not None and k.get("status", {}).get("lastAttemptedRevision", "").endswith(commit):
            return
        time.sleep(0.2)
    raise SandboxError(f"`rheostat run` did not read commit {commit[:7]} within {APPLY_TIMEOUT_S:.0f}s")


class Start(Action):
    by_hand = False  # a second `rheostat run` on the same data dir would be refused

    def prompt(self, s: Session) -> str:
        sb = s.sandbox
        return (
            f"start `rheostat run --repo {sb.repo} --data-dir {sb.data} --listen 127.0.0.1:{sb.progress.api_port} "
            "--stop-data-plane`"
        )

    def run(self, s: Session) -> str:
        s.sandbox.start()
        return f"`rheostat run` is serving on {s.sandbox.api} (its output goes to {s.sandbox.log})"


class Approve(Action):
    def __init__(self, canary: str) -> None:
        self.canary = canary

    def prompt(self, s: Session) -> str:
        sb = s.sandbox
        return (
            f"approve the promotion: `rheostat approve {self.canary} -n {NS} --server {sb.api} "
            f"--data-dir {sb.data}` (the API token is in the data dir)"
        )

    def run(self, s: Session) -> str:
        c = s.sandbox.canary(self.canary)
        if c is not None and c["status"]["phase"] != "WaitingPromotion":  # approved by hand already
            return f"{NS}/{self.canary} is past its gate already ({c['status']['phase']})"
        try:
            s.sandbox.post(f"/canaries/{NS}/{self.canary}/approve")
        except SandboxError as exc:
            if ": 409 " not in str(exc):  # 409: it moved past the gate meanwhile
                raise
        return f"approved: the gate of {NS}/{self.canary} is open for this run"


# -- changes -------------------------------------------------------------------------------------------


def first_files(s: Session) -> Change:
    p = s.sandbox.ports
    if s.sandbox.read(files.WORKLOAD) is not None:  # a lesson done before: keep what is there
        return Change({}, "", "keep the repository as it is")
    return Change(
        {
            files.README: files.README_TEXT,
            files.WORKLOAD: files.workload(FIRST_VERSION, p),
            files.CANARY: files.canary(p),
        },
        f"web {FIRST_VERSION}",
        f"write {files.WORKLOAD} (the application) and {files.CANARY} (how it is released)",
    )


def remember_versions(s: Session) -> None:
    """Before a release: what users get now, and the version about to be released."""
    s.memo["old"] = primary_version(s)
    s.memo["new"] = next_version(s)


def release(strategy: str, *, errors: bool = False, probe: bool = True) -> Callable[[Session], Change]:
    def change(s: Session) -> Change:
        p, new = s.sandbox.ports, s.memo["new"]
        out = {
            files.WORKLOAD: files.workload(new, p, errors=errors, probe=probe),
            files.CANARY: files.canary(p, strategy),
        }
        what = f"in {files.WORKLOAD} set the version to {new}"
        if errors:
            what += ' and add ERROR_RATE: "0.5" to env'
        if not probe:
            what += " and delete the readinessProbe line"
        if strategy != "canary":
            what += f"; in {files.CANARY} change the analysis as shown"
        suffix = (
            " (fails half of its requests)" if errors else ("" if probe else " without a readiness probe")
        )
        return Change(out, f"web {new}{suffix}", what)

    return change


def flag_files(default: str) -> Callable[[Session], Change]:
    def change(s: Session) -> Change:
        text = files.flag(s.sandbox.ports, default)
        if default == "off":
            return Change({files.FLAG: text}, "flag new-checkout, off", f"write {files.FLAG}")
        return Change({files.FLAG: text}, "new-checkout: on", f'in {files.FLAG} set defaultVariant: "on"')

    return change


def policy_files(s: Session) -> Change:
    canary = files.canary(s.sandbox.ports)
    tell = f"copy the starter policy into {files.POLICY}"
    if s.sandbox.read(files.CANARY) != canary:
        tell += f", and put the weighted canary of lesson 1 back into {files.CANARY}"
    return Change(
        {files.POLICY: files.policy(), files.CANARY: canary},
        "policy: every Workload has a readiness probe",
        tell,
    )


def fix_probe(s: Session) -> Change:
    p = s.sandbox.ports
    return Change(
        {files.WORKLOAD: files.workload(s.memo["new"], p)},
        f"web {s.memo['new']} with its readiness probe",
        f"in {files.WORKLOAD} put `readinessProbe: {{path: /readyz}}` back",
    )


class AddFlag(Commit):
    """The flag, off. A flag left on by an earlier pass is first removed (its own commit), so that "off" is
    adopted as what users get rather than rolled out as a change."""

    def __init__(self) -> None:
        super().__init__(flag_files("off"))

    def run(self, s: Session) -> str:
        sb = s.sandbox
        current = sb.read(files.FLAG)
        if current is not None and current != files.flag(sb.ports, "off"):
            sb.write({files.FLAG: None})
            wait_taken(s, sb.commit("remove the flag, to start over") or sb.head())
            self._head = sb.head()
        return super().run(s)
