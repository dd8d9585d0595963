"""The resources Rheostat reads and writes in a cluster."""

from __future__ import annotations

from rheostat.plugins.kube.api import Kind

DEPLOYMENT = Kind("apps/v1", "Deployment", "deployments", status=True)
DAEMONSET = Kind("apps/v1", "DaemonSet", "daemonsets", status=True)
SERVICE = Kind("v1", "Service", "services", status=True)
CONFIGMAP = Kind("v1", "ConfigMap", "configmaps")
SECRET = Kind("v1", "Secret", "secrets")
EVENT = Kind("v1", "Event", "events")
NAMESPACE = Kind("v1", "Namespace", "namespaces", namespaced=False, status=True)
HPA = Kind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", status=True)
INGRESS = Kind("networking.k8s.io/v1", "Ingress", "ingresses", status=True)
LEASE = Kind("coordination.k8s.io/v1", "Lease", "leases")
VALIDATING_WEBHOOK_CONFIGURATION = Kind(
    "admissionregistration.k8s.io/v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    namespaced=False,
)

CANARY = Kind("flagger.app/v1beta1", "Canary", "canaries", status=True)
METRIC_TEMPLATE = Kind("flagger.app/v1beta1", "MetricTemplate", "metrictemplates")
ALERT_PROVIDER = Kind("flagger.app/v1beta1", "AlertProvider", "alertproviders")

VIRTUAL_SERVICE = Kind("networking.istio.io/v1beta1", "VirtualService", "virtualservices")
DESTINATION_RULE = Kind("networking.istio.io/v1beta1", "DestinationRule", "destinationrules")
HTTPROUTE = Kind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes", status=True)
HTTPROUTE_V1BETA1 = Kind("gateway.networking.k8s.io/v1beta1", "HTTPRoute", "httproutes", status=True)
TRAFFIC_SPLIT_V1ALPHA2 = Kind("split.smi-spec.io/v1alpha2", "TrafficSplit", "trafficsplits")
TRAFFIC_SPLIT_V1ALPHA3 = Kind("split.smi-spec.io/v1alpha3", "TrafficSplit", "trafficsplits")
# Keptn's metrics operator: read (KeptnMetric) and created for a verdict (Analysis) by the keptn provider
KEPTN_METRIC = Kind("metrics.keptn.sh/v1beta1", "KeptnMetric", "keptnmetrics", status=True)
KEPTN_ANALYSIS = Kind("metrics.keptn.sh/v1beta1", "Analysis", "analyses", status=True)

ALL = (
    DEPLOYMENT,
    DAEMONSET,
    SERVICE,
    CONFIGMAP,
    SECRET,
    EVENT,
    NAMESPACE,
    HPA,
    INGRESS,
    LEASE,
    VALIDATING_WEBHOOK_CONFIGURATION,
    CANARY,
    METRIC_TEMPLATE,
    ALERT_PROVIDER,
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    HTTPROUTE,
    HTTPROUTE_V1BETA1,
    TRAFFIC_SPLIT_V1ALPHA2,
    TRAFFIC_SPLIT_V1ALPHA3,
    KEPTN_METRIC,
    KEPTN_ANALYSIS,
)
# What `rheostat install` writes (plugins/kube/install.py), besides Namespaces, Services and Secrets above.
SERVICE_ACCOUNT = Kind("v1", "ServiceAccount", "serviceaccounts")
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", namespaced=False)
CLUSTER_ROLE_BINDING = Kind(
    "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", namespaced=False
)
ROLE = Kind("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDING = Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
CRD = Kind(
    "apiextensions.k8s.io/v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
    status=True,
)
PDB = Kind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", status=True)
INSTALLED = (
    SERVICE_ACCOUNT,
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    ROLE,
    ROLE_BINDING,
    CRD,
    PDB,
)
_BY_TYPE = {(k.api_version, k.kind): k for k in (*ALL, *INSTALLED)}


def kind_of(api_version: str, kind: str) -> Kind:
    """The Kind of an object's apiVersion and kind; KeyError names what is known."""
    try:
        return _BY_TYPE[(api_version, kind)]
    except KeyError:
        raise KeyError(f"{kind} {api_version} is not a resource Rheostat writes") from None


# What the Kubernetes plugins read every tick: served from watch-fed caches on a cluster (plugins/kube/cache.py).
READ_CACHED = (
    DEPLOYMENT,
    DAEMONSET,
    SERVICE,
    CONFIGMAP,
    HPA,
    INGRESS,
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    HTTPROUTE,
    HTTPROUTE_V1BETA1,
    TRAFFIC_SPLIT_V1ALPHA2,
    TRAFFIC_SPLIT_V1ALPHA3,
)
