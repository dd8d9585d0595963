"""What `rheostat install` puts in a cluster, built in code: the Namespace, the CRDs, the service account and
its least-privilege RBAC, the controller's Deployment, its Services, the admission webhook's configuration and
a PodDisruptionBudget. `objects` is pure (the `--dry-run` YAML); `install` and `uninstall` talk to the cluster
through the `KubeAPI` port.

Every object carries `app.kubernetes.io/managed-by: rheostat-install`: uninstall deletes only what has it,
so a user's object of the same name, and everything users made (Canaries...), stays.
"""

from __future__ import annotations

import base64
import copy
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from rheostat import __version__
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, KubeAPI, KubeError, Obj
from rheostat.plugins.kube.crds import CrdKind, crd, crd_kinds
from rheostat.plugins.kube.rbac import CLUSTER_RULES, NAMESPACE_RULES, WEBHOOK

NAME = "rheostat"
MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY = "rheostat-install"
NAMESPACE = "rheostat-system"
IMAGE = f"ghcr.io/rheostat/rheostat:{__version__}"  # the Dockerfile at the repository's root builds it
UID = 10001  # the Dockerfile's user
API_PORT = 8470
OFREP_PORT = 8016  # flagd's OFREP port, where OpenFeature providers look by default
# WEBHOOK (rbac.py): the name of the webhook's Service and ValidatingWebhookConfiguration
WEBHOOK_PORT = 9443
WEBHOOK_PATH = "/admission/validate"
WEBHOOK_TLS = "rheostat-webhook-tls"  # Secret: tls.crt, tls.key, ca.crt
FLAGS_TOKEN = "rheostat-flags-token"  # Secret with `token`: the bearer token OFREP clients send
API_TOKEN = "rheostat-api-token"  # Secret with `token`: the API token, the same for both replicas
SELECTOR = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": "controller"}


@dataclass(frozen=True)
class Options:
    namespace: str = NAMESPACE
    image: str = IMAGE
    replicas: int = 2
    ca_bundle: str = ""  # base64 PEM; empty: the controller fills it in when it starts
    metrics_server: str | None = None  # `rheostat run --metrics-server`
    mesh_provider: str | None = None  # `rheostat run --mesh-provider`


def labels(component: str = "") -> dict[str, str]:
    out = {
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/version": __version__,
        MANAGED_BY_KEY: MANAGED_BY,
    }
    if component:
        out["app.kubernetes.io/component"] = component
    return out


def _meta(name: str, namespace: str | None = None, component: str = "") -> Obj:
    meta: Obj = {"name": name, "labels": labels(component)}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def _obj(kind: Kind, name: str, namespace: str | None = None, component: str = "", **body: Any) -> Obj:
    return {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": _meta(name, namespace, component),
        **body,
    }


def crd_objects() -> list[tuple[CrdKind, Obj]]:
    return [(k, crd(k, labels("crd"))) for k in crd_kinds()]


def rbac(opts: Options) -> list[Obj]:
    ns = opts.namespace
    subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": ns}]
    return [
        _obj(kinds.SERVICE_ACCOUNT, NAME, ns, "controller"),
        _obj(kinds.CLUSTER_ROLE, NAME, rules=[r.to_k8s() for r in CLUSTER_RULES]),
        _obj(
            kinds.CLUSTER_ROLE_BINDING,
            NAME,
            roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            subjects=subject,
        ),
        _obj(kinds.ROLE, NAME, ns, rules=[r.to_k8s() for r in NAMESPACE_RULES]),
        _obj(
            kinds.ROLE_BINDING,
            NAME,
            ns,
            roleRef={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            subjects=subject,
        ),
    ]


def _container(opts: Options) -> Obj:
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    return {
        "name": "controller",
        "image": opts.image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            "run",
            "--listen",
            f"0.0.0.0:{API_PORT}",
            "--data-dir",
            "/data",
            "--log-format",
            "json",
            "--webhook",
            "--webhook-host",
            "0.0.0.0",
            *(["--metrics-server", opts.metrics_server] if opts.metrics_server else []),
            *(["--mesh-provider", opts.mesh_provider] if opts.mesh_provider else []),
        ],
        "env": [
            {"name": "HOME", "value": "/tmp"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "RHEOSTAT_FLAGS_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": FLAGS_TOKEN, "key": "token", "optional": True}},
            },
        ],
        "ports": [
            {"name": "http", "containerPort": API_PORT, "protocol": "TCP"},
            {"name": "webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {**probe, "initialDelaySeconds": 10, "failureThreshold": 3},
        "readinessProbe": {**probe, "failureThreshold": 1},
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "tmp", "mountPath": "/tmp"},
            # The data dir's token file is the Secret's: both replicas answer to the same API token.
            {"name": "api-token", "mountPath": "/data/token", "subPath": "token", "readOnly": True},
            {"name": "webhook-tls", "mountPath": "/etc/rheostat/webhook-tls", "readOnly": True},
        ],
    }


