"""What evaluation returns: violations, and evaluation errors that fail closed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Action = Literal["deny", "warn", "dryrun"]
ResultKind = Literal["violation", "error"]


class PolicyError(Exception):
    """A policy that cannot be used: Rego or CEL that does not compile, a Constraint of an unknown kind, bad
    parameters. `source` names the object (`ConstraintTemplate k8srequiredlabels`)."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        self.message = message
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True)
class Violation:
    """One finding about one object.

    `kind` is "violation" when the policy said no, and "error" when the engine could not decide (the policy
    threw, matching needed a missing Namespace, the object could not be reviewed). An error is always
    `blocking`, whatever the policy's action: the gate fails closed.
    """

    policy: str  # Constraint name, or ValidatingAdmissionPolicyBinding name
    template: str  # Constraint kind (the template's kind), or "ValidatingAdmissionPolicy/<policy name>"
    action: Action
    object_kind: str
    object_namespace: str
    object_name: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    kind: ResultKind = "violation"

    @property
    def blocking(self) -> bool:
        return self.kind == "error" or self.action == "deny"

    @property
    def object_ref(self) -> str:
        where = f"{self.object_namespace}/" if self.object_namespace else ""
        return f"{self.object_kind} {where}{self.object_name}"

    def __str__(self) -> str:
        label = "error" if self.kind == "error" else self.action
        return f"[{label}] {self.template} {self.policy}: {self.object_ref}: {self.message}"


def blocking(results: Iterable[Violation]) -> list[Violation]:
    """The results that must stop a change: deny violations and every evaluation error."""
    return [r for r in results if r.blocking]
