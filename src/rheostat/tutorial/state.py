"""What the steps share: the session, what a check sees, and reading Git and the API as a user would."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rheostat.tutorial import files
from rheostat.tutorial.files import NS
from rheostat.tutorial.sandbox import Sandbox

AT_REST = ("Initialized", "Succeeded", "Failed")
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

SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")
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


# -- the API ------------------------------------------------------------------------------------------


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


def flag_info(s: Session) -> dict[str, Any] | None:
    found: dict[str, Any] | None = s.sandbox.get("/flags/new-checkout")
    return found
