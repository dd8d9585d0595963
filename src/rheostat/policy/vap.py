"""Kubernetes ValidatingAdmissionPolicy and its binding, evaluated with CEL."""

from __future__ import annotations

from collections.abc import Mapping

from rheostat.model.policy import ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding
from rheostat.policy.cel import CelError, CelExpression, CelValidation, CelValue, CelVariables, to_cel
from rheostat.policy.inventory import Inventory
from rheostat.policy.match import MatchError, resources_match
from rheostat.policy.review import JsonObject, Review
from rheostat.policy.violation import Action, PolicyError, Violation

_ACTIONS: dict[str, Action] = {"Deny": "deny", "Warn": "warn", "Audit": "dryrun"}
_STRENGTH: list[Action] = ["deny", "warn", "dryrun"]


class CompiledPolicy:
    def __init__(self, policy: ValidatingAdmissionPolicy) -> None:
        self.policy = policy
        self.name = policy.metadata.name
        what = f"ValidatingAdmissionPolicy {self.name}"
        spec = policy.spec
        try:
            self.conditions = [
                CelExpression(c.expression, f"matchConditions {c.name}") for c in spec.matchConditions
            ]
            self.variables = CelVariables(spec.variables, "")
            self.validations = [CelValidation(v, f"validations[{i}]") for i, v in enumerate(spec.validations)]
        except CelError as exc:
            raise PolicyError(what, f"CEL does not compile: {exc}") from exc

    def messages(self, activation: dict[str, CelValue]) -> list[str]:
        """Failure messages for one evaluation; CelError when an expression fails."""
        self.variables.bind(activation, {})
        if not all(c.boolean(activation) for c in self.conditions):
            return []
        return [m for m in (v.failure(activation) for v in self.validations) if m is not None]


class CompiledBinding:
    def __init__(
        self, binding: ValidatingAdmissionPolicyBinding, policies: Mapping[str, CompiledPolicy]
    ) -> None:
        self.binding = binding
        self.name = binding.metadata.name
        what = f"ValidatingAdmissionPolicyBinding {self.name}"
        policy = policies.get(binding.spec.policyName)
        if policy is None:
            raise PolicyError(
                what, f"policyName {binding.spec.policyName!r}: no such ValidatingAdmissionPolicy"
            )
        if policy.policy.spec.paramKind is not None and binding.spec.paramRef is None:
            raise PolicyError(what, f"policy {policy.name} has a paramKind, so the binding needs a paramRef")
        self.policy = policy
        actions = [_ACTIONS[a] for a in binding.spec.validationActions]
        self.action: Action = min(actions, key=_STRENGTH.index)
        self.template = f"ValidatingAdmissionPolicy/{policy.name}"

    def _result(self, review: Review, message: str, *, error: bool = False) -> Violation:
        return Violation(
            policy=self.name,
            template=self.template,
            action=self.action,
            object_kind=review.kind,
            object_namespace=review.namespace,
            object_name=review.name,
            message=message,
            kind="error" if error else "violation",
        )

    def evaluate(
        self, review: Review, inventory: Inventory, namespaces: Mapping[str, JsonObject]
    ) -> list[Violation]:
        operation = review.operation or "CREATE"
        spec = self.policy.policy.spec
        try:
            if not resources_match(spec.matchConstraints, review, operation, namespaces):
                return []
            extra = self.binding.spec.matchResources
            if extra is not None and not resources_match(extra, review, operation, namespaces):
                return []
        except MatchError as exc:
            return [self._result(review, str(exc), error=True)]
        params = self._params(review, inventory)
        if params is None:
            return [
                self._result(
                    review, "no params found for the binding's paramRef (parameterNotFoundAction: Deny)"
                )
            ]
        namespace = namespaces.get(review.namespace) if review.namespace else None
        out: list[Violation] = []
        for param in params:
            activation: dict[str, CelValue] = {
                "object": to_cel(None if operation == "DELETE" else review.object),
                "oldObject": to_cel(review.object if operation == "DELETE" else review.old_object),
                "request": to_cel({**review.as_input(), "operation": operation}),
                "params": to_cel(param),
                "namespaceObject": to_cel(namespace),
            }
            try:
                messages = self.policy.messages(activation)
            except CelError as exc:
                return [self._result(review, f"CEL: {exc}", error=True)]
            out += [self._result(review, m) for m in messages]
        return out

    def _params(self, review: Review, inventory: Inventory) -> list[JsonObject | None] | None:
        """[None] without paramKind; the matching param objects; [] to skip (Allow); None to deny."""
        kind = self.policy.policy.spec.paramKind
        ref = self.binding.spec.paramRef
        if kind is None or ref is None:
            return [None]
        if ref.name is not None:
            spaces = [ref.namespace] if ref.namespace is not None else [review.namespace, ""]
            found: list[JsonObject] = []
            for ns in dict.fromkeys(spaces):
                found = inventory.find(kind.apiVersion, kind.kind, name=ref.name, namespace=ns)
                if found:
                    break
        else:
            found = inventory.find(kind.apiVersion, kind.kind, namespace=ref.namespace, selector=ref.selector)
        if found:
            return list(found)
        return [] if ref.parameterNotFoundAction == "Allow" else None
