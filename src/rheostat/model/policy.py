"""Typed policy kinds: Gatekeeper ConstraintTemplate and Constraints, Kubernetes ValidatingAdmissionPolicy.

Each model follows `rheostat.model.base.Strict`: unknown fields are errors with their path. Schemas that are
free-form upstream (a template's openAPIV3Schema, a Constraint's parameters) are plain mappings here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from rheostat.model.base import ObjectMeta, Strict

TEMPLATE_API = "templates.gatekeeper.sh/v1"
CONSTRAINT_GROUP = "constraints.gatekeeper.sh"
CONSTRAINT_API = f"{CONSTRAINT_GROUP}/v1beta1"
VAP_API = "admissionregistration.k8s.io/v1"
REGO_TARGET = "admission.k8s.gatekeeper.sh"

Scope = Literal["*", "Cluster", "Namespaced"]
EnforcementAction = Literal["deny", "warn", "dryrun"]


# ---- shared pieces -------------------------------------------------------------------------------------------


class SelectorRequirement(Strict):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values(self) -> SelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"values: must not be empty for operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"values: must be empty for operator {self.operator}")
        return self


class LabelSelector(Strict):
    """Kubernetes metav1.LabelSelector: every matchLabels pair and every expression must hold."""

    matchLabels: dict[str, str] = Field(default_factory=dict)
    matchExpressions: list[SelectorRequirement] = Field(default_factory=list)


class Validation(Strict):
    """One CEL check: the object passes when `expression` is true."""

    expression: str = Field(min_length=1)
    message: str | None = None
    messageExpression: str | None = None
    reason: str | None = None


class Variable(Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    expression: str = Field(min_length=1)


class MatchCondition(Strict):
    name: str
    expression: str = Field(min_length=1)


# ---- Gatekeeper ConstraintTemplate ---------------------------------------------------------------------------


class Names(Strict):
    kind: str = Field(min_length=1)
    shortNames: list[str] | None = None


class CrdValidation(Strict):
    openAPIV3Schema: dict[str, Any] | None = None
    legacySchema: bool | None = None


class CrdSpec(Strict):
    names: Names
    validation: CrdValidation | None = None


class Crd(Strict):
    spec: CrdSpec


class RegoSource(Strict):
    rego: str = Field(min_length=1)
    libs: list[str] = Field(default_factory=list)


class CelSource(Strict):
    """Gatekeeper's K8sNativeValidation: ValidatingAdmissionPolicy-style CEL inside a template."""

    validations: list[Validation] = Field(min_length=1)
    variables: list[Variable] = Field(default_factory=list)
    matchConditions: list[MatchCondition] = Field(default_factory=list)
    failurePolicy: Literal["Fail", "Ignore"] | None = None


class Code(Strict):
    engine: Literal["Rego", "K8sNativeValidation"]
    source: dict[str, Any]

    def rego(self) -> RegoSource:
        return RegoSource.model_validate(self.source)

    def cel(self) -> CelSource:
        return CelSource.model_validate(self.source)

    @model_validator(mode="after")
    def _source(self) -> Code:
        # Validated here so that a bad source is an error at load, with its path.
        if self.engine == "Rego":
            self.rego()
        else:
            self.cel()
        return self


class Target(Strict):
    target: str = REGO_TARGET
    rego: str | None = None
    libs: list[str] = Field(default_factory=list)
    code: list[Code] = Field(default_factory=list)
    operations: list[str] | None = None

    @model_validator(mode="after")
    def _has_code(self) -> Target:
        if self.target != REGO_TARGET:
            raise ValueError(f"target: only {REGO_TARGET!r} is supported, got {self.target!r}")
        if self.rego is None and not self.code:
            raise ValueError("set rego or code[]")
        engines = [c.engine for c in self.code]
        for engine in set(engines):
            if engines.count(engine) > 1:
                raise ValueError(f"code: engine {engine} appears more than once")
        return self

    def cel_source(self) -> CelSource | None:
        return next((c.cel() for c in self.code if c.engine == "K8sNativeValidation"), None)

    def rego_source(self) -> RegoSource | None:
        """The legacy `rego` field wins over code[engine=Rego], as in Gatekeeper."""
        if self.rego is not None:
            return RegoSource(rego=self.rego, libs=self.libs)
        return next((c.rego() for c in self.code if c.engine == "Rego"), None)


class TemplateSpec(Strict):
    crd: Crd
    targets: list[Target] = Field(min_length=1, max_length=1)


class ConstraintTemplate(Strict):
    apiVersion: Literal["templates.gatekeeper.sh/v1"]
    kind: Literal["ConstraintTemplate"]
    metadata: ObjectMeta
    spec: TemplateSpec

    @property
    def constraint_kind(self) -> str:
        return self.spec.crd.spec.names.kind

    @property
    def target(self) -> Target:
        return self.spec.targets[0]

    @property
    def parameter_schema(self) -> dict[str, Any] | None:
        validation = self.spec.crd.spec.validation
        return validation.openAPIV3Schema if validation is not None else None

    @model_validator(mode="after")
    def _name_is_kind(self) -> ConstraintTemplate:
        if self.metadata.name != self.constraint_kind.lower():
            raise ValueError(
                f"metadata.name {self.metadata.name!r} must be the lowercase of spec.crd.spec.names.kind "
                f"({self.constraint_kind.lower()!r})"
            )
        return self


# ---- Gatekeeper Constraint -----------------------------------------------------------------------------------


class KindSelector(Strict):
    apiGroups: list[str] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)


class Match(Strict):
    """Which objects a Constraint applies to. Every field that is set must hold; empty matches all."""

    kinds: list[KindSelector] = Field(default_factory=list)
    scope: Scope = "*"
    namespaces: list[str] = Field(default_factory=list)
    excludedNamespaces: list[str] = Field(default_factory=list)
    labelSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    name: str | None = None
    source: Literal["All", "Original", "Generated"] = "All"


