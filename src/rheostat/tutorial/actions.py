"""What a step does when the user presses Enter, and how its outcome is checked through the API.

Checks read only what a user can read too: the API (`rheostat get ...` shows the same) and the answers users
get from the service. A check is polled; each poll returns a `Seen`: one line about now, and whether the
outcome is reached (ok) or can no longer be reached (broken).
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rheostat.tutorial import files
from rheostat.tutorial.files import NS
from rheostat.tutorial.sandbox import Sandbox, SandboxError, git

AT_REST = ("Initialized", "Succeeded", "Failed")
APPLY_TIMEOUT_S = 30.0
FIRST_VERSION = "1.0.0"


@dataclass
class Session:
    """The sandbox and what the steps of a lesson remember between them (versions, the last commit)."""

    sandbox: Sandbox
    memo: dict[str, str] = field(default_factory=dict)

    def vars(self) -> dict[str, str]:
        sb = self.sandbox
        return {
            "api": sb.api,
            "dashboard": f"{sb.api}/",
            "service": sb.service,
            "repo": str(sb.repo),
            "data": str(sb.data),
            "log": str(sb.log),
            "ns": NS,
            **self.memo,
        }


@dataclass(frozen=True)
class Seen:
    state: str  # one line about now; printed when it changes
    ok: bool = False
    broken: str = ""  # set when the outcome can no longer be reached: why


Check = Callable[[Session], Seen]


# -- what is in Git -----------------------------------------------------------------------------------

_SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
_VERSION = re.compile(r'--version, "([0-9]+)\.([0-9]+)\.([0-9]+)"')


def git_version(s: Session) -> str:
    """The version of `web` committed in Git (1.0.0 when there is none yet)."""
    m = _VERSION.search(s.sandbox.committed(files.WORKLOAD) or "")
    return ".".join(m.groups()) if m else FIRST_VERSION


def next_version(s: Session) -> str:
    major, minor, _ = (int(p) for p in git_version(s).split("."))
    return f"{major}.{minor + 1}.0"


def primary_version(s: Session) -> str:
    """The version of the primary: what users get when no release is under way."""
    seen = s.sandbox.served(3, host="web-primary")
    return next(iter(seen)) if len(seen) == 1 else "?"


# -- actions --------------------------------------------------------------------------------------------


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


def root_kustomization(s: Session) -> dict[str, Any] | None:
    items = (s.sandbox.get("/kustomizations") or {}).get("items", [])
    for k in items:
        if k["metadata"]["name"] == "flux-system" and k["metadata"]["namespace"] == "flux-system":
            found: dict[str, Any] = k
            return found
    return None


def ready_condition(k: dict[str, Any]) -> dict[str, Any]:
    for c in k.get("status", {}).get("conditions", []):
        if c.get("type") == "Ready":
            found: dict[str, Any] = c
            return found
    return {}


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


# -- checks ----------------------------------------------------------------------------------------------


def in_git(s: Session) -> Seen:
    tracked = set(git(s.sandbox.repo, "ls-files").splitlines())
    missing = [f for f in (files.WORKLOAD, files.CANARY) if f not in tracked]
    if missing:
        return Seen(f"not committed yet: {', '.join(missing)}")
    return Seen(f"{files.WORKLOAD} and {files.CANARY} are committed in {s.sandbox.repo}", ok=True)


def canary_line(c: dict[str, Any] | None) -> str:
    if c is None:
        return "no Canary yet"
    st = c["status"]
    parts = [st["phase"]]
    if c.get("strategy") == "canary" or st["canaryWeight"]:
        parts.append(f"canary weight {st['canaryWeight']}%")
    if st.get("iterations"):
        parts.append(f"iterations {st['iterations']}")
    if st.get("failedChecks"):
        parts.append(f"failed checks {st['failedChecks']}")
    return ", ".join(parts) + (f" ({st['message']})" if st["message"] else "")


def workload_revision(s: Session, version: str | None = None) -> str | None:
    """The revision of `web` (once the stored Workload runs `version`, when given)."""
    for w in (s.sandbox.get("/workloads") or {}).get("items", []):
        meta, command = w["metadata"], w["spec"]["template"]["command"]
        if (meta["name"], meta["namespace"]) == ("web", NS) and (version is None or version in command):
            rev: str | None = w["status"]["revision"]
            return rev
    return None


def at_rest(s: Session) -> Seen:
    """No release of web under way or pending, and every user gets one version."""
    c = s.sandbox.canary()
    if c is None:
        return Seen("waiting for the Canary web to be applied")
    phase = c["status"]["phase"]
    if phase not in AT_REST or c["status"]["lastAppliedSpec"] != workload_revision(s):
        return Seen(canary_line(c))
    served = s.sandbox.served(6)
    if len(served) != 1 or not _SEMVER.fullmatch(next(iter(served))):
        return Seen(f"{phase}; users get {served}")
    version = next(iter(served))
    return Seen(f"{phase}: every user gets version {version} from the primary", ok=True)


def promoted(s: Session) -> Seen:
    new = s.memo["new"]
    c = s.sandbox.canary()
    line = canary_line(c)
    rev = workload_revision(s, new)
    if c is None or rev is None:
        return Seen(line)
    st = c["status"]
    if st["phase"] == "Failed" and st["lastAppliedSpec"] == rev:
        return Seen(line, broken=f"{new} was rolled back: {st['message']}")
    if st["phase"] == "Succeeded" and st["lastPromotedSpec"] == rev:
        served = s.sandbox.served(10)
        if served == {new: 10}:
            return Seen(f"Succeeded: {new} is promoted, every user gets it", ok=True)
        return Seen(f"Succeeded; users get {served}")
    return Seen(line)


def rolled_back(s: Session) -> Seen:
    new, old = s.memo["new"], s.memo["old"]
    c = s.sandbox.canary()
    line = canary_line(c)
    rev = workload_revision(s, new)
    if c is None or rev is None:
        return Seen(line)
    st = c["status"]
    if st["phase"] == "Succeeded" and st["lastPromotedSpec"] == rev:
        return Seen(line, broken=f"{new} was promoted although it fails half of its requests")
    if st["phase"] == "Failed" and st["lastAppliedSpec"] == rev:
        served = s.sandbox.served(10)
        if served == {old: 10}:
            return Seen(f"Failed: {new} is rolled back, every user gets {old} again", ok=True)
        return Seen(f"Failed; users get {served}")
    return Seen(line)


def waiting_promotion(s: Session, canary: str, revision: str | None) -> dict[str, Any] | Seen:
    """The canary waiting at its gate with `revision`, or a Seen saying why not (yet)."""
    c = s.sandbox.canary(canary)
    line = canary_line(c)
    if c is None or revision is None:
        return Seen(line)
    st = c["status"]
    if st["lastAppliedSpec"] != revision:  # the commit is not being rolled out yet
        return Seen(line)
    if st["phase"] == "Failed":
        return Seen(line, broken=f"the release was rolled back: {st['message']}")
    if st["phase"] != "WaitingPromotion":
        return Seen(line)
    return c


def ab_waiting(s: Session) -> Seen:
    new, old = s.memo["new"], s.memo["old"]
    c = waiting_promotion(s, "web", workload_revision(s, new))
    if isinstance(c, Seen):
        return c
    insiders = s.sandbox.served(6, **{"x-user-group": "insiders"})
    others = s.sandbox.served(6)
    if insiders == {new: 6} and others == {old: 6}:
        return Seen(f"WaitingPromotion: insiders get {new}, everyone else {old}", ok=True)
    return Seen(f"WaitingPromotion; insiders get {insiders}, others {others}")


def bluegreen_waiting(s: Session) -> Seen:
    new, old = s.memo["new"], s.memo["old"]
    c = waiting_promotion(s, "web", workload_revision(s, new))
    if isinstance(c, Seen):
        return c
    green = s.sandbox.served(6, host="web-canary")
    users = s.sandbox.served(6)
    if green == {new: 6} and users == {old: 6}:
        return Seen(f"WaitingPromotion: users get {old}; {new} answers on Host: web-canary only", ok=True)
    return Seen(f"WaitingPromotion; users get {users}, Host: web-canary gets {green}")


USERS = [f"user-{n}" for n in range(40)]


def flag_info(s: Session) -> dict[str, Any] | None:
    found: dict[str, Any] | None = s.sandbox.get("/flags/new-checkout")
    return found


def flag_adopted(s: Session) -> Seen:
    info, c = flag_info(s), s.sandbox.canary("checkout")
    if info is None or c is None:
        return Seen("waiting for the flag new-checkout and its Canary to be applied")
    if c["status"]["phase"] not in AT_REST:
        return Seen(canary_line(c))
    values = {s.sandbox.evaluate("new-checkout", u) for u in USERS[:10]}
    if values == {False}:
        return Seen(f"{c['status']['phase']}: new-checkout is off for every user (OFREP)", ok=True)
    return Seen(f"{c['status']['phase']}; OFREP answers {values}")


def flag_waiting(s: Session) -> Seen:
    info = flag_info(s) or {}
    c = waiting_promotion(s, "checkout", info.get("definition"))
    if isinstance(c, Seen):
        return c
    share = (info.get("rollout") or {}).get("share", 0)
    on = sum(1 for u in USERS if s.sandbox.evaluate("new-checkout", u) is True)
    if share == 50 and 0 < on < len(USERS):
        return Seen(
            f"WaitingPromotion: new-checkout is on for {share}% of users ({on} of {len(USERS)} asked)",
            ok=True,
        )
    return Seen(f"WaitingPromotion; share {share}%, on for {on} of {len(USERS)} users")


def flag_promoted(s: Session) -> Seen:
    c = s.sandbox.canary("checkout")
    line = canary_line(c)
    if c is None:
        return Seen(line)
    if c["status"]["phase"] == "Failed":
        return Seen(line, broken=f"the flag was rolled back: {c['status']['message']}")
    if c["status"]["phase"] != "Succeeded":
        return Seen(line)
    on = sum(1 for u in USERS if s.sandbox.evaluate("new-checkout", u) is True)
    if on == len(USERS):
        return Seen("Succeeded: new-checkout is on for every user", ok=True)
    return Seen(f"Succeeded; on for {on} of {len(USERS)} users")


def policy_applied(s: Session) -> Seen:
    k = root_kustomization(s)
    if k is None:
        return Seen("no Kustomization yet")
    ready = ready_condition(k)
    if ready.get("status") != "True":
        return Seen(
            f"Kustomization not ready: {ready.get('message', '')}", broken=ready.get("message", "not ready")
        )
    denies = [v for v in (s.sandbox.get("/violations") or {}).get("items", []) if v.get("action") == "deny"]
    if denies:
        return Seen(
            f"{len(denies)} deny finding(s)", broken=f"the live objects already break a policy: {denies[0]}"
        )
    return Seen("the policy is live; nothing that runs breaks it", ok=True)


def commit_blocked(s: Session) -> Seen:
    k = root_kustomization(s)
    if k is None:
        return Seen("no Kustomization yet")
    ready = ready_condition(k)
    if ready.get("reason") != "PolicyViolation":
        return Seen(f"Kustomization {ready.get('reason', '?')}: {ready.get('message', '')}")
    found = [
        v
        for v in (s.sandbox.get("/violations") or {}).get("items", [])
        if v.get("found_by") == "gate" and v.get("object") == f"Workload {NS}/web"
    ]
    if not found:
        return Seen("blocked; waiting for the finding to be listed")
    old = s.memo["old"]
    served = s.sandbox.served(10)
    if served != {old: 10}:
        return Seen(f"blocked, but users get {served}", broken=f"users should still get {old}")
    return Seen(f"blocked by {found[0]['policy']}; users still get {old}", ok=True)
