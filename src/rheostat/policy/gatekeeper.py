"""Gatekeeper ConstraintTemplates compiled for evaluation: Rego (regorus) or K8sNativeValidation (CEL)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rheostat.model.policy import CelSource, Constraint, ConstraintTemplate
from rheostat.policy.cel import CelError, CelExpression, CelValidation, CelValue, CelVariables, to_cel
from rheostat.policy.rego import RegoCompiler, RegoError
from rheostat.policy.review import JsonObject, Review
from rheostat.policy.schema import schema_errors
from rheostat.policy.violation import PolicyError

Finding = tuple[str, dict[str, Any]]  # (message, details)


class EvaluationFailure(Exception):
    """The template could not decide about an object; becomes an "error" result."""


def template_label(template: ConstraintTemplate) -> str:
    return f"ConstraintTemplate {template.metadata.name}"


class CelTemplate:
    """Gatekeeper's CEL: `variables.anyObject`, `variables.params` (the parameters), `params` (the Constraint)."""

    def __init__(self, source: CelSource, what: str) -> None:
        self.conditions = [
            CelExpression(c.expression, f"{what} matchConditions {c.name}") for c in source.matchConditions
        ]
        self.variables = CelVariables(source.variables, what)
        self.validations = [
            CelValidation(v, f"{what} validations[{i}]") for i, v in enumerate(source.validations)
        ]

    def findings(self, review: Review, constraint: JsonObject, namespace: JsonObject | None) -> list[Finding]:
        deleting = review.operation == "DELETE"
        obj = None if deleting else review.object
        old = review.object if deleting else review.old_object
        parameters = (constraint.get("spec") or {}).get("parameters") or {}
        activation: dict[str, CelValue] = {
            "object": to_cel(obj),
            "oldObject": to_cel(old),
            "request": to_cel(review.as_input()),
            "params": to_cel(constraint),
            "namespaceObject": to_cel(namespace),
        }
        preset = {"anyObject": to_cel(review.object), "params": to_cel(parameters)}
        try:
            self.variables.bind(activation, preset)
            if not all(c.boolean(activation) for c in self.conditions):
                return []
            messages = [v.failure(activation) for v in self.validations]
        except CelError as exc:
            raise EvaluationFailure(str(exc)) from exc
        return [(m, {}) for m in messages if m is not None]


class RegoTemplate:
    def __init__(self, template: ConstraintTemplate, rego: RegoCompiler) -> None:
        source = template.target.rego_source()
        assert source is not None  # a Target has rego or code; code without CEL has Rego
        try:
            self.program = rego.compile(template.metadata.name, source.rego, source.libs)
        except RegoError as exc:
            raise PolicyError(template_label(template), f"Rego does not compile: {exc}") from exc

    def findings(self, review: Review, parameters_json: str, data_json: str) -> list[Finding]:
        input_json = f'{{"review":{review.input_json},"parameters":{parameters_json}}}'
        try:
            results = self.program.violations(input_json, data_json)
        except RegoError as exc:
            raise EvaluationFailure(f"Rego: {exc}") from exc
        out: list[Finding] = []
        for item in results:
            if not isinstance(item, dict) or not isinstance(item.get("msg"), str):
                raise EvaluationFailure(f"a violation must be an object with a string msg, got {item!r:.200}")
            details = item.get("details")
            out.append((item["msg"], details if isinstance(details, dict) else {}))
        return out


class CompiledTemplate:
    """A template ready to evaluate. With both engines, Rego is used: the library writes the same rule twice,
    and regorus evaluates it some 20 times faster than cel-python (docs/policy.md). CEL-only templates use CEL."""

    def __init__(self, template: ConstraintTemplate, rego: RegoCompiler) -> None:
        self.template = template
        self.kind = template.constraint_kind
        cel = template.target.cel_source()
        self.cel: CelTemplate | None = None
        self.rego: RegoTemplate | None = None
        if cel is not None and template.target.rego_source() is None:
            try:
                self.cel = CelTemplate(cel, "K8sNativeValidation")
            except CelError as exc:
                raise PolicyError(template_label(template), f"CEL does not compile: {exc}") from exc
        else:
            self.rego = RegoTemplate(template, rego)

    @property
    def engine(self) -> str:
        return "CEL" if self.cel is not None else "Rego"


class CompiledConstraint:
    def __init__(self, constraint: Constraint, template: CompiledTemplate) -> None:
        self.constraint = constraint
        self.template = template
        self.name = constraint.metadata.name
        self.kind = constraint.kind
        self.doc: JsonObject = constraint.model_dump(mode="json", exclude_none=True)
        parameters = constraint.spec.parameters or {}
        schema = template.template.parameter_schema
        errors = schema_errors(parameters, schema) if schema else []
        if errors:
            raise PolicyError(f"{constraint.kind} {self.name}", "; ".join(errors))
        self.parameters_json = json.dumps(parameters, separators=(",", ":"), default=str)

    def findings(self, review: Review, data_json: str, namespace: JsonObject | None) -> list[Finding]:
        if self.template.cel is not None:
            return self.template.cel.findings(review, self.doc, namespace)
        assert self.template.rego is not None
        return self.template.rego.findings(review, self.parameters_json, data_json)


def compile_templates(
    templates: list[ConstraintTemplate], rego: RegoCompiler
) -> Mapping[str, CompiledTemplate]:
    """Templates by the Constraint kind they declare; two templates of one kind are an error."""
    out: dict[str, CompiledTemplate] = {}
    for template in templates:
        kind = template.constraint_kind
        if kind in out:
            raise PolicyError(
                template_label(template),
                f"kind {kind} is already declared by {template_label(out[kind].template)}",
            )
        out[kind] = CompiledTemplate(template, rego)
    return out
