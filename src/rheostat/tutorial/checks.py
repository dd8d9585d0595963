"""How a step's outcome is checked: through the API (what `rheostat get ...` shows) and the answers users get.

A check is polled; each poll returns a `Seen`: one line about now, and whether the outcome is reached (ok) or
can no longer be reached (broken).
"""

from __future__ import annotations

from typing import Any

from rheostat.tutorial import files
from rheostat.tutorial.files import NS
from rheostat.tutorial.sandbox import git
from rheostat.tutorial.state import (
    AT_REST,
    SEMVER,
    Seen,
    Session,
    canary_line,
    flag_info,
    ready_condition,
    root_kustomization,
    workload_revision,
)


def in_git(s: Session) -> Seen:
    tracked = set(git(s.sandbox.repo, "ls-files").splitlines())
    missing = [f for f in (files.WORKLOAD, files.CANARY) if f not in tracked]
    if missing:
        return Seen(f"not committed yet: {', '.join(missing)}")
    return Seen(f"{files.WORKLOAD} and {files.CANARY} are committed in {s.sandbox.repo}", ok=True)


def at_rest(s: Session) -> Seen:
    """No release of web under way or pending, and every user gets one version."""
    c = s.sandbox.canary()
    if c is None:
        return Seen("waiting for the Canary web to be applied")
    phase = c["status"]["phase"]
    if phase not in AT_REST or c["status"]["lastAppliedSpec"] != workload_revision(s):
        return Seen(canary_line(c))
    served = s.sandbox.served(6)
    if len(served) != 1 or not SEMVER.fullmatch(next(iter(served))):
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
