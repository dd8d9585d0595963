"""PolicySet: templates, constraints and admission policies compiled once, then evaluated over objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from rheostat.model.policy import (
    Constraint,
    ConstraintTemplate,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    parse_policy,
)
from rheostat.policy.gatekeeper import CompiledConstraint, EvaluationFailure, compile_templates
from rheostat.policy.inventory import Inventory
from rheostat.policy.match import MatchError, constraint_matches
from rheostat.policy.rego import RegoCompiler, Regorus
from rheostat.policy.review import JsonObject, Review, ReviewError, make_review
from rheostat.policy.vap import CompiledBinding, CompiledPolicy
from rheostat.policy.violation import PolicyError, Violation

PolicyDoc = (
    Mapping[str, Any]
    | ConstraintTemplate
    | Constraint
    | ValidatingAdmissionPolicy
    | ValidatingAdmissionPolicyBinding
)


def _describe(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata")
    name = meta.get("name", "?") if isinstance(meta, Mapping) else "?"
    return f"{doc.get('kind', 'object')} {name}"


class PolicySet:
    """Compiled policies. Building it is where bad policies are refused (PolicyError names the object)."""

    def __init__(
        self,
        templates: Iterable[ConstraintTemplate] = (),
        constraints: Iterable[Constraint] = (),
        policies: Iterable[ValidatingAdmissionPolicy] = (),
        bindings: Iterable[ValidatingAdmissionPolicyBinding] = (),
        *,
        rego: RegoCompiler | None = None,
    ) -> None:
        self.templates = compile_templates(list(templates), rego or Regorus())
        self.constraints: list[CompiledConstraint] = []
        seen: set[tuple[str, str]] = set()
        for constraint in sorted(constraints, key=lambda c: (c.kind, c.metadata.name)):
            label = f"{constraint.kind} {constraint.metadata.name}"
            template = self.templates.get(constraint.kind)
            if template is None:
                known = ", ".join(sorted(self.templates)) or "none"
                raise PolicyError(
                    label, f"no ConstraintTemplate declares kind {constraint.kind}; known: {known}"
                )
            if (constraint.kind, constraint.metadata.name) in seen:
                raise PolicyError(label, "declared twice")
            seen.add((constraint.kind, constraint.metadata.name))
            self.constraints.append(CompiledConstraint(constraint, template))
        compiled = {}
        for policy in policies:
            if policy.metadata.name in compiled:
                raise PolicyError(f"ValidatingAdmissionPolicy {policy.metadata.name}", "declared twice")
            compiled[policy.metadata.name] = CompiledPolicy(policy)
        self.policies: Mapping[str, CompiledPolicy] = compiled
        self.bindings = [
            CompiledBinding(b, compiled) for b in sorted(bindings, key=lambda b: b.metadata.name)
        ]

    @classmethod
    def from_documents(cls, docs: Iterable[PolicyDoc], *, rego: RegoCompiler | None = None) -> PolicySet:
        """Policies from decoded YAML documents or typed objects, in any order."""
        templates: list[ConstraintTemplate] = []
        constraints: list[Constraint] = []
        policies: list[ValidatingAdmissionPolicy] = []
        bindings: list[ValidatingAdmissionPolicyBinding] = []
        for doc in docs:
            if isinstance(doc, BaseModel):
                parsed = doc
            else:
                try:
                    parsed = parse_policy(dict(doc))
                except (ValidationError, ValueError) as exc:
                    raise PolicyError(_describe(doc), str(exc)) from exc
            if isinstance(parsed, ConstraintTemplate):
                templates.append(parsed)
            elif isinstance(parsed, Constraint):
                constraints.append(parsed)
            elif isinstance(parsed, ValidatingAdmissionPolicy):
                policies.append(parsed)
            else:
                bindings.append(parsed)
        return cls(templates, constraints, policies, bindings, rego=rego)

    def __len__(self) -> int:
        return len(self.constraints) + len(self.bindings)

    def evaluate(
        self,
        objects: Iterable[Mapping[str, Any]],
        inventory: Inventory | Iterable[Mapping[str, Any]] | None = None,
    ) -> list[Violation]:
        """Every violation and evaluation error for the objects, in object order.

        An object is a plain dict (apiVersion, kind, metadata, spec) or an `admission.k8s.io` AdmissionReview.
        `inventory` is what `data.inventory` holds (for uniqueness checks), and where Namespace objects
        (for namespaceSelector) and ValidatingAdmissionPolicy params are found. Namespace objects among
        `objects` count too.
        """
        docs = list(objects)
        inv = inventory if isinstance(inventory, Inventory) else Inventory(inventory or ())
        namespaces = dict(inv.namespaces)
        reviews: list[Review | Violation] = [self._review(doc) for doc in docs]
        for review in reviews:
            if isinstance(review, Review) and review.is_namespace and review.name not in namespaces:
                namespaces[review.name] = review.object
        out: list[Violation] = []
        for review in reviews:
            if isinstance(review, Violation):
                out.append(review)
                continue
            for constraint in self.constraints:
                out += self._check(constraint, review, inv, namespaces)
            for binding in self.bindings:
                out += binding.evaluate(review, inv, namespaces)
        return out

    def evaluate_review(self, review: Review, inventory: Inventory) -> list[Violation]:
        """One admission request, already reviewed (the webhook's path: no copy of the object)."""
        namespaces = inventory.namespaces
        if review.is_namespace and review.name not in namespaces:
            namespaces = {**namespaces, review.name: review.object}
        out: list[Violation] = []
        for constraint in self.constraints:
            out += self._check(constraint, review, inventory, namespaces)
        for binding in self.bindings:
            out += binding.evaluate(review, inventory, namespaces)
        return out

    @staticmethod
    def _review(doc: Mapping[str, Any]) -> Review | Violation:
        try:
            return make_review(doc)
        except ReviewError as exc:
            meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
            assert isinstance(meta, Mapping)
            return Violation(
                policy="",
                template="",
                action="deny",
                object_kind=str(doc.get("kind", "")),
                object_namespace=str(meta.get("namespace") or ""),
                object_name=str(meta.get("name", "")),
                message=f"cannot be reviewed: {exc}",
                kind="error",
            )

    @staticmethod
    def _check(
        constraint: CompiledConstraint, review: Review, inv: Inventory, namespaces: Mapping[str, JsonObject]
    ) -> list[Violation]:
        def result(message: str, details: Mapping[str, Any], *, error: bool = False) -> Violation:
            return Violation(
                policy=constraint.name,
                template=constraint.kind,
                action=constraint.constraint.spec.enforcementAction,
                object_kind=review.kind,
                object_namespace=review.namespace,
                object_name=review.name,
                message=message,
                details=details,
                kind="error" if error else "violation",
            )

        try:
            if not constraint_matches(constraint.constraint.spec.match, review, namespaces):
                return []
            namespace = namespaces.get(review.namespace) if review.namespace else None
            findings = constraint.findings(review, inv.data_json, namespace)
        except (MatchError, EvaluationFailure) as exc:
            return [result(str(exc), {}, error=True)]
        return [result(message, details) for message, details in findings]
