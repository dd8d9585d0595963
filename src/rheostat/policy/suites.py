"""Gatekeeper test suites (`gator verify` format): `suite.yaml` -> cases -> verdicts.

A Suite (`test.gatekeeper.sh/v1alpha1`) lists tests, each a template and a constraint, and cases: one object
(or an AdmissionReview), optional inventory files, and assertions on the violations: `violations` yes | no |
N, optionally only counting messages that match the `message` regular expression.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rheostat.model.yaml_limits import safe_load, safe_load_all
from rheostat.policy.engine import PolicySet
from rheostat.policy.inventory import Inventory
from rheostat.policy.rego import RegoCompiler
from rheostat.policy.violation import PolicyError, Violation

SUITE_API = "test.gatekeeper.sh/v1alpha1"


@dataclass(frozen=True)
class Assertion:
    violations: str | int = "yes"
    message: str | None = None

    def failure(self, messages: list[str]) -> str | None:
        """None when the assertion holds, else why not."""
        matching = [m for m in messages if self.message is None or re.search(self.message, m)]
        about = f" matching {self.message!r}" if self.message is not None else ""
        n = len(matching)
        if self.violations == "yes" and n == 0:
            return f"want at least 1 violation{about}, got 0: {messages}"
        if self.violations == "no" and n > 0:
            return f"want no violation{about}, got {n}: {messages}"
        if isinstance(self.violations, int) and n != self.violations:
            return f"want exactly {self.violations} violations{about}, got {n}: {messages}"
        return None


@dataclass(frozen=True)
class Case:
    suite: str
    test: str
    name: str
    template: Path
    constraint: Path
    object: Path
    inventory: tuple[Path, ...] = ()
    assertions: tuple[Assertion, ...] = field(default_factory=tuple)

    @property
    def id(self) -> str:
        return f"{self.suite}/{self.test}/{self.name}"


@dataclass(frozen=True)
class CaseResult:
    case: Case
    violations: tuple[Violation, ...]
    failure: str | None  # None: every assertion held

    @property
    def passed(self) -> bool:
        return self.failure is None


def _load_all(path: Path) -> list[dict[str, Any]]:
    return safe_load_all(path.read_text(encoding="utf-8"))


def _assertion(raw: dict[str, Any]) -> Assertion:
    violations = raw.get("violations", "yes")
    if isinstance(violations, bool):  # YAML 1.1 reads `yes` and `no` as booleans
        violations = "yes" if violations else "no"
    if violations not in ("yes", "no") and not (isinstance(violations, int) and violations >= 0):
        raise ValueError(f"assertion violations must be yes, no or a count, got {violations!r}")
    message = raw.get("message")
    return Assertion(violations=violations, message=str(message) if message is not None else None)


def read_suite(path: Path) -> list[Case]:
    """The cases of one suite.yaml; a file that is not a Suite has none (gator ignores it too)."""
    doc = safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("kind") != "Suite" or doc.get("apiVersion") != SUITE_API:
        return []
    if doc.get("skip"):
        return []
    base = path.parent
    suite = str((doc.get("metadata") or {}).get("name") or base.name)
    cases: list[Case] = []
    for test in doc.get("tests") or []:
        if test.get("skip"):
            continue
        for case in test.get("cases") or []:
            if case.get("skip"):
                continue
            assertions = tuple(_assertion(a) for a in case.get("assertions") or [])
            if not assertions:
                raise ValueError(f"{path}: case {case.get('name')!r}: assertions must not be empty")
            cases.append(
                Case(
                    suite=suite,
                    test=str(test["name"]),
                    name=str(case["name"]),
                    template=base / test["template"],
                    constraint=base / test["constraint"],
                    object=base / case["object"],
                    inventory=tuple(base / p for p in case.get("inventory") or []),
                    assertions=assertions,
                )
            )
    return cases


def find_cases(root: Path) -> Iterator[Case]:
    for path in sorted(root.rglob("suite.yaml")):
        yield from read_suite(path)


def build(case: Case, rego: RegoCompiler | None = None) -> PolicySet:
    """The PolicySet of one case's template and constraint (PolicyError if either is refused)."""
    return PolicySet.from_documents(_load_all(case.template) + _load_all(case.constraint), rego=rego)


def run_case(case: Case, policies: PolicySet | None = None, rego: RegoCompiler | None = None) -> CaseResult:
    try:
        policies = policies or build(case, rego)
    except PolicyError as exc:
        return CaseResult(case, (), f"policy refused: {exc}")
    objects = _load_all(case.object)
    if len(objects) != 1:
        return CaseResult(case, (), f"{case.object} holds {len(objects)} objects; a case reviews exactly one")
    inventory = Inventory(obj for path in case.inventory for obj in _load_all(path))
    results = tuple(policies.evaluate(objects, inventory=inventory))
    errors = [r for r in results if r.kind == "error"]
    if errors:
        return CaseResult(case, results, "evaluation error: " + "; ".join(r.message for r in errors))
    messages = [r.message for r in results]
    for assertion in case.assertions:
        failure = assertion.failure(messages)
        if failure is not None:
            return CaseResult(case, results, failure)
    return CaseResult(case, results, None)
