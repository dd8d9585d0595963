"""What Rheostat makes of each Flux kind, version and field: read, read with a warning, or refused by name.

Flux users commit every API version Flux ever served; a version that Flux still converts loads here with a
warning naming its replacement. A kind or field Rheostat does not implement is refused with what to do
instead, so the message never reads like a typo.
"""

from __future__ import annotations

from typing import Any

SOURCE = "source.toolkit.fluxcd.io"
KUSTOMIZE = "kustomize.toolkit.fluxcd.io"
HELM = "helm.toolkit.fluxcd.io"
NOTIFICATION = "notification.toolkit.fluxcd.io"
IMAGE = "image.toolkit.fluxcd.io"
KUSTOMIZE_FILE_GROUP = "kustomize.config.k8s.io"  # kustomize's own kustomization.yaml, not an object

# (group, kind) -> (current version, deprecated versions that still load)
VERSIONS: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {
    (SOURCE, "GitRepository"): ("v1", ("v1beta2", "v1beta1")),
    (KUSTOMIZE, "Kustomization"): ("v1", ("v1beta2", "v1beta1")),
    (NOTIFICATION, "Receiver"): ("v1", ("v1beta2", "v1beta1")),
    (NOTIFICATION, "Provider"): ("v1beta3", ("v1beta2",)),
    (NOTIFICATION, "Alert"): ("v1beta3", ("v1beta2",)),
    (HELM, "HelmRelease"): ("v2", ("v2beta2", "v2beta1")),
    (SOURCE, "HelmRepository"): ("v1", ("v1beta2", "v1beta1")),
    (SOURCE, "HelmChart"): ("v1", ("v1beta2", "v1beta1")),
    (SOURCE, "OCIRepository"): ("v1", ("v1beta2",)),
    (SOURCE, "Bucket"): ("v1", ("v1beta2", "v1beta1")),
}

_SOURCE_TODO = "use a GitRepository, an OCIRepository or a Bucket (source.toolkit.fluxcd.io/v1)"
_IMAGE_TODO = "image automation is not run; update image tags with a commit"

# (group, kind) -> (the versions Flux serves, what to do instead)
NOT_YET: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    (SOURCE, "ExternalArtifact"): (("v1",), _SOURCE_TODO),
    ("source.extensions.fluxcd.io", "ArtifactGenerator"): (
        ("v1beta1",),
        "point each Kustomization at its folder of the GitRepository instead (spec.path)",
    ),
    (IMAGE, "ImageRepository"): (("v1", "v1beta2", "v1beta1"), _IMAGE_TODO),
    (IMAGE, "ImagePolicy"): (("v1", "v1beta2", "v1beta1"), _IMAGE_TODO),
    (IMAGE, "ImageUpdateAutomation"): (("v1", "v1beta2", "v1beta1"), _IMAGE_TODO),
}

# kind -> dotted field path -> what to do instead; a field Flux has that Rheostat does not run
NOT_SUPPORTED_FIELDS: dict[str, dict[str, str]] = {
    "Kustomization": {
        "spec.serviceAccountName": "Rheostat has no Kubernetes RBAC to impersonate, so tenant isolation "
        "would not hold; remove the field",
        "spec.kubeConfig": "Rheostat applies to its own store, not to a remote cluster; remove the field",
        "spec.postBuild.substituteStrategy": "remove it; ${var} is substituted where postBuild is set",
        "spec.healthCheckExprs": "use healthChecks or wait: true",
        "spec.deletionPolicy": "remove it; pruned objects are deleted (Flux's MirrorPrune)",
        "spec.ignore": "remove it; every field that drifts is set back",
    },
    "GitRepository": {
        "spec.include": "list the other repository as its own GitRepository and Kustomization",
        "spec.recurseSubmodules": "commit the submodule's manifests or give it its own GitRepository",
        "spec.sparseCheckout": "remove it; use spec.ignore to leave folders out",
        "spec.proxySecretRef": "remove it; set HTTPS_PROXY for `rheostat run`",
        "spec.serviceAccountName": "put the credentials in spec.secretRef",
        "spec.accessFrom": "remove it; every namespace may refer to the source",
    },
    "Provider": {
        "spec.certSecretRef": "remove it; put the CA in the system's trust store",
        "spec.proxySecretRef": "use spec.proxy",
        "spec.commitStatusExpr": "remove it; commit statuses are not sent",
        "spec.serviceAccountName": "put the credentials in spec.secretRef",
    },
    "HelmRepository": {
        "spec.accessFrom": "remove it; every namespace may refer to the source",
        "spec.insecure": "it is for OCI repositories, which are not supported yet; use an https:// or http:// URL",
    },
    "HelmChart": {
        "spec.verify": "chart signatures are verified for OCI charts only, which are not supported yet; remove it",
        "spec.accessFrom": "remove it; every namespace may refer to the source",
    },
    "HelmRelease": {
        "spec.serviceAccountName": "Rheostat has no Kubernetes RBAC to impersonate, so tenant isolation "
        "would not hold; remove the field",
        "spec.kubeConfig": "Rheostat applies to its own store, not to a remote cluster; remove the field",
        "spec.persistentClient": "remove it; there is no Kubernetes client to keep",
        "spec.chart.spec.verify": "chart signatures are verified for OCI charts only, which are not supported "
        "yet; remove it",
        "spec.postRenderers.kustomize.patchesJson6902": "write the JSON 6902 patch in postRenderers.kustomize"
        ".patches (a patch with a target)",
        "spec.install.disableSchemaValidation": "Helm's SDK checks values.schema.json on every render; fix "
        "the values or the chart's schema",
        "spec.upgrade.disableSchemaValidation": "Helm's SDK checks values.schema.json on every render; fix "
        "the values or the chart's schema",
        "spec.driftDetection.ignore": "remove it; drift is found and repaired on whole objects",
    },
    "OCIRepository": {
        "spec.serviceAccountName": "put the registry credentials in spec.secretRef (a docker-config Secret)",
        "spec.proxySecretRef": "remove it; set HTTPS_PROXY for `rheostat run`",
    },
    "Bucket": {
        "spec.sts": "put static credentials (accesskey, secretkey) in spec.secretRef",
        "spec.serviceAccountName": "put static credentials (accesskey, secretkey) in spec.secretRef",
        "spec.proxySecretRef": "remove it; set HTTPS_PROXY for `rheostat run`",
    },
    "Receiver": {
        "spec.resourceFilter": "remove it; list the resources by name",
        "spec.interval": "remove it; it has no effect in Flux either",
    },
}