class ConstraintSpec(Strict):
    match: Match = Field(default_factory=Match)
    parameters: dict[str, Any] | None = None
    enforcementAction: EnforcementAction = "deny"


class Constraint(Strict):
    """A Constraint of the kind a ConstraintTemplate declares; its kind is only checked against templates."""

    apiVersion: Literal["constraints.gatekeeper.sh/v1beta1", "constraints.gatekeeper.sh/v1"]
    kind: str = Field(min_length=1)
    metadata: ObjectMeta
    spec: ConstraintSpec = Field(default_factory=ConstraintSpec)


# ---- Kubernetes ValidatingAdmissionPolicy --------------------------------------------------------------------


class ParamKind(Strict):
    apiVersion: str
    kind: str


class ResourceRule(Strict):
    """NamedRuleWithOperations. Resources are plural lowercase names (`deployments`, `canaries`)."""

    apiGroups: list[str] = Field(default_factory=lambda: ["*"])
    apiVersions: list[str] = Field(default_factory=lambda: ["*"])
    resources: list[str] = Field(default_factory=lambda: ["*"])
    operations: list[str] = Field(default_factory=lambda: ["*"])
    resourceNames: list[str] = Field(default_factory=list)
    scope: Scope = "*"


class MatchResources(Strict):
    namespaceSelector: LabelSelector | None = None
    objectSelector: LabelSelector | None = None
    resourceRules: list[ResourceRule] = Field(default_factory=list)
    excludeResourceRules: list[ResourceRule] = Field(default_factory=list)
    matchPolicy: Literal["Exact", "Equivalent"] = "Equivalent"


class AuditAnnotation(Strict):
    key: str
    valueExpression: str


class PolicySpec(Strict):
    paramKind: ParamKind | None = None
    matchConstraints: MatchResources
    validations: list[Validation] = Field(min_length=1)
    variables: list[Variable] = Field(default_factory=list)
    matchConditions: list[MatchCondition] = Field(default_factory=list)
    failurePolicy: Literal["Fail", "Ignore"] = "Fail"
    auditAnnotations: list[AuditAnnotation] = Field(default_factory=list)


class ValidatingAdmissionPolicy(Strict):
    apiVersion: Literal["admissionregistration.k8s.io/v1"]
    kind: Literal["ValidatingAdmissionPolicy"]
    metadata: ObjectMeta
    spec: PolicySpec


class ParamRef(Strict):
    name: str | None = None
    namespace: str | None = None
    selector: LabelSelector | None = None
    parameterNotFoundAction: Literal["Allow", "Deny"] = "Deny"

    @model_validator(mode="after")
    def _one_of(self) -> ParamRef:
        if (self.name is None) == (self.selector is None):
            raise ValueError("set exactly one of name, selector")
        return self


class BindingSpec(Strict):
    policyName: str = Field(min_length=1)
    paramRef: ParamRef | None = None
    matchResources: MatchResources | None = None
    validationActions: list[Literal["Deny", "Warn", "Audit"]] = Field(min_length=1)

    @model_validator(mode="after")
    def _deny_and_warn(self) -> BindingSpec:
        if "Deny" in self.validationActions and "Warn" in self.validationActions:
            raise ValueError("validationActions: Deny and Warn may not be used together")
        return self


class ValidatingAdmissionPolicyBinding(Strict):
    apiVersion: Literal["admissionregistration.k8s.io/v1"]
    kind: Literal["ValidatingAdmissionPolicyBinding"]
    metadata: ObjectMeta
    spec: BindingSpec


PolicyObject = ConstraintTemplate | Constraint | ValidatingAdmissionPolicy | ValidatingAdmissionPolicyBinding

# The kinds with a fixed (apiVersion, kind); Constraints are recognised by `is_constraint`.
POLICY_KINDS: dict[tuple[str, str], type[BaseModel]] = {
    (TEMPLATE_API, "ConstraintTemplate"): ConstraintTemplate,
    (VAP_API, "ValidatingAdmissionPolicy"): ValidatingAdmissionPolicy,
    (VAP_API, "ValidatingAdmissionPolicyBinding"): ValidatingAdmissionPolicyBinding,
}


def is_constraint(doc: object) -> bool:
    """A Gatekeeper Constraint: any kind of apiVersion `constraints.gatekeeper.sh/*`."""
    if not isinstance(doc, dict):
        return False
    api = doc.get("apiVersion")
    return isinstance(api, str) and api.startswith(f"{CONSTRAINT_GROUP}/")


def is_policy(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    return (doc.get("apiVersion"), doc.get("kind")) in POLICY_KINDS or is_constraint(doc)


def policy_model(doc: object) -> type[BaseModel] | None:
    """The model for a policy document, or None when it is not one (for a loader's KINDS lookup)."""
    if not isinstance(doc, dict):
        return None
    if is_constraint(doc):
        return Constraint
    return POLICY_KINDS.get((doc.get("apiVersion"), doc.get("kind")))  # type: ignore[arg-type]


def parse_policy(doc: object) -> PolicyObject:
    """One decoded document to a typed policy object. Raises pydantic.ValidationError or ValueError."""
    model = policy_model(doc)
    if model is None:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        api = doc.get("apiVersion") if isinstance(doc, dict) else None
        raise ValueError(f"not a policy kind: {kind!r} of apiVersion {api!r}")
    parsed = model.model_validate(doc)
    assert isinstance(
        parsed, ConstraintTemplate | Constraint | ValidatingAdmissionPolicy | ValidatingAdmissionPolicyBinding
    )
    return parsed
