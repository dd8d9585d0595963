"""The policy engine: parsing, compiling, Gatekeeper match semantics, fail-closed errors, VAP, starter library."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from rheostat.model.load import parse_object
from rheostat.policy import (
    Constraint,
    ConstraintTemplate,
    Inventory,
    PolicyError,
    PolicySet,
    ValidatingAdmissionPolicy,
    Violation,
    blocking,
    is_constraint,
    is_policy,
    parse_policy,
    policy_model,
    starter_documents,
    starter_policies,
)
from rheostat.policy.match import resource_name

Doc = dict[str, Any]

# ---- builders --------------------------------------------------------------------------------------------------


def template(
    kind: str, rego: str | None = None, *, cel: list[Doc] | None = None, schema: Doc | None = None
) -> Doc:
    target: Doc = {"target": "admission.k8s.gatekeeper.sh"}
    if rego is not None:
        target["rego"] = rego
    if cel is not None:
        target["code"] = [{"engine": "K8sNativeValidation", "source": {"validations": cel}}]
    crd: Doc = {"names": {"kind": kind}}
    if schema is not None:
        crd["validation"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "templates.gatekeeper.sh/v1",
        "kind": "ConstraintTemplate",
        "metadata": {"name": kind.lower()},
        "spec": {"crd": {"spec": crd}, "targets": [target]},
    }


def constraint(
    kind: str, name: str = "c", *, match: Doc | None = None, params: Doc | None = None, action: str = "deny"
) -> Doc:
    spec: Doc = {"enforcementAction": action}
    if match is not None:
        spec["match"] = match
    if params is not None:
        spec["parameters"] = params
    return {
        "apiVersion": "constraints.gatekeeper.sh/v1beta1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def pod(name: str = "p", namespace: str | None = "default", labels: dict[str, str] | None = None) -> Doc:
    meta: Doc = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    if labels:
        meta["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


def namespace(name: str, labels: dict[str, str] | None = None) -> Doc:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels or {}}}


ALWAYS = """
package always