# kind -> deprecated field -> what Flux says of it (still loaded)
DEPRECATED_FIELDS: dict[str, dict[str, str]] = {
    "Kustomization": {
        "spec.patchesStrategicMerge": "deprecated; use spec.patches",
        "spec.patchesJson6902": "deprecated; use spec.patches",
        "spec.validation": "deprecated and without effect; remove it",
    },
    "GitRepository": {"spec.gitImplementation": "deprecated and without effect; remove it"},
    "HelmChart": {"spec.valuesFile": "deprecated; use spec.valuesFiles"},
}


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def is_kustomize_file(doc: Any) -> bool:
    """kustomize's own kustomization.yaml (or a Component): a build recipe, not an object to apply."""
    if not isinstance(doc, dict) or not isinstance(doc.get("apiVersion"), str):
        return False
    return group_version(doc["apiVersion"])[0] == KUSTOMIZE_FILE_GROUP


def not_yet(api_version: str, kind: str) -> str | None:
    """The refusal of a Flux kind Rheostat does not run yet, or None."""
    group, _ = group_version(api_version)
    if (entry := NOT_YET.get((group, kind))) is None:
        return None
    return f"{kind} is not supported by Rheostat yet: {entry[1]}"


def version_problem(api_version: str, kind: str) -> str | None:
    """A known Flux kind at a version Rheostat does not read (e.g. a typo like v2), or None."""
    group, version = group_version(api_version)
    entry = VERSIONS.get((group, kind))
    if entry is None or version == entry[0] or version in entry[1]:
        return None
    known = ", ".join(f"{group}/{v}" for v in (entry[0], *entry[1]))
    return f"{kind} has no apiVersion {api_version!r}; Flux serves {known}"


def current_api_version(api_version: str, kind: str) -> str | None:
    """The version a deprecated Flux apiVersion maps to (same fields here), or None when it is current."""
    group, version = group_version(api_version)
    entry = VERSIONS.get((group, kind))
    if entry is None or version not in entry[1]:
        return None
    return f"{group}/{entry[0]}"


def warnings_of(doc: dict[str, Any]) -> list[str]:
    """What loads but should change: a deprecated apiVersion, a deprecated field."""
    api_version, kind = str(doc.get("apiVersion", "")), str(doc.get("kind", ""))
    out = []
    if (current := current_api_version(api_version, kind)) is not None:
        out.append(f"apiVersion {api_version} is deprecated; use {current}")
    spec = doc.get("spec") if isinstance(doc.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    for path, why in DEPRECATED_FIELDS.get(kind, {}).items():
        if path.removeprefix("spec.") in spec:
            out.append(f"{path}: {why}")
    return out


def field_refusal(kind: str, path: str) -> str | None:
    """'<field> is not supported by Rheostat yet: <what to do>' for a Flux field Rheostat does not run."""
    todo = NOT_SUPPORTED_FIELDS.get(kind, {}).get(path)
    if todo is None:
        return None
    return f"{path.rsplit('.', 1)[-1]} is not supported by Rheostat yet: {todo}"
