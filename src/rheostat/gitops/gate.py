"""The policy gate: every object of a new revision is checked before it is applied; live objects are audited.

deny stops the revision (nothing of it is applied), warn applies with a warning, dryrun only records. The gate
fails closed: a policy that does not compile or an evaluation error blocks the change and says why.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rheostat.gitops.reconciler import BOOTSTRAP, KUSTOMIZATION, GateVerdict, body_of
from rheostat.model.load import Manifest
from rheostat.model.policy import is_policy
from rheostat.policy import Inventory, PolicyError, PolicySet, Violation
from rheostat.store import StoredObject
from rheostat.store.port import State

VIOLATIONS = "Violations"  # state kind: one row per owner ("gate: <Kustomization>"), the audit, admission
ADMISSION_KEPT = 200  # the latest distinct findings of the admission webhook


@dataclass(frozen=True)
class Finding:
    """A violation as people see it: which policy, which object, why, from which commit and file."""

    policy: str
    template: str
    action: str
    kind: str  # "violation" or "error"
    object: str
    message: str
    commit: str
    file: str
    found_by: str  # "gate", "audit" or "admission"
    owner: str
    time: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def unusable(exc: PolicyError, commit: str, found_by: str, owner: str, now: float) -> Finding:
    """A policy that cannot be compiled is itself a blocking finding: the gate fails closed."""
    return Finding(
        exc.source,
        "",
        "deny",
        "error",
        "",
        f"policy cannot be used: {exc.message}",
        commit,
        "",
        found_by,
        owner,
        now,
    )


class PolicyGate:
    def __init__(
        self,
        store: State,
        *,
        on_findings: Callable[[list[Finding]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.on_findings = on_findings
        self.clock = clock
        self._compiled: tuple[str, PolicySet] | None = None

    # -- policies --------------------------------------------------------------------------------------

    def live_policies(self, except_owner: str = "") -> list[dict[str, Any]]:
        out = []
        for stored in self.store.list_objects():
            if is_policy(stored.body) and (not except_owner or stored.source.split("@")[0] != except_owner):
                out.append(stored.body)
        return out

    def compile(self, docs: Sequence[dict[str, Any]]) -> PolicySet:
        digest = hashlib.sha256(json.dumps(docs, sort_keys=True).encode()).hexdigest()
        if self._compiled is None or self._compiled[0] != digest:
            self._compiled = (digest, PolicySet.from_documents(docs))
        return self._compiled[1]

    # -- the gate --------------------------------------------------------------------------------------

    async def __call__(
        self, objects: list[Manifest], owner: str, revision: str, files: dict[str, str] | None = None
    ) -> GateVerdict:
        owner_label = f"{KUSTOMIZATION} {owner}"
        candidate = [body_of(o) for o in objects]
        policies = [*self.live_policies(except_owner=owner_label), *(b for b in candidate if is_policy(b))]
        reviewed = [b for b in candidate if not is_policy(b)]
        now = self.clock()
        try:
            results = self.compile(policies).evaluate(
                reviewed, inventory=self._inventory(owner_label, candidate)
            )
        except PolicyError as exc:
            finding = unusable(exc, revision, "gate", owner, now)
            self._record(f"gate: {owner}", [finding])
            return GateVerdict(False, f"{finding.policy}: {finding.message} (the gate fails closed)")
        findings = [self._finding(v, revision, files or {}, "gate", owner, now) for v in results]
        self._record(f"gate: {owner}", findings)
        blocking = [f for f, v in zip(findings, results, strict=True) if v.blocking]
        if blocking:
            shown = "; ".join(f"{f.policy}: {f.object}: {f.message}" for f in blocking[:3])
            more = f" (+{len(blocking) - 3} more)" if len(blocking) > 3 else ""
            return GateVerdict(False, shown + more)
        warnings = [f for f in findings if f.action == "warn"]
        return GateVerdict(True, "; ".join(f"{f.policy}: {f.object}: {f.message}" for f in warnings))

    def _inventory(self, owner_label: str, candidate: Iterable[dict[str, Any]]) -> Inventory:
        """What is live, with this owner's objects replaced by the candidate revision (for uniqueness rules)."""
        live = [
            s.body
            for s in self.store.list_objects()
            if s.source != BOOTSTRAP and s.source.split("@")[0] != owner_label and not is_policy(s.body)
        ]
        return Inventory([*live, *(b for b in candidate if not is_policy(b))])

    # -- the audit -------------------------------------------------------------------------------------

    def audit(self) -> list[Finding]:
        """Every live object against every live policy: a new policy flags what already runs."""
        findings = self.evaluate_audit(self.audit_inputs())
        self.record_audit(findings)
        return findings

    def audit_inputs(self) -> list[StoredObject]:
        """Read in the thread that owns the store; evaluating may then run in another."""
        return [s for s in self.store.list_objects() if s.source != BOOTSTRAP]

    def evaluate_audit(self, stored: list[StoredObject]) -> list[Finding]:
        """Pure: no store access, so it can run in a worker thread."""
        policies = [s.body for s in stored if is_policy(s.body)]
        objects = [s for s in stored if not is_policy(s.body)]
        now = self.clock()
        try:
            # Compiled apart from the gate's set: the audit runs in a worker thread, and a compiled engine is
            # not shared across threads.
            results = PolicySet.from_documents(policies).evaluate(
                [s.body for s in objects], inventory=Inventory([s.body for s in objects])
            )
        except PolicyError as exc:
            return [unusable(exc, "", "audit", "", now)]
        commits = {f"{s.kind} {s.key}": s.source for s in objects}
        findings = []
        for v in results:
            source = commits.get(f"{v.object_kind} {v.object_namespace}/{v.object_name}", "")
            owner, _, commit = source.partition("@")
            findings.append(
                self._finding(v, commit, {}, "audit", owner.removeprefix(f"{KUSTOMIZATION} "), now)
            )
        return findings

    def record_audit(self, findings: list[Finding], key: str = "audit") -> None:
        self._record(key, findings)

    def evaluate_live(self, policies: list[dict[str, Any]], objects: list[dict[str, Any]]) -> list[Finding]:
        """Pure (a worker thread may run it): a cluster's live objects against the policies; PolicyError when
        one is unusable (the store's audit records that)."""
        now = self.clock()
        results = PolicySet.from_documents(policies).evaluate(objects, inventory=Inventory(objects))
        return [self._finding(v, "", {}, "audit", "cluster", now) for v in results]

    # -- the admission webhook ------------------------------------------------------------------------

    def record_admission(self, violations: list[Violation], who: str) -> None:
        """Findings of the webhook, the newest last; written only when one is new (not on every request)."""
        now = self.clock()
        found = [self._finding(v, "", {}, "admission", who, now) for v in violations]
        kept = [Finding(**f) for f in (self.store.get_state(VIOLATIONS, "admission") or {}).get("items", [])]
        seen = {(f.policy, f.object, f.message) for f in kept}
        if all((f.policy, f.object, f.message) in seen for f in found):
            return
        fresh = {(f.policy, f.object, f.message) for f in found}
        merged = [f for f in kept if (f.policy, f.object, f.message) not in fresh] + found
        self._record("admission", merged[-ADMISSION_KEPT:])

    # -- recording -------------------------------------------------------------------------------------

    @staticmethod
    def _finding(
        v: Violation, revision: str, files: dict[str, str], by: str, owner: str, now: float
    ) -> Finding:
        ref = f"{v.object_kind} {v.object_namespace}/{v.object_name}" if v.object_namespace else v.object_ref
        return Finding(
            v.policy,
            v.template,
            v.action,
            v.kind,
            ref,
            v.message,
            revision,
            files.get(ref, ""),
            by,
            owner,
            now,
        )

    def _record(self, key: str, findings: list[Finding]) -> None:
        before = {
            (f["policy"], f["object"], f["message"])
            for f in (self.store.get_state(VIOLATIONS, key) or {}).get("items", [])
        }
        new = [f for f in findings if (f.policy, f.object, f.message) not in before]
        with self.store.transaction():
            self.store.put_state(VIOLATIONS, key, {"items": [f.to_json() for f in findings]})
            for f in new:
                kind, _, obj = f.object.partition(" ")
                self.store.add_event(
                    kind or "Policy",
                    obj or f.policy,
                    "PolicyViolation",
                    f"[{f.action}] {f.policy}: {f.message} (commit {f.commit or '-'}, found by {f.found_by})",
                    warning=f.action != "dryrun",
                )
        if new and self.on_findings is not None:
            self.on_findings(new)

    def findings(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for state in self.store.list_states(VIOLATIONS).values():
            out.extend(state.get("items", []))
        return sorted(out, key=lambda f: (f["found_by"], f["object"], f["policy"]))