violation[{"msg": msg, "details": {"name": input.review.object.metadata.name}}] {
  msg := sprintf("%v %v flagged", [input.review.kind.kind, input.review.object.metadata.name])
}
"""


def always(match: Doc | None = None, action: str = "deny") -> PolicySet:
    return PolicySet.from_documents(
        [template("Always", ALWAYS), constraint("Always", match=match, action=action)]
    )


def names(results: list[Violation]) -> list[str]:
    return [r.object_name for r in results]


# ---- models ----------------------------------------------------------------------------------------------------


def test_parse_policy_gives_typed_objects() -> None:
    assert isinstance(parse_policy(template("Always", ALWAYS)), ConstraintTemplate)
    parsed = parse_policy(constraint("Always", params={"a": 1}))
    assert isinstance(parsed, Constraint)
    assert parsed.spec.parameters == {"a": 1}
    assert parsed.spec.enforcementAction == "deny"


def test_constraints_are_recognised_by_group() -> None:
    assert is_constraint(constraint("AnyKind"))
    assert is_policy(constraint("AnyKind"))
    assert not is_constraint(pod())
    assert not is_policy(pod())
    assert policy_model(template("Always", ALWAYS)) is ConstraintTemplate
    assert policy_model(constraint("Whatever")) is Constraint
    assert policy_model(pod()) is None


def test_unknown_fields_are_errors_with_their_path() -> None:
    doc = constraint("Always")
    doc["spec"]["match"] = {"kindz": []}
    with pytest.raises(ValidationError) as err:
        parse_policy(doc)
    assert "spec.match.kindz" in str(err.value).replace("\n", ".").replace(" ", "")


def test_bad_enforcement_action_is_refused() -> None:
    with pytest.raises(ValidationError, match="enforcementAction"):
        parse_policy(constraint("Always", action="block"))


def test_template_name_must_be_lowercase_kind() -> None:
    doc = template("Always", ALWAYS)
    doc["metadata"]["name"] = "other"
    with pytest.raises(ValidationError, match="lowercase"):
        parse_policy(doc)


# ---- compiling -------------------------------------------------------------------------------------------------


def test_rego_that_does_not_compile_names_template_and_line() -> None:
    bad = template("Broken", 'package broken\n\nviolation[{"msg": m}] {\n  m := 1 +\n}\n')
    with pytest.raises(PolicyError) as err:
        PolicySet.from_documents([bad])
    assert err.value.source == "ConstraintTemplate broken"
    assert "Rego does not compile" in str(err.value)
    assert "broken.rego:" in str(err.value)  # file:line:column from the engine
    assert "Stack backtrace" not in str(err.value)


def test_rego_without_violation_rule_is_refused() -> None:
    with pytest.raises(PolicyError, match="no violation rule"):
        PolicySet.from_documents([template("Empty", "package empty\n\nx := 1\n")])


def test_cel_that_does_not_compile_is_refused() -> None:
    bad = template("BadCel", cel=[{"expression": "object.metadata.name =="}])
    with pytest.raises(PolicyError, match=r"ConstraintTemplate badcel: CEL does not compile"):
        PolicySet.from_documents([bad])


def test_constraint_of_unknown_kind_is_an_error_on_it() -> None:
    with pytest.raises(PolicyError) as err:
        PolicySet.from_documents([template("Always", ALWAYS), constraint("Nope", "mine")])
    assert err.value.source == "Nope mine"
    assert "known: Always" in err.value.message


def test_parameters_are_checked_against_the_schema() -> None:
    schema = {"type": "object", "properties": {"max": {"type": "integer"}}}
    docs = [template("Always", ALWAYS, schema=schema), constraint("Always", params={"max": "fifty"})]
    with pytest.raises(PolicyError, match=r"parameters\.max: expected integer"):
        PolicySet.from_documents(docs)


def test_two_templates_of_one_kind_are_refused() -> None:
    with pytest.raises(PolicyError, match="already declared"):
        PolicySet.from_documents([template("Always", ALWAYS), template("Always", ALWAYS)])


# ---- evaluation, actions, fail closed --------------------------------------------------------------------------


def test_violation_carries_policy_object_message_and_details() -> None:
    [v] = always().evaluate([pod("web")])
    assert v == Violation(
        policy="c",
        template="Always",
        action="deny",
        object_kind="Pod",
        object_namespace="default",
        object_name="web",
        message="Pod web flagged",
        details={"name": "web"},
    )
    assert v.blocking
    assert str(v) == "[deny] Always c: Pod default/web: Pod web flagged"
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.message = "x"  # type: ignore[misc]


@pytest.mark.parametrize(("action", "blocks"), [("deny", True), ("warn", False), ("dryrun", False)])
def test_enforcement_action(action: str, blocks: bool) -> None:
    results = always(action=action).evaluate([pod()])
    assert [r.action for r in results] == [action]
    assert bool(blocking(results)) is blocks


THROWS = """
package throws

