"""Policy as code: Gatekeeper ConstraintTemplates (Rego, CEL) and ValidatingAdmissionPolicies."""