def deployment(opts: Options) -> Obj:
    return _obj(
        kinds.DEPLOYMENT,
        NAME,
        opts.namespace,
        "controller",
        spec={
            "replicas": opts.replicas,
            "selector": {"matchLabels": dict(SELECTOR)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels("controller")},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "labelSelector": {"matchLabels": dict(SELECTOR)},
                                        "topologyKey": "kubernetes.io/hostname",
                                    },
                                }
                            ]
                        }
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [_container(opts)],
                    "volumes": [
                        {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
                        {"name": "api-token", "secret": {"secretName": API_TOKEN, "defaultMode": 0o440}},
                        {"name": "webhook-tls", "secret": {"secretName": WEBHOOK_TLS, "optional": True}},
                    ],
                },
            },
        },
    )


def services(opts: Options) -> list[Obj]:
    def service(name: str, port: int, target: str, component: str) -> Obj:
        return _obj(
            kinds.SERVICE,
            name,
            opts.namespace,
            component,
            spec={
                "type": "ClusterIP",
                "selector": dict(SELECTOR),
                "ports": [
                    {
                        "name": target if port != 443 else "https",
                        "port": port,
                        "targetPort": target,
                        "protocol": "TCP",
                    }
                ],
            },
        )

    return [
        service(NAME, 80, "http", "api"),
        service(f"{NAME}-ofrep", OFREP_PORT, "http", "ofrep"),
        service(WEBHOOK, 443, "webhook", "webhook"),
    ]


def webhook_configuration(opts: Options) -> Obj:
    client: Obj = {
        "service": {"name": WEBHOOK, "namespace": opts.namespace, "path": WEBHOOK_PATH, "port": 443}
    }
    if opts.ca_bundle:
        client["caBundle"] = opts.ca_bundle
    # kube-node-lease: the kubelets' heartbeats must never wait for (or fail on) the webhook
    excluded = sorted({opts.namespace, "kube-system", "kube-node-lease"})
    return _obj(
        kinds.VALIDATING_WEBHOOK_CONFIGURATION,
        WEBHOOK,
        webhooks=[
            {
                "name": "validate.rheostat.dev",
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 5,
                "clientConfig": client,
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded}
                    ]
                },
                # Events and Leases are written all the time by everyone and hold nothing a policy checks;
                # the kubelets' own writes (Nodes, mirror Pods) go through even while the controller is down.
                "matchConditions": [
                    {
                        "name": "not-events-nor-leases",
                        "expression": "!(request.resource.resource in ['events', 'leases'])",
                    },
                    {
                        "name": "not-kubelets",
                        "expression": "!request.userInfo.username.startsWith('system:node:')",
                    },
                ],
                "rules": [
                    {
                        "apiGroups": ["*"],
                        "apiVersions": ["*"],
                        "resources": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "*",
                    }
                ],
            }
        ],
    )


def pdb(opts: Options) -> Obj:
    return _obj(
        kinds.PDB,
        NAME,
        opts.namespace,
        "controller",
        spec={"minAvailable": 1, "selector": {"matchLabels": dict(SELECTOR)}},
    )


def objects(opts: Options) -> list[Obj]:
    """Everything install writes, in the order it applies them: what others need comes first, the webhook
    (which fails closed) last, once its Service and Deployment exist."""
    return [
        _obj(kinds.NAMESPACE, opts.namespace, component="controller"),
        *(obj for _, obj in crd_objects()),
        *rbac(opts),
        *services(opts),
        deployment(opts),
        pdb(opts),
        webhook_configuration(opts),
    ]


def api_token_secret(opts: Options) -> Obj:
    """The API token, made once by install and never printed (so not in `objects`, nor in --dry-run)."""
    token = base64.b64encode(secrets.token_urlsafe(32).encode()).decode()
    return _obj(kinds.SECRET, API_TOKEN, opts.namespace, "controller", type="Opaque", data={"token": token})


# -- against a cluster ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str
    name: str
    namespace: str
    action: str  # created, configured, unchanged, kept (not ours), deleted, absent
    note: str = ""

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.lower()}/{where}{self.name} {self.action}" + (
            f" ({self.note})" if self.note else ""
        )


def _kind(obj: Obj) -> Kind:
    return kinds.kind_of(obj["apiVersion"], obj["kind"])


def _ours(obj: Obj | None) -> bool:
    return obj is not None and (obj["metadata"].get("labels") or {}).get(MANAGED_BY_KEY) == MANAGED_BY


def _versions(crd_obj: Obj) -> list[tuple[str, Any]]:
    return [(v.get("name"), v.get("schema")) for v in crd_obj.get("spec", {}).get("versions") or []]


async def _ca_bundle(api: KubeAPI, namespace: str) -> str:
    """`ca.crt` of the webhook's Secret when it is there; else the one the controller wrote on the live
    configuration (re-applying without it would take it away); else empty, for the controller to fill."""
    secret = await api.get(kinds.SECRET, namespace, WEBHOOK_TLS)
    if secret is not None and (ca := (secret.get("data") or {}).get("ca.crt")):
        return str(ca)
    live = await api.get(kinds.VALIDATING_WEBHOOK_CONFIGURATION, "", WEBHOOK)
    for hook in (live or {}).get("webhooks") or []:
        if bundle := (hook.get("clientConfig") or {}).get("caBundle"):
            return str(bundle)
    return ""


