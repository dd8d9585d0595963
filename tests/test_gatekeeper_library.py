"""Gatekeeper's own library (../shared/testdata/gatekeeper-library/general): every suite case, as gator verify.

Each case compiles the suite's template and constraint, reviews one object (with its inventory), and checks
the expected verdicts. Cases the engine cannot pass are listed by name in EXPECTED_FAILURES with the reason
(strict xfail: one that starts passing fails the run until it is taken off the list); docs/policy.md lists
them too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rheostat.policy.suites import Case, find_cases, run_case
from tests.conftest import SHARED

LIBRARY_PATH = Path("testdata") / "gatekeeper-library" / "general"

_HPA_PARSE = (
    "regorus parses `input.parameters.minimumReplicaSpread` followed by a line starting with `(` as a call "
    "of that reference (`could not find function input.parameters.minimumReplicaSpread`); OPA ends the "
    "expression at the newline"
)
EXPECTED_FAILURES: dict[str, str] = {
    "noupdateserviceaccount/noupdateserviceaccount/example-allowed": (
        "regorus refuses the template: a partial set rule with several bodies `violation[...] { ... } { ... }` "
        "(Rego v0's OR of bodies) is read as an else (`else cannot be used with set rules`)"
    ),
    "horizontalpodautoscaler/horizontal-pod-autoscaler/example-allowed-hpa": _HPA_PARSE,
    "horizontalpodautoscaler/horizontal-pod-autoscaler/example-disallowed-hpa-replicaspread": _HPA_PARSE,
    "horizontalpodautoscaler/horizontal-pod-autoscaler/example-disallowed-scaletarget": _HPA_PARSE,
    "horizontalpodautoscaler/horizontal-pod-autoscaler/example-disallowed-hpa-replicas": (
        "the template's sprintf has 6 verbs and 5 arguments; Go's fmt prints %!v(MISSING), regorus raises "
        "`no argument specified for format verb 5` (and the replica-spread rule fails as in the other cases)"
    ),
}


def _cases() -> list[Case]:
    root = SHARED / LIBRARY_PATH
    return list(find_cases(root)) if root.is_dir() else []


CASES = _cases()


def _params() -> list[object]:
    out: list[object] = []
    for case in CASES:
        reason = EXPECTED_FAILURES.get(case.id)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out or [pytest.param(None, id="library-missing")]


@pytest.mark.parametrize("case", _params())
def test_library_case(case: Case | None, shared: Path) -> None:
    assert case is not None, f"no suite cases under {shared / LIBRARY_PATH}"
    result = run_case(case)
    assert result.passed, f"{case.id}: {result.failure}"


def test_every_suite_has_cases(shared: Path) -> None:
    root = shared / LIBRARY_PATH
    suites = sorted(p.parent.name for p in root.glob("*/suite.yaml"))
    with_cases = {c.object.relative_to(root).parts[0] for c in CASES}
    assert suites, f"no suite.yaml under {root}"
    assert [s for s in suites if s not in with_cases] == []
    assert len(CASES) >= 130


def test_expected_failures_name_real_cases(shared: Path) -> None:
    ids = {c.id for c in CASES}
    assert sorted(set(EXPECTED_FAILURES) - ids) == []