violation[{"msg": msg}] {
  n := to_number(input.review.object.metadata.name)
  msg := sprintf("%v", [n])
}
"""


@pytest.mark.parametrize("action", ["deny", "warn", "dryrun"])
def test_evaluation_error_fails_closed(action: str) -> None:
    policies = PolicySet.from_documents([template("Throws", THROWS), constraint("Throws", action=action)])
    [result] = policies.evaluate([pod("not-a-number")])
    assert result.kind == "error"
    assert result.blocking
    assert "Rego:" in result.message
    assert result.policy == "c"


def test_cel_evaluation_error_fails_closed() -> None:
    cel = [{"expression": "object.spec.missing.deeper == 1"}]
    policies = PolicySet.from_documents([template("CelThrows", cel=cel), constraint("CelThrows")])
    [result] = policies.evaluate([pod()])
    assert result.kind == "error"
    assert result.blocking


def test_an_object_that_cannot_be_reviewed_is_an_error() -> None:
    [result] = always().evaluate([{"metadata": {"name": "x"}}])
    assert result.kind == "error"
    assert "no apiVersion" in result.message


def test_admission_review_delete_reviews_the_old_object() -> None:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"operation": "DELETE", "oldObject": pod("going")},
    }
    assert names(always().evaluate([review])) == ["going"]


# ---- match -----------------------------------------------------------------------------------------------------


def test_kinds_with_api_groups() -> None:
    policies = always({"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]})
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "a"}}
    other_group = {
        "apiVersion": "example.com/v1",
        "kind": "Deployment",
        "metadata": {"name": "e", "namespace": "a"},
    }
    assert names(policies.evaluate([deployment, other_group, pod()])) == ["d"]


def test_namespaces_and_excluded_namespaces_with_globs() -> None:
    policies = always({"namespaces": ["prod-*", "*-live"], "excludedNamespaces": ["prod-sandbox"]})
    objects = [pod("a", "prod-eu"), pod("b", "shop-live"), pod("c", "prod-sandbox"), pod("d", "dev")]
    assert names(policies.evaluate(objects)) == ["a", "b"]


def test_a_namespace_less_object_is_not_disqualified_by_namespaces() -> None:
    # gator's rule: without a namespace, `namespaces` cannot exclude the object
    assert names(always({"namespaces": ["prod"]}).evaluate([pod("x", namespace=None)])) == ["x"]


def test_label_selector() -> None:
    selector = {
        "matchLabels": {"team": "shop"},
        "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["test"]}],
    }
    policies = always({"labelSelector": selector})
    objects = [
        pod("a", labels={"team": "shop"}),
        pod("b", labels={"team": "shop", "tier": "test"}),
        pod("c", labels={"team": "ads"}),
    ]
    assert names(policies.evaluate(objects)) == ["a"]


def test_namespace_selector_reads_namespaces_from_inventory_or_objects() -> None:
    policies = always({"namespaceSelector": {"matchLabels": {"env": "prod"}}})
    inventory = Inventory([namespace("shop", {"env": "prod"}), namespace("lab", {"env": "dev"})])
    assert names(policies.evaluate([pod("a", "shop"), pod("b", "lab")], inventory=inventory)) == ["a"]
    assert names(policies.evaluate([namespace("shop", {"env": "prod"}), pod("a", "shop")])) == ["shop", "a"]


def test_namespace_selector_without_the_namespace_fails_closed() -> None:
    [result] = always({"namespaceSelector": {"matchLabels": {"env": "prod"}}}).evaluate([pod("a", "unknown")])
    assert result.kind == "error"
    assert "Namespace 'unknown'" in result.message


def test_scope_and_name() -> None:
    cluster_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "r"},
    }
    objects = [pod("web-1"), cluster_role, namespace("ns")]
    assert names(always({"scope": "Cluster"}).evaluate(objects)) == ["r", "ns"]
    assert names(always({"scope": "Namespaced"}).evaluate(objects)) == ["web-1"]
    assert names(always({"name": "web-*"}).evaluate(objects)) == ["web-1"]


# ---- inventory -------------------------------------------------------------------------------------------------

UNIQUE = """
package unique

