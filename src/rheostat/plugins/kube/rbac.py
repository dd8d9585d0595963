"""The controller's RBAC: every rule, and why it is needed (docs/kubernetes.md#rbac is `rbac_table()`).

A test runs a rollout and a release and checks that every call the controller makes is allowed here, and that
every kind of plugins/kube/kinds.py has a rule: a new kind without RBAC fails it.
"""

from __future__ import annotations

from dataclasses import dataclass

from rheostat.plugins.kube.api import Obj

WEBHOOK = "rheostat-webhook"  # the ValidatingWebhookConfiguration whose caBundle the controller fills

FLUX_KINDS = (
    (
        "source.toolkit.fluxcd.io",
        ("gitrepositories", "ocirepositories", "helmrepositories", "helmcharts", "buckets"),
    ),
    ("kustomize.toolkit.fluxcd.io", ("kustomizations",)),
    ("helm.toolkit.fluxcd.io", ("helmreleases",)),
    ("notification.toolkit.fluxcd.io", ("receivers",)),
)

READ = ("get", "list", "watch")
WRITE = ("get", "list", "watch", "create", "patch", "update", "delete")  # apply is a PATCH that may create


@dataclass(frozen=True)
class Rule:
    """One RBAC rule and why the controller needs it (docs/kubernetes.md#install shows this table)."""

    group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str
    names: tuple[str, ...] = ()  # resourceNames: only these objects

    def to_k8s(self) -> Obj:
        out: Obj = {"apiGroups": [self.group], "resources": list(self.resources), "verbs": list(self.verbs)}
        if self.names:
            out["resourceNames"] = list(self.names)
        return out

    def allows(self, group: str, resource: str, verb: str) -> bool:
        return group == self.group and resource in self.resources and verb in self.verbs


CLUSTER_RULES: tuple[Rule, ...] = (
    Rule(
        "flagger.app",
        ("canaries", "metrictemplates", "alertproviders"),
        READ,
        "watch the Canaries, "
        "MetricTemplates and AlertProviders (one LIST, then WATCH); GET after a broken watch",
    ),
    Rule("flagger.app", ("canaries",), ("patch",), "the `rheostat.dev/manual` annotation (manual requests)"),
    Rule(
        "flagger.app", ("canaries/status",), ("get", "patch"), "write each Canary's status, Flagger's fields"
    ),
    Rule("", ("events",), ("create",), "Events on the Canaries, as `kubectl describe` shows them"),
    Rule(
        "apps",
        ("deployments", "daemonsets"),
        WRITE,
        "read the target; apply the `-primary` "
        "(a server-side apply that creates checks `create` too); scale the target (PUT); delete the primary "
        "with `revertOnDeletion`",
    ),
    Rule(
        "",
        ("services",),
        WRITE,
        "apply the apex, `-primary` and `-canary` Services; switch a Service's "
        "selector (`kubernetes` provider, PUT); delete them with `revertOnDeletion`",
    ),
    Rule(
        "",
        ("configmaps", "secrets"),
        ("get", "list", "watch", "create", "patch", "delete"),
        "read the "
        "configs a target mounts and copy them as `-primary`; read the Secrets a MetricTemplate or "
        "AlertProvider names (kept in memory); the webhook's certificate in `rheostat-webhook-tls`",
    ),
    Rule(
        "autoscaling",
        ("horizontalpodautoscalers",),
        ("get", "list", "watch", "create", "patch", "delete"),
        "read `autoscalerRef`; apply and delete its `-primary` copy",
    ),
    Rule(
        "networking.istio.io",
        ("virtualservices", "destinationrules"),
        WRITE,
        "`istio`: apply the routes, "
        "take over and give back an existing one (PUT), delete its own when the Canary goes",
    ),
    Rule("gateway.networking.k8s.io", ("httproutes",), WRITE, "`gatewayapi`: the same for HTTPRoutes"),
    Rule("split.smi-spec.io", ("trafficsplits",), WRITE, "`smi:*`, `linkerd`: the same for TrafficSplits"),
    Rule(
        "networking.k8s.io",
        ("ingresses",),
        WRITE,
        "`nginx`: read the `ingressRef`, apply, change and delete its canary copy",
    ),
    Rule(
        "metrics.keptn.sh", ("keptnmetrics",), ("get",), "`keptn` MetricTemplates read a KeptnMetric's value"
    ),
    Rule(
        "metrics.keptn.sh",
        ("analyses",),
        ("get", "create", "patch", "delete"),
        "`keptn` MetricTemplates create an Analysis, read its verdict, delete it",
    ),
    Rule("", ("namespaces",), READ, "the policy engine matches `namespaceSelector` on a namespace's labels"),
    Rule("", ("pods", "serviceaccounts"), ("list",), "the policy audit checks the live objects"),
    Rule("apps", ("statefulsets", "replicasets"), ("list",), "the policy audit checks the live objects"),
    Rule("batch", ("jobs", "cronjobs"), ("list",), "the policy audit checks the live objects"),
    Rule("policy", ("poddisruptionbudgets",), ("list",), "the policy audit checks the live objects"),
    Rule("rheostat.dev", ("workloads", "flagsets"), READ, "Rheostat's own kinds, read from the cluster"),
    Rule("rheostat.dev", ("workloads/status", "flagsets/status"), ("get", "patch"), "their status"),
    Rule("core.openfeature.dev", ("featureflags",), READ, "FeatureFlags served over OFREP"),
    *(
        Rule(group, resources, READ, "Flux's objects, shown read-only in the dashboard and CLI")
        for group, resources in FLUX_KINDS
    ),
    Rule(
        "admissionregistration.k8s.io",
        ("validatingwebhookconfigurations",),
        ("get", "patch", "update"),
        "fill in its own webhook's `caBundle` when it makes or rotates the certificate",
        (WEBHOOK,),
    ),
)
NAMESPACE_RULES: tuple[Rule, ...] = (
    Rule(
        "coordination.k8s.io",
        ("leases",),
        ("get", "create", "update", "patch"),
        "leader election: one of the two replicas leads, through a Lease in its own namespace",
    ),
)


def rbac_table() -> str:
    """The RBAC as the Markdown table of docs/kubernetes.md#rbac (a test keeps the two the same)."""
    rows = ["| resources | API group | verbs | why |", "| --- | --- | --- | --- |"]
    for where, rules in (("", CLUSTER_RULES), (" (a Role in its namespace)", NAMESPACE_RULES)):
        for r in rules:
            res = ", ".join(f"`{x}`" for x in r.resources)
            if r.names:
                res += " named " + ", ".join(f"`{n}`" for n in r.names)
            verbs = ", ".join(f"`{v}`" for v in r.verbs)
            rows.append(f"| {res}{where} | `{r.group or 'core'}` | {verbs} | {r.why} |")
    return "\n".join(rows) + "\n"
