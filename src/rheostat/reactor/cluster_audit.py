"""The audit against a cluster: the live objects of the kinds the policies match, listed through plugins/kube.

Gatekeeper's audit lists every kind the constraints match through discovery; the port has no discovery, so
the kinds audited are the common workload, networking and policy kinds below (and Rheostat's own). A policy on
another kind is enforced at admission but not audited. Secrets are never listed: their data would be held in
memory for nothing a policy usually checks.
"""

from __future__ import annotations

import logging
from typing import Any

from rheostat.model.policy import Constraint, MatchResources
from rheostat.plugins.kube.api import Kind, KubeAPI, KubeError, NotInstalled, Obj
from rheostat.plugins.kube.kinds import (
    CANARY,
    CONFIGMAP,
    DAEMONSET,
    DEPLOYMENT,
    HPA,
    INGRESS,
    NAMESPACE,
    SERVICE,
)
from rheostat.policy import PolicySet
from rheostat.policy.match import resource_name

log = logging.getLogger(__name__)

AUDITED = (
    NAMESPACE,
    Kind("v1", "Pod", "pods"),
    SERVICE,
    CONFIGMAP,
    Kind("v1", "ServiceAccount", "serviceaccounts"),
    DEPLOYMENT,
    DAEMONSET,
    Kind("apps/v1", "StatefulSet", "statefulsets"),
    Kind("apps/v1", "ReplicaSet", "replicasets"),
    Kind("batch/v1", "Job", "jobs"),
    Kind("batch/v1", "CronJob", "cronjobs"),
    INGRESS,
    Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    HPA,
    CANARY,
)


def _constraint_wants(constraint: Constraint, kind: Kind) -> bool:
    selectors = constraint.spec.match.kinds
    if not selectors:
        return True
    return any(
        (not s.apiGroups or "*" in s.apiGroups or kind.group in s.apiGroups)
        and (not s.kinds or "*" in s.kinds or kind.kind in s.kinds)
        for s in selectors
    )


def _rules_want(match: MatchResources, kind: Kind) -> bool:
    plural = resource_name(kind.kind)
    return any(
        ("*" in r.apiGroups or kind.group in r.apiGroups)
        and ("*" in r.apiVersions or kind.version in r.apiVersions)
        and ("*" in r.resources or plural in r.resources)
        for r in match.resourceRules
    )


def kinds_to_audit(policies: PolicySet) -> list[Kind]:
    """The audited kinds some constraint or admission policy may match; Namespaces always (namespaceSelector)."""
    wanted = [NAMESPACE]
    for kind in AUDITED[1:]:
        if any(_constraint_wants(c.constraint, kind) for c in policies.constraints) or any(
            _rules_want(b.policy.policy.spec.matchConstraints, kind) for b in policies.bindings
        ):
            wanted.append(kind)
    return wanted


def _lean(obj: Obj, kind: Kind) -> dict[str, Any]:
    """The object as a policy sees it: with apiVersion and kind (a list leaves them out), no managedFields."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    return {**obj, "apiVersion": kind.api_version, "kind": kind.kind, "metadata": meta}


def kinds_for(docs: list[dict[str, Any]]) -> list[Kind]:
    """kinds_to_audit of policy documents (compiled here: PolicyError when one is unusable); none without policies."""
    policies = PolicySet.from_documents(docs)
    return kinds_to_audit(policies) if len(policies) else []


async def live_objects(kube: KubeAPI, kinds: list[Kind], namespace: str | None) -> list[dict[str, Any]]:
    """Every object of `kinds` (in `namespace`, or all); a kind not served or not allowed is skipped with a
    warning, the rest is still audited."""
    out: list[dict[str, Any]] = []
    for kind in kinds:
        try:
            items = await kube.list(kind, None if not kind.namespaced else namespace)
        except NotInstalled:
            continue
        except KubeError as exc:
            log.warning("policy audit: cannot list %s: %s", kind.plural, exc)
            continue
        out += [_lean(o, kind) for o in items]
    return out