violation[{"msg": msg}] {
  port := input.review.object.spec.port
  other := data.inventory.namespace[_][_]["Service"][name]
  other.spec.port == port
  name != input.review.object.metadata.name
  msg := sprintf("port %v is taken by %v", [port, name])
}
"""


def test_data_inventory_for_uniqueness() -> None:
    def service(name: str, port: int) -> Doc:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "a"},
            "spec": {"port": port},
        }

    policies = PolicySet.from_documents([template("Unique", UNIQUE), constraint("Unique")])
    inventory = Inventory([service("old", 80), service("other", 81)])
    [v] = policies.evaluate([service("new", 80)], inventory=inventory)
    assert v.message == "port 80 is taken by old"
    assert policies.evaluate([service("new", 82)], inventory=inventory) == []
    assert policies.evaluate([service("new", 80)]) == []  # a fresh, empty inventory on the next call


# ---- ValidatingAdmissionPolicy ---------------------------------------------------------------------------------


def vap(name: str = "replicas", *, param_kind: bool = False, validations: list[Doc] | None = None) -> Doc:
    spec: Doc = {
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": ["apps"],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["deployments"],
                }
            ]
        },
        "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
        "validations": validations
        or [
            {
                "expression": "variables.replicas <= (params == null ? 5 : int(params.data.max))",
                "messageExpression": "'replicas ' + string(variables.replicas) + ' is too many'",
            }
        ],
    }
    if param_kind:
        spec["paramKind"] = {"apiVersion": "v1", "kind": "ConfigMap"}
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }


def binding(actions: list[str], *, param_ref: Doc | None = None, match: Doc | None = None) -> Doc:
    spec: Doc = {"policyName": "replicas", "validationActions": actions}
    if param_ref is not None:
        spec["paramRef"] = param_ref
    if match is not None:
        spec["matchResources"] = match
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "replicas-binding"},
        "spec": spec,
    }


def deployment(name: str, replicas: int, ns: str = "shop") -> Doc:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas},
    }


@pytest.mark.parametrize(
    ("actions", "action"), [(["Deny"], "deny"), (["Warn", "Audit"], "warn"), (["Audit"], "dryrun")]
)
def test_vap_validation_actions(actions: list[str], action: str) -> None:
    policies = PolicySet.from_documents([vap(), binding(actions)])
    [v] = policies.evaluate([deployment("big", 9), deployment("small", 2), pod()])
    assert (v.object_name, v.action, v.message) == ("big", action, "replicas 9 is too many")
    assert v.template == "ValidatingAdmissionPolicy/replicas"
    assert v.policy == "replicas-binding"


def test_vap_params_from_the_inventory() -> None:
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "limits", "namespace": "shop"},
        "data": {"max": "10"},
    }
    policies = PolicySet.from_documents(
        [vap(param_kind=True), binding(["Deny"], param_ref={"name": "limits"})]
    )
    assert names(policies.evaluate([deployment("a", 9), deployment("b", 11)], inventory=[config])) == ["b"]
    [missing] = policies.evaluate([deployment("a", 1)])
    assert missing.blocking
    assert "no params found" in missing.message


def test_vap_missing_params_with_allow_skips() -> None:
    ref = {"name": "limits", "parameterNotFoundAction": "Allow"}
    policies = PolicySet.from_documents([vap(param_kind=True), binding(["Deny"], param_ref=ref)])
    assert policies.evaluate([deployment("a", 100)]) == []


def test_vap_binding_match_resources_narrow_the_policy() -> None:
    match = {
        "namespaceSelector": {"matchLabels": {"env": "prod"}},
        "resourceRules": [
            {"apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"], "operations": ["*"]}
        ],
    }
    policies = PolicySet.from_documents([vap(), binding(["Deny"], match=match)])
    objects = [
        namespace("shop", {"env": "prod"}),
        namespace("lab"),
        deployment("a", 9, "shop"),
        deployment("b", 9, "lab"),
    ]
    assert names(policies.evaluate(objects)) == ["a"]


def test_vap_errors_and_unknown_policy() -> None:
    policies = PolicySet.from_documents(
        [vap(validations=[{"expression": "object.spec.nothing > 1"}]), binding(["Audit"])]
    )
    [v] = policies.evaluate([deployment("a", 1)])
    assert v.kind == "error"
    assert v.blocking
    with pytest.raises(PolicyError, match="no such ValidatingAdmissionPolicy"):
        PolicySet.from_documents([binding(["Deny"])])
    with pytest.raises(PolicyError, match="needs a paramRef"):
        PolicySet.from_documents([vap(param_kind=True), binding(["Deny"])])


def test_vap_model() -> None:
    parsed = parse_policy(vap())
    assert isinstance(parsed, ValidatingAdmissionPolicy)
    with pytest.raises(ValidationError, match="Deny and Warn"):
        parse_policy(binding(["Deny", "Warn"]))


def test_resource_names() -> None:
    assert [
        resource_name(k) for k in ("Deployment", "Canary", "Ingress", "Workload", "Policy", "Gateway")
    ] == [
        "deployments",
        "canaries",
        "ingresses",
        "workloads",
        "policies",
        "gateways",
    ]


# ---- the starter library on our own kinds ----------------------------------------------------------------------


def workload(probe: bool = True, ns: str = "production") -> Doc:
    template_: Doc = {"command": ["python", "-m", "http.server", "{port}"]}
    if probe:
        template_["readinessProbe"] = {"path": "/readyz"}
    return {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {"replicas": 2, "template": template_},
    }


def good_canary(ns: str = "production") -> Doc:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": ns},
        "spec": {
            "targetRef": {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1h",
                "threshold": 2,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": [
                    {"name": "request-success-rate", "interval": "1m", "thresholdRange": {"min": 99}},
                    {"name": "request-duration", "interval": "1m", "thresholdRange": {"max": 1000}},
                ],
            },
        },
    }


def with_analysis(**changes: Any) -> Doc:
    doc = good_canary()
    analysis = doc["spec"]["analysis"]
    for key, value in changes.items():
        if value is None:
            analysis.pop(key, None)
        else:
            analysis[key] = value
    return doc


@pytest.fixture(scope="module")
def starter() -> PolicySet:
    return starter_policies()


def test_starter_library_loads_with_both_engines(starter: PolicySet) -> None:
    engines = {kind: t.engine for kind, t in starter.templates.items()}
    assert engines == {
        "RheostatWorkloadReadinessProbe": "CEL",
        "RheostatCanaryAnalysis": "Rego",
        "RheostatCanaryMaxWeight": "Rego",
        "RheostatCanarySlowRamp": "Rego",
    }
    assert len(starter) == 4
    assert all(is_policy(d) for d in starter_documents())


def test_good_objects_are_our_kinds_and_pass(starter: PolicySet) -> None:
    objects = [workload(), good_canary()]
    for obj in objects:
        parse_object(copy.deepcopy(obj))  # the same dicts load as Rheostat kinds
    assert starter.evaluate(objects) == []


def test_workload_without_readiness_probe(starter: PolicySet) -> None:
    [v] = starter.evaluate([workload(probe=False, ns="dev")])  # every namespace
    assert v.policy == "workload-must-have-readiness-probe"
    assert "no spec.template.readinessProbe" in v.message
    parse_object(workload(probe=False))  # valid for the model, refused by policy


def by_policy(results: list[Violation]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in results:
        out.setdefault(r.policy, []).append(r.message)
    return out


def test_production_canary_needs_metrics_and_threshold(starter: PolicySet) -> None:
    found = by_policy(starter.evaluate([with_analysis(metrics=[], threshold=None)]))
    assert sorted(found["production-canary-must-have-analysis"]) == [
        "Canary <podinfo> has no analysis.metrics: nothing would judge the new version",
        "Canary <podinfo> sets no analysis.threshold (failed checks before rollback)",
    ]
    unbounded = with_analysis(metrics=[{"name": "request-success-rate", "interval": "1m"}])
    found = by_policy(starter.evaluate([unbounded]))
    assert found["production-canary-must-have-analysis"] == [
        "Canary <podinfo> metric <request-success-rate> has no thresholdRange (min or max) or threshold"
    ]


@pytest.mark.parametrize(
    ("changes", "reach"),
    [
        ({"maxWeight": 80}, 80),
        ({"maxWeight": None}, 100),
        ({"maxWeight": None, "stepWeight": None, "stepWeights": [5, 10, 60]}, 60),
    ],
)
def test_production_canary_max_weight_50(starter: PolicySet, changes: Doc, reach: int) -> None:
    [v] = by_policy(starter.evaluate([with_analysis(**changes)]))["production-canary-max-weight-50"]
    assert v.startswith(f"Canary <podinfo> can reach weight {reach}; at most 50")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"stepWeight": 20}, "steps weight by 20; at most 10 per step"),
        ({"stepWeight": None, "stepWeights": [10, 20, 35]}, "stepWeights[2] adds 15; at most 10 per step"),
        ({"interval": "30m"}, "analysis.interval is 30m; steps must be at least 1h apart"),
        ({"interval": None}, "analysis.interval is 60s; steps must be at least 1h apart"),
        (
            {"metrics": [{"name": "request-duration", "interval": "1m", "thresholdRange": {"max": 2000}}]},
            "has no request-duration metric with thresholdRange.max at most 1000 ms",
        ),
        ({"stepWeight": None, "iterations": 10}, "does not ramp by weight"),
    ],
)
def test_production_canary_slow_ramp(starter: PolicySet, changes: Doc, message: str) -> None:
    found = by_policy(starter.evaluate([with_analysis(**changes)]))
    assert any(message in m for m in found["production-canary-ramps-10-per-hour-under-1s"]), found


def test_canary_policies_apply_to_production_namespaces_only(starter: PolicySet) -> None:
    loose = with_analysis(metrics=[], threshold=None, maxWeight=None, stepWeight=30, interval="1m")
    assert len(starter.evaluate([loose])) >= 4
    for ns in ("staging", "default"):
        loose["metadata"]["namespace"] = ns
        assert starter.evaluate([loose]) == []
    for ns in ("prod", "prod-eu", "shop-production"):
        loose["metadata"]["namespace"] = ns
        assert starter.evaluate([loose]) != []


def test_a_bad_interval_fails_closed(starter: PolicySet) -> None:
    results = starter.evaluate([with_analysis(interval="soon")])
    assert [r.kind for r in results] == ["error"]
    assert blocking(results) == results