async def _apply(api: KubeAPI, obj: Obj) -> Outcome:
    kind, meta = _kind(obj), obj["metadata"]
    ns = meta.get("namespace", "")
    before = await api.get(kind, ns, meta["name"])
    after = await api.apply(copy.deepcopy(obj))
    if before is None:
        action = "created"
    elif before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion"):
        action = "unchanged"
    else:
        action = "configured"
    return Outcome(kind.kind, meta["name"], ns, action)


async def _token(api: KubeAPI, opts: Options) -> Outcome:
    """The API token's Secret when there is none; an existing one is kept (a new token would lock clients out)."""
    if await api.get(kinds.SECRET, opts.namespace, API_TOKEN) is not None:
        return Outcome(kinds.SECRET.kind, API_TOKEN, opts.namespace, "kept", "the API token stays")
    return await _apply(api, api_token_secret(opts))


class InstallError(Exception):
    """The API server refused an object: which one, why, and what was done before it."""


def _stopped(verb: str, obj: Obj, exc: KubeError, done: list[Outcome]) -> InstallError:
    meta = obj["metadata"]
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    changed = sum(o.action in ("created", "configured", "deleted") for o in done)
    return InstallError(
        f"{obj['kind']} {where}{meta['name']}: {exc}. {verb} stopped there, after {changed} change(s) listed "
        f"above; it is safe to run again once this is fixed"
    )


async def _step(
    verb: str,
    obj: Obj,
    run: Callable[[], Awaitable[Outcome]],
    done: list[Outcome],
    say: Callable[[Outcome], None],
) -> None:
    try:
        outcome = await run()
    except KubeError as exc:
        raise _stopped(verb, obj, exc, done) from exc
    done.append(outcome)
    say(outcome)


async def _install_one(api: KubeAPI, obj: Obj, foreign: dict[str, CrdKind]) -> Outcome:
    kind, name = _kind(obj), obj["metadata"]["name"]
    if kind == kinds.NAMESPACE or (kind == kinds.CRD and name in foreign):
        live = await api.get(kind, "", name)
        if live is not None and not _ours(live):
            note = f"{foreign[name].owner}'s, left as it is" if name in foreign else "not made by install"
            return Outcome(kind.kind, name, "", "kept", note)
    return await _apply(api, obj)


async def install(
    api: KubeAPI, opts: Options, say: Callable[[Outcome], None] = lambda _: None
) -> list[Outcome]:
    """Server-side apply of every object (field manager `rheostat`). A Namespace or a CRD of Flagger's,
    Flux's or OpenFeature's that exists and is not ours is left as it is. InstallError names the object the
    API server refused; what was applied before it stays (running install again finishes the job)."""
    opts = replace(opts, ca_bundle=opts.ca_bundle or await _ca_bundle(api, opts.namespace))
    foreign = {obj["metadata"]["name"]: k for k, obj in crd_objects() if not k.own}
    done: list[Outcome] = []
    for obj in objects(opts):
        if obj["kind"] == "ServiceAccount":  # the token after the Namespace, before the pods
            await _step("install", api_token_secret(opts), partial(_token, api, opts), done, say)
        await _step("install", obj, partial(_install_one, api, obj, foreign), done, say)
    return done


async def _remove_one(api: KubeAPI, obj: Obj, foreign: dict[str, str]) -> Outcome:
    kind, meta = _kind(obj), obj["metadata"]
    ns = meta.get("namespace", "")
    live = await api.get(kind, ns, meta["name"])
    if live is None:
        return Outcome(kind.kind, meta["name"], ns, "absent")
    if not _ours(live):
        return Outcome(kind.kind, meta["name"], ns, "kept", "not made by install")
    if kind == kinds.CRD and meta["name"] in foreign and _versions(live) != _versions(obj):
        # Flagger's, Flux's or OpenFeature's own CRD applied over ours keeps our labels: theirs now.
        return Outcome(kind.kind, meta["name"], ns, "kept", f"{foreign[meta['name']]}'s schema now")
    await api.delete(kind, ns, meta["name"])
    return Outcome(kind.kind, meta["name"], ns, "deleted")


async def uninstall(
    api: KubeAPI, opts: Options, *, crds: bool = False, say: Callable[[Outcome], None] = lambda _: None
) -> list[Outcome]:
    """Delete what install made (the objects with its label), the webhook first so that nothing is refused
    while the rest goes. CRDs stay unless `crds`: deleting a CRD deletes every object of its kind."""
    foreign = {obj["metadata"]["name"]: k.owner for k, obj in crd_objects() if not k.own}
    made = objects(opts)
    made.insert(made.index(next(o for o in made if o["kind"] == "ServiceAccount")), api_token_secret(opts))
    done: list[Outcome] = []
    for obj in reversed(made):
        if obj["kind"] == "CustomResourceDefinition" and not crds:
            continue
        await _step("uninstall", obj, partial(_remove_one, api, obj, foreign), done, say)
    return done
