"""Policy as code: Gatekeeper ConstraintTemplates (Rego, CEL) and ValidatingAdmissionPolicies.

policies = PolicySet.from_documents(docs)          # compiles once; PolicyError names a bad policy
results = policies.evaluate(objects, inventory=...)  # list[Violation]
if blocking(results): ...                           # deny violations and every evaluation error
"""

from rheostat.model.policy import (
    POLICY_KINDS,
    Constraint,
    ConstraintTemplate,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    is_constraint,
    is_policy,
    parse_policy,
    policy_model,
)
from rheostat.policy.engine import PolicySet
from rheostat.policy.inventory import Inventory
from rheostat.policy.starter import starter_documents, starter_policies
from rheostat.policy.violation import PolicyError, Violation, blocking

__all__ = [
    "POLICY_KINDS",
    "Constraint",
    "ConstraintTemplate",
    "Inventory",
    "PolicyError",
    "PolicySet",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "Violation",
    "blocking",
    "is_constraint",
    "is_policy",
    "parse_policy",
    "policy_model",
    "starter_documents",
    "starter_policies",
]
