"""The kubernetes platform on the in-memory API server: the test plays the kubelet with `set_status`, and
every object the platform writes is checked against the real Kubernetes schema as it is written."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.plugins.kube.api import Forbidden, Kind, Obj
from rheostat.plugins.kube.kinds import CONFIGMAP, DAEMONSET, DEPLOYMENT, HPA, SECRET, SERVICE
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.platforms import PLATFORMS
from rheostat.plugins.platforms.base import Group, PlatformError, TargetMoved
from rheostat.plugins.platforms.kubernetes import KubernetesPlatform
from rheostat.plugins.routers.base import Upstream
from tests.kube_schemas import assert_valid

NS = "test"
TARGET = ObjectKey("test/podinfo")


class CheckedKube(MemoryKube):
    """MemoryKube that refuses, as a failed test, any write whose object does not validate."""

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        assert_valid(obj)
        return await super().apply(obj, force=force)

    async def replace(self, obj: Obj) -> Obj:
        assert_valid(obj)
        return await super().replace(obj)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def podinfo(namespace: str = NS, **spec: Any) -> Obj:
    """The podinfo Deployment of Flagger's tutorials (kustomize/podinfo, applied by `kubectl apply -k`; the
    tutorials only link it, so the same object is built here)."""
    obj: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "podinfo", "namespace": namespace, "labels": {"app": "podinfo"}},
        "spec": {
            "minReadySeconds": 5,
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 60,
            "strategy": {"rollingUpdate": {"maxUnavailable": 1}, "type": "RollingUpdate"},
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9797"},
                    "labels": {"app": "podinfo"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "podinfod",
                            "image": "ghcr.io/stefanprodan/podinfo:6.0.0",
                            "imagePullPolicy": "IfNotPresent",
                            "ports": [
                                {"name": "http", "containerPort": 9898, "protocol": "TCP"},
                                {"name": "http-metrics", "containerPort": 9797, "protocol": "TCP"},
                                {"name": "grpc", "containerPort": 9999, "protocol": "TCP"},
                            ],
                            "command": [
                                "./podinfo",
                                "--port=9898",
                                "--port-metrics=9797",
                                "--grpc-port=9999",
                            ],
                            "env": [{"name": "PODINFO_UI_COLOR", "value": "#34577c"}],
                            "readinessProbe": {
                                "exec": {"command": ["podcli", "check", "http", "localhost:9898/readyz"]},
                                "initialDelaySeconds": 5,
                                "timeoutSeconds": 5,
                            },
                            "resources": {
                                "limits": {"cpu": "2000m", "memory": "512Mi"},
                                "requests": {"cpu": "100m", "memory": "64Mi"},
                            },
                        }
                    ]
                },
            },
        },
    }
    obj["spec"].update(spec)
    return obj


def podinfo_hpa(namespace: str = NS) -> Obj:
    """kustomize/podinfo/hpa.yaml of Flagger's tutorials."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "podinfo", "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}},
                }
            ],
        },
    }


def canary(**spec: Any) -> Canary:
    body: dict[str, Any] = {
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": 9898},
        "analysis": {"interval": "15s", "threshold": 5, "stepWeight": 10},
    }
    body.update(spec)
    return Canary.model_validate(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": NS},
            "spec": body,
        }
    )


async def put(kube: MemoryKube, *objs: Obj) -> None:
    for obj in objs:
        await kube.apply(copy.deepcopy(obj))


async def get(kube: MemoryKube, kind: Kind, name: str, namespace: str = NS) -> Obj:
    obj = await kube.get(kind, namespace, name)
    assert obj is not None, f"{kind.kind} {namespace}/{name} missing"
    return obj


async def rolled_out(
    kube: MemoryKube, kind: Kind, name: str, namespace: str = NS, *, available: int | None = None
) -> None:
    """The kubelet and the workload controller: every replica of the current generation up."""
    obj = await get(kube, kind, name, namespace)
    gen = obj["metadata"]["generation"]
    if kind is DAEMONSET:
        nodes = (
            0
            if "flagger.app/scale-to-zero" in (obj["spec"]["template"]["spec"].get("nodeSelector") or {})
            else 3
        )
        status: Obj = {
            "observedGeneration": gen,
            "desiredNumberScheduled": nodes,
            "currentNumberScheduled": nodes,
            "updatedNumberScheduled": nodes,
            "numberAvailable": nodes if available is None else available,
            "numberReady": nodes,
            "numberMisscheduled": 0,
        }
    else:
        n = obj["spec"].get("replicas", 1)
        status = {
            "observedGeneration": gen,
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n if available is None else available,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
            ],
        }
    kube.set_status(kind, namespace, name, status)


async def platform_for(kube: MemoryKube, c: Canary, clock: Clock | None = None) -> KubernetesPlatform:
    p = KubernetesPlatform(kube, clock=clock or Clock())
    await p.bind(c)
    return p


def writes(kube: MemoryKube) -> list[tuple[str, str, str]]:
    return [(verb, kind.kind, name) for verb, kind, name in kube.writes]


# -- initialization ---------------------------------------------------------------------------------


async def test_init_creates_the_primary_services_and_hpa_with_primary_selectors() -> None:
    kube = CheckedKube()
    await put(kube, podinfo(), podinfo_hpa())
    c = canary(
        autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
        service={
            "port": 80,
            "targetPort": 9898,
            "portName": "http-web",
            "appProtocol": "http",
            "portDiscovery": True,
            "apex": {"annotations": {"external-dns.alpha.kubernetes.io/hostname": "app.example.com"}},
            "canary": {"labels": {"tier": "canary"}},
        },
    )
    p = await platform_for(kube, c)
    await p.ensure_primary(TARGET)

    primary = await get(kube, DEPLOYMENT, "podinfo-primary")
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    template = primary["spec"]["template"]
    assert template["metadata"]["labels"] == {"app": "podinfo-primary"}
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9797"
    assert template["spec"] == podinfo()["spec"]["template"]["spec"]
    assert primary["spec"]["replicas"] == 1  # the target declares none: Flagger's 1
    assert primary["spec"]["strategy"] == podinfo()["spec"]["strategy"]
    assert primary["metadata"]["labels"] == {
        "app": "podinfo-primary",
        "app.kubernetes.io/managed-by": "rheostat",
    }
    assert primary["metadata"]["annotations"]["rheostat.dev/canary"] == "test/podinfo"
    assert await p.primary_revision(TARGET) == await p.revision(TARGET)

    apex, prim, can = [await get(kube, SERVICE, n) for n in ("podinfo", "podinfo-primary", "podinfo-canary")]
    assert apex["spec"]["selector"] == prim["spec"]["selector"] == {"app": "podinfo-primary"}
    assert can["spec"]["selector"] == {"app": "podinfo"}
    assert apex["spec"]["ports"] == [
        {"name": "http-web", "protocol": "TCP", "port": 80, "targetPort": 9898, "appProtocol": "http"},
        {"name": "grpc", "protocol": "TCP", "port": 9999, "targetPort": 9999},
        {"name": "http-metrics", "protocol": "TCP", "port": 9797, "targetPort": 9797},
    ]
    assert apex["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"] == "app.example.com"
    assert "external-dns.alpha.kubernetes.io/hostname" not in prim["metadata"]["annotations"]
    assert can["metadata"]["labels"]["tier"] == "canary"
    assert apex["metadata"]["labels"]["app"] == "podinfo"  # Flagger labels each Service with its own name

    hpa = await get(kube, HPA, "podinfo-primary")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "podinfo-primary",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert hpa["spec"]["metrics"] == podinfo_hpa()["spec"]["metrics"]

    assert await p.endpoints(TARGET, Group.PRIMARY) == (Upstream("podinfo-primary", 80),)
    assert await p.endpoints(TARGET, Group.CANARY) == (Upstream("podinfo-canary", 80),)


async def test_the_target_goes_to_zero_once_the_primary_is_ready_and_rest_writes_nothing() -> None:
    kube = CheckedKube()
    await put(kube, podinfo(replicas=3))
    p = await platform_for(kube, canary())
    await p.ensure_primary(TARGET)
    assert (await get(kube, DEPLOYMENT, "podinfo-primary"))["spec"]["replicas"] == 3
    await p.ensure_primary(TARGET)
    assert (await get(kube, DEPLOYMENT, "podinfo"))["spec"]["replicas"] == 3  # primary not ready yet

    await rolled_out(kube, DEPLOYMENT, "podinfo-primary")
    await p.ensure_primary(TARGET)
    assert (await get(kube, DEPLOYMENT, "podinfo"))["spec"]["replicas"] == 0

    # The scale-down happens once: a run that scales the target up is not undone by the next tick.
    await p.scale(TARGET, Group.CANARY, None)
    assert (await get(kube, DEPLOYMENT, "podinfo"))["spec"]["replicas"] == 3
    before = len(kube.writes)
    for _ in range(3):
        await p.ensure_primary(TARGET)
        await p.revision(TARGET)
        await p.is_ready(TARGET, Group.PRIMARY)
    assert writes(kube)[before:] == []


def tutorial_canaries(shared: Path) -> list[tuple[str, dict[str, Any]]]:
    """The Canaries of Flagger's tutorials that target the podinfo Deployment, from their YAML blocks."""
    found = []
    for path in sorted((shared / "testdata" / "flagger" / "tutorials").glob("*.md")):
        for block in re.findall(r"```ya?ml\n(.*?)```", path.read_text(), re.S):
            for doc in yaml.safe_load_all(block):
                if not isinstance(doc, dict) or doc.get("kind") != "Canary":
                    continue
                ref = (doc.get("spec") or {}).get("targetRef") or {}
                if (ref.get("kind"), ref.get("name")) == ("Deployment", "podinfo"):
                    found.append((path.name, doc))
    return found


async def test_flagger_tutorial_canaries_work_unchanged(shared: Path) -> None:
    canaries = tutorial_canaries(shared)
    assert len(canaries) >= 15, [name for name, _ in canaries]
    ran = 0
    for name, doc in canaries:
        c = Canary.model_validate(doc)
        ns = c.metadata.namespace
        kube = CheckedKube()
        await put(kube, podinfo(ns), podinfo_hpa(ns))
        p = KubernetesPlatform(kube)
        scaler = c.spec.autoscalerRef
        if scaler is not None and scaler.kind == "ScaledObject":
            with pytest.raises(PlatformError, match="autoscalerRef: ScaledObject"):
                await p.bind(c)
            continue
        await p.bind(c)
        target = ObjectKey(f"{ns}/podinfo")
        await p.ensure_primary(target)
        await rolled_out(kube, DEPLOYMENT, "podinfo-primary", ns)
        await p.ensure_primary(target)
        assert (await get(kube, DEPLOYMENT, "podinfo", ns))["spec"]["replicas"] == 0, name
        apex = c.spec.the_service.name or "podinfo"
        assert (await get(kube, SERVICE, f"{apex}-canary", ns))["spec"]["selector"] == {"app": "podinfo"}, (
            name
        )
        assert (await get(kube, SERVICE, apex, ns))["spec"]["ports"][0]["port"] == c.spec.the_service.port
        if scaler is not None:
            assert (await get(kube, HPA, "podinfo-primary", ns))["spec"]["scaleTargetRef"][
                "name"
            ] == "podinfo-primary"
        # A new image runs as the canary and is promoted.
        deployment = await get(kube, DEPLOYMENT, "podinfo", ns)
        deployment["spec"]["template"]["spec"]["containers"][0]["image"] = (
            "ghcr.io/stefanprodan/podinfo:6.0.1"
        )
        await kube.replace(deployment)
        await p.scale(target, Group.CANARY, None)
        assert (await get(kube, DEPLOYMENT, "podinfo", ns))["spec"]["replicas"] == (2 if scaler else 1), name
        rev = await p.revision(target)
        await p.promote(target, rev)
        primary = await get(kube, DEPLOYMENT, "podinfo-primary", ns)
        assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1"), name
        assert await p.primary_revision(target) == rev
        ran += 1
    assert ran >= 15


# -- revisions and configs --------------------------------------------------------------------------


def with_configs() -> Obj:
    d = podinfo()
    pod = d["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["env"] = [
        {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "podinfo-env", "key": "color"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "podinfo-token", "key": "token"}}},
        {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "x", "optional": True}}},
    ]
    container["envFrom"] = [{"configMapRef": {"name": "podinfo-all"}}, {"secretRef": {"name": "untracked"}}]
    container["volumeMounts"] = [
        {"name": "config", "mountPath": "/etc/podinfo"},
        {"name": "p", "mountPath": "/p"},
    ]
    pod["volumes"] = [
        {"name": "config", "configMap": {"name": "podinfo-files"}},
        {"name": "p", "projected": {"sources": [{"secret": {"name": "podinfo-tls"}}]}},
    ]
    pod["imagePullSecrets"] = [{"name": "registry"}]
    pod["initContainers"] = [
        {"name": "init", "image": "busybox", "envFrom": [{"secretRef": {"name": "podinfo-token"}}]}
    ]
    return d


def configmap(name: str, data: dict[str, str], **meta: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, **meta},
        "data": data,
    }


def secret(name: str, data: dict[str, str], type_: str = "Opaque") -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NS},
        "type": type_,
        "data": data,
    }


CONFIGS = (
    configmap("podinfo-env", {"color": "blue"}),
    configmap("podinfo-all", {"A": "1"}),
    configmap("podinfo-files", {"app.yaml": "x: 1"}),
    configmap("untracked", {"B": "2"}, annotations={"flagger.app/config-tracking": "disabled"}),
    secret("podinfo-token", {"token": "c2VjcmV0"}),
    secret("podinfo-tls", {"tls.crt": "Y3J0", "tls.key": "a2V5"}, "kubernetes.io/tls"),
    secret("registry", {".dockerconfigjson": "e30="}, "kubernetes.io/dockerconfigjson"),
)


async def test_configs_are_copied_as_primary_and_the_primary_uses_the_copies() -> None:
    kube = CheckedKube()
    await put(kube, with_configs(), *CONFIGS)
    # "untracked" is a ConfigMap opted out, but referenced as a Secret here: a Secret of that name must exist.
    await put(kube, secret("untracked", {"k": "dg=="}))
    p = await platform_for(kube, canary())
    await p.ensure_primary(TARGET)

    for kind, name in (
        (CONFIGMAP, "podinfo-env"),
        (CONFIGMAP, "podinfo-all"),
        (CONFIGMAP, "podinfo-files"),
        (SECRET, "podinfo-token"),
        (SECRET, "podinfo-tls"),
        (SECRET, "untracked"),
    ):
        copy_ = await get(kube, kind, f"{name}-primary")
        assert copy_["data"] == (await get(kube, kind, name))["data"]
        assert copy_["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "rheostat"
    assert (await get(kube, SECRET, "podinfo-tls-primary"))["type"] == "kubernetes.io/tls"
    assert await kube.get(SECRET, NS, "registry-primary") is None  # registry credentials are not a revision
    assert await kube.get(CONFIGMAP, NS, "absent-primary") is None

    pod = (await get(kube, DEPLOYMENT, "podinfo-primary"))["spec"]["template"]["spec"]
    env = pod["containers"][0]["env"]
    assert env[0]["valueFrom"]["configMapKeyRef"]["name"] == "podinfo-env-primary"
    assert env[1]["valueFrom"]["secretKeyRef"]["name"] == "podinfo-token-primary"
    assert env[2]["valueFrom"]["configMapKeyRef"]["name"] == "absent"
    assert pod["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "podinfo-all-primary"}},
        {"secretRef": {"name": "untracked-primary"}},
    ]
    assert pod["volumes"][0]["configMap"]["name"] == "podinfo-files-primary"
    assert pod["volumes"][1]["projected"]["sources"][0]["secret"]["name"] == "podinfo-tls-primary"
    assert pod["initContainers"][0]["envFrom"][0]["secretRef"]["name"] == "podinfo-token-primary"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]


async def test_a_configmap_change_is_a_new_revision_and_promote_copies_it() -> None:
    kube = CheckedKube()
    await put(kube, with_configs(), *CONFIGS, secret("untracked", {"k": "dg=="}))
    p = await platform_for(kube, canary())
    await p.ensure_primary(TARGET)
    first = await p.revision(TARGET)
    pod_annotations = (await get(kube, DEPLOYMENT, "podinfo-primary"))["spec"]["template"]["metadata"][
        "annotations"
    ]

    await put(kube, configmap("registry-unused", {"z": "0"}))  # not referenced: no new revision
    assert await p.revision(TARGET) == first
    await put(
        kube, configmap("untracked", {"B": "3"}, annotations={"flagger.app/config-tracking": "disabled"})
    )
    assert await p.revision(TARGET) == first
    await put(kube, secret("registry", {".dockerconfigjson": "e30K"}, "kubernetes.io/dockerconfigjson"))
    assert await p.revision(TARGET) == first

    await put(kube, configmap("podinfo-env", {"color": "green"}))
    second = await p.revision(TARGET)
    assert second != first
    assert await p.primary_revision(TARGET) == first
    assert (await get(kube, CONFIGMAP, "podinfo-env-primary"))["data"] == {
        "color": "blue"
    }  # not before promotion

    await p.promote(TARGET, second)
    assert (await get(kube, CONFIGMAP, "podinfo-env-primary"))["data"] == {"color": "green"}
    assert await p.primary_revision(TARGET) == second
    primary = await get(kube, DEPLOYMENT, "podinfo-primary")
    # Same references, new data: the pod template still changes, so the primary's pods roll.
    assert primary["spec"]["template"]["metadata"]["annotations"] != pod_annotations


async def test_a_missing_required_config_is_named() -> None:
    kube = CheckedKube()
    await put(kube, with_configs())
    p = await platform_for(kube, canary())
    with pytest.raises(
        PlatformError, match="Deployment test/podinfo uses ConfigMap test/podinfo-all, which does not exist"
    ):
        await p.ensure_primary(TARGET)


# -- promotion --------------------------------------------------------------------------------------


async def test_promote_copies_the_template_and_is_idempotent() -> None:
    kube = CheckedKube()
    await put(kube, podinfo(replicas=2))
    p = await platform_for(kube, canary())
    await p.ensure_primary(TARGET)
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary")
    await p.ensure_primary(TARGET)  # target at 0

    target = await get(kube, DEPLOYMENT, "podinfo")
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    target["spec"]["template"]["metadata"]["labels"]["version"] = "6.0.1"
    await kube.replace(target)
    rev = await p.revision(TARGET)
    assert rev != await p.primary_revision(TARGET)
    await p.scale(TARGET, Group.CANARY, None)
    assert (await get(kube, DEPLOYMENT, "podinfo"))["spec"]["replicas"] == 2  # the primary's count

    await p.promote(TARGET, rev)
    primary = await get(kube, DEPLOYMENT, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
    assert primary["spec"]["template"]["metadata"]["labels"] == {"app": "podinfo-primary", "version": "6.0.1"}
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert primary["spec"]["replicas"] == 2
    assert await p.primary_revision(TARGET) == rev

    before = len(kube.writes)
    await p.promote(TARGET, rev)
    assert writes(kube)[before:] == []


async def test_promote_of_a_revision_the_target_no_longer_declares_is_refused() -> None:
    kube = CheckedKube()
    await put(kube, podinfo())
    p = await platform_for(kube, canary())
    await p.ensure_primary(TARGET)
    target = await get(kube, DEPLOYMENT, "podinfo")
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    await kube.replace(target)
    analysed = await p.revision(TARGET)
    target = await get(kube, DEPLOYMENT, "podinfo")
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.2"
    await kube.replace(target)

    with pytest.raises(TargetMoved, match=f"not {analysed}"):
        await p.promote(TARGET, analysed)
    primary = await get(kube, DEPLOYMENT, "podinfo-primary")
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.0")


async def test_with_an_hpa_promotion_keeps_the_primary_replicas_and_updates_the_hpa_copy() -> None:
    kube = CheckedKube()
    await put(kube, podinfo(), podinfo_hpa())
    c = canary(
        autoscalerRef={
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "name": "podinfo",
            "primaryScalerReplicas": {"minReplicas": 3, "maxReplicas": 6},
        }
    )
    p = await platform_for(kube, c)
    await p.ensure_primary(TARGET)
    hpa = await get(kube, HPA, "podinfo-primary")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    primary = await get(kube, DEPLOYMENT, "podinfo-primary")
    primary["spec"]["replicas"] = 5  # the HPA scaled the primary
    await kube.replace(primary)

    changed = podinfo_hpa()
    changed["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] = 80
    await put(kube, changed)
    await p.ensure_primary(TARGET)
    assert (await get(kube, HPA, "podinfo-primary"))["spec"]["metrics"][0]["resource"]["target"][
        "averageUtilization"
    ] == 99  # HPA changes reach the primary with a promotion

    target = await get(kube, DEPLOYMENT, "podinfo")
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    await kube.replace(target)
    await p.promote(TARGET, await p.revision(TARGET))
    assert (await get(kube, DEPLOYMENT, "podinfo-primary"))["spec"]["replicas"] == 5
    assert (await get(kube, HPA, "podinfo-primary"))["spec"]["metrics"][0]["resource"]["target"][
        "averageUtilization"
    ] == 80


# -- readiness --------------------------------------------------------------------------------------


async def test_readiness_follows_the_status_and_the_ready_threshold() -> None:
    kube = CheckedKube()
    clock = Clock()
    await put(kube, podinfo(replicas=4))
    p = await platform_for(
        kube, canary(analysis={"interval": "15s", "stepWeight": 10, "canaryReadyThreshold": 50}), clock
    )
    await p.ensure_primary(TARGET)

    primary = await p.is_ready(TARGET, Group.PRIMARY)
    assert not primary.ready and "generation" in primary.message and primary.not_ready_since == 1000.0

    gen = (await get(kube, DEPLOYMENT, "podinfo"))["metadata"]["generation"]
    base = {"observedGeneration": gen, "replicas": 4, "updatedReplicas": 4, "availableReplicas": 2}
    kube.set_status(DEPLOYMENT, NS, "podinfo", base)
    assert (await p.is_ready(TARGET, Group.CANARY)).ready  # 2 of 4 is 50%

    clock.now = 1010.0
    kube.set_status(DEPLOYMENT, NS, "podinfo", {**base, "availableReplicas": 1})
    r = await p.is_ready(TARGET, Group.CANARY)
    assert not r.ready and "1 of 2 updated replicas available (readyThreshold 50%)" in r.message
    assert r.not_ready_since == 1010.0 and not r.fatal
    clock.now = 1050.0
    kube.set_status(DEPLOYMENT, NS, "podinfo", {**base, "updatedReplicas": 3, "availableReplicas": 3})
    r = await p.is_ready(TARGET, Group.CANARY)
    assert not r.ready and "3 of 4 replicas updated" in r.message
    assert r.not_ready_since == 1010.0  # still the same wait

    kube.set_status(DEPLOYMENT, NS, "podinfo", {**base, "replicas": 5})
    assert "1 old replicas pending termination" in (await p.is_ready(TARGET, Group.CANARY)).message

    deadline = {
        **base,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}],
    }
    kube.set_status(DEPLOYMENT, NS, "podinfo", deadline)
    r = await p.is_ready(TARGET, Group.CANARY)
    assert not r.ready and r.fatal and "progress deadline" in r.message

    kube.set_status(DEPLOYMENT, NS, "podinfo", base)
    assert (await p.is_ready(TARGET, Group.CANARY)).ready
    clock.now = 2000.0
    kube.set_status(DEPLOYMENT, NS, "podinfo", {**base, "availableReplicas": 0})
    assert (await p.is_ready(TARGET, Group.CANARY)).not_ready_since == 2000.0  # a new wait


async def test_the_primary_threshold_is_its_own_and_a_primary_at_zero_is_not_ready() -> None:
    kube = CheckedKube()
    await put(kube, podinfo(replicas=4))
    p = await platform_for(
        kube, canary(analysis={"interval": "15s", "stepWeight": 10, "primaryReadyThreshold": 75})
    )
    await p.ensure_primary(TARGET)
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary", available=3)
    assert (await p.is_ready(TARGET, Group.PRIMARY)).ready
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary", available=2)
    assert not (await p.is_ready(TARGET, Group.PRIMARY)).ready
    await p.scale(TARGET, Group.PRIMARY, 0)
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary")
    r = await p.is_ready(TARGET, Group.PRIMARY)
    assert not r.ready and "scaled to zero" in r.message


# -- DaemonSets -------------------------------------------------------------------------------------


def daemonset() -> Obj:
    d = podinfo()
    spec = d["spec"]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "selector": spec["selector"],
            "template": spec["template"],
            "updateStrategy": {"type": "RollingUpdate"},
        },
    }


async def test_a_daemonset_is_parked_by_node_selector_and_the_revision_ignores_it() -> None:
    kube = CheckedKube()
    await put(kube, daemonset())
    c = canary(targetRef={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"})
    p = await platform_for(kube, c)
    await p.ensure_primary(TARGET)
    primary = await get(kube, DAEMONSET, "podinfo-primary")
    assert primary["spec"]["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    rev = await p.revision(TARGET)

    await rolled_out(kube, DAEMONSET, "podinfo-primary")
    await p.ensure_primary(TARGET)  # the primary is ready: the target is parked
    target = await get(kube, DAEMONSET, "podinfo")
    assert target["spec"]["template"]["spec"]["nodeSelector"] == {"flagger.app/scale-to-zero": "true"}
    assert await p.revision(TARGET) == rev
    await rolled_out(kube, DAEMONSET, "podinfo")
    assert (await p.is_ready(TARGET, Group.CANARY)).ready  # no node to run on: nothing to wait for

    await p.scale(TARGET, Group.CANARY, None)
    assert "nodeSelector" not in (await get(kube, DAEMONSET, "podinfo"))["spec"]["template"]["spec"]
    await rolled_out(kube, DAEMONSET, "podinfo", available=1)
    r = await p.is_ready(TARGET, Group.CANARY)
    assert not r.ready and "1 of 3 pods available" in r.message

    target = await get(kube, DAEMONSET, "podinfo")
    target["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/stefanprodan/podinfo:6.0.1"
    await kube.replace(target)
    await p.scale(TARGET, Group.CANARY, 0)
    await p.promote(TARGET, await p.revision(TARGET))
    pod = (await get(kube, DAEMONSET, "podinfo-primary"))["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"].endswith(":6.0.1") and "nodeSelector" not in pod


async def test_a_daemonset_with_on_delete_updates_is_refused() -> None:
    kube = CheckedKube()
    d = daemonset()
    d["spec"]["updateStrategy"] = {"type": "OnDelete"}
    await put(kube, d)
    p = await platform_for(
        kube, canary(targetRef={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"})
    )
    with pytest.raises(PlatformError, match="RollingUpdate updateStrategy, not OnDelete"):
        await p.ensure_primary(TARGET)


# -- revertOnDeletion -------------------------------------------------------------------------------


async def initialized(kube: MemoryKube, c: Canary) -> KubernetesPlatform:
    p = await platform_for(kube, c)
    await p.ensure_primary(TARGET)
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary")
    await p.ensure_primary(TARGET)
    assert (await get(kube, DEPLOYMENT, "podinfo"))["spec"]["replicas"] == 0
    return p


async def test_revert_on_deletion_hands_the_target_back_and_removes_what_was_generated() -> None:
    kube = CheckedKube()
    target = with_configs()
    target["spec"]["replicas"] = 3
    await put(kube, target, *CONFIGS, secret("untracked", {"k": "dg=="}), podinfo_hpa())
    c = canary(
        revertOnDeletion=True,
        autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "podinfo"},
    )
    p = await initialized(kube, c)

    with pytest.raises(PlatformError, match="the primary stays until it is ready"):
        await p.release(c)
    assert (await get(kube, DEPLOYMENT, "podinfo"))["spec"]["replicas"] == 3  # the primary's count
    assert await kube.get(DEPLOYMENT, NS, "podinfo-primary") is not None

    await rolled_out(kube, DEPLOYMENT, "podinfo")
    await p.release(c)
    for kind, name in (
        (DEPLOYMENT, "podinfo-primary"),
        (SERVICE, "podinfo-primary"),
        (SERVICE, "podinfo-canary"),
        (HPA, "podinfo-primary"),
        (CONFIGMAP, "podinfo-env-primary"),
        (SECRET, "podinfo-token-primary"),
    ):
        assert await kube.get(kind, NS, name) is None, name
    apex = await get(kube, SERVICE, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo"}
    assert "app.kubernetes.io/managed-by" not in apex["metadata"]["labels"]
    assert await kube.get(HPA, NS, "podinfo") is not None
    assert await kube.get(CONFIGMAP, NS, "podinfo-env") is not None


async def test_revert_gives_up_waiting_after_the_progress_deadline() -> None:
    kube = CheckedKube()
    clock = Clock()
    await put(kube, podinfo(replicas=2))
    c = canary(revertOnDeletion=True, progressDeadlineSeconds=60)
    p = KubernetesPlatform(kube, clock=clock)
    await p.bind(c)
    await p.ensure_primary(TARGET)
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary")
    await p.ensure_primary(TARGET)
    with pytest.raises(PlatformError):
        await p.release(c)
    clock.now += 61
    await p.release(c)
    assert await kube.get(DEPLOYMENT, NS, "podinfo-primary") is None


async def test_without_revert_on_deletion_release_leaves_everything() -> None:
    kube = CheckedKube()
    await put(kube, podinfo(replicas=2))
    c = canary()
    p = await initialized(kube, c)
    before = len(kube.writes)
    await p.release(c)
    assert writes(kube)[before:] == []
    assert await kube.get(DEPLOYMENT, NS, "podinfo-primary") is not None
    with pytest.raises(PlatformError, match="no Canary is bound to test/podinfo"):
        await p.ensure_primary(TARGET)


async def test_an_existing_apex_service_is_adopted_and_given_back() -> None:
    kube = CheckedKube()
    user_service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "podinfo", "namespace": NS, "labels": {"team": "a"}},
        "spec": {
            "type": "ClusterIP",
            "selector": {"app": "podinfo", "tier": "web"},
            "ports": [{"port": 9898}],
        },
    }
    await put(kube, podinfo(replicas=1), user_service)
    c = canary(revertOnDeletion=True)
    p = await initialized(kube, c)
    apex = await get(kube, SERVICE, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo-primary"}
    assert apex["metadata"]["labels"] == {"team": "a"}
    before = len(kube.writes)
    await p.ensure_primary(TARGET)
    assert writes(kube)[before:] == []

    await rolled_out(kube, DEPLOYMENT, "podinfo")
    await p.scale(TARGET, Group.CANARY, None)
    await rolled_out(kube, DEPLOYMENT, "podinfo")
    await p.release(c)
    apex = await get(kube, SERVICE, "podinfo")
    assert apex["spec"]["selector"] == {"app": "podinfo", "tier": "web"}
    assert "rheostat.dev/original-selector" not in apex["metadata"].get("annotations", {})


# -- errors -----------------------------------------------------------------------------------------


class ForbiddenKube(CheckedKube):
    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        if kind is DEPLOYMENT:
            raise Forbidden(403, "get", kind, 'User "system:serviceaccount:rheostat:rheostat" cannot get')
        return await super().get(kind, namespace, name)


async def test_errors_name_what_failed() -> None:
    p = await platform_for(ForbiddenKube(), canary())
    with pytest.raises(PlatformError, match=re.escape("forbidden: cannot get deployments.apps (User")) as err:
        await p.ensure_primary(TARGET)
    assert isinstance(err.value.__cause__, Forbidden)

    p = await platform_for(CheckedKube(), canary())
    with pytest.raises(PlatformError, match=r"^Deployment test/podinfo not found$"):
        await p.ensure_primary(TARGET)
    with pytest.raises(PlatformError, match=r"^Deployment test/podinfo not found$"):
        await p.revision(TARGET)

    with pytest.raises(
        PlatformError,
        match=r"Service v1 is not supported by the kubernetes platform \(supported: Deployment apps/v1, DaemonSet apps/v1\)",
    ):
        await p.bind(canary(targetRef={"apiVersion": "v1", "kind": "Service", "name": "podinfo"}))
    with pytest.raises(PlatformError, match="Deployment extensions/v1beta1 is not supported"):
        await p.bind(
            canary(targetRef={"apiVersion": "extensions/v1beta1", "kind": "Deployment", "name": "podinfo"})
        )

    kube = CheckedKube()
    await put(kube, podinfo(selector={"matchLabels": {"component": "podinfo"}}))
    p = await platform_for(kube, canary())
    with pytest.raises(
        PlatformError, match=re.escape("matchLabels must contain one of app, name, app.kubernetes.io/name")
    ):
        await p.ensure_primary(TARGET)

    kube = CheckedKube()
    await put(kube, podinfo())
    p = await platform_for(
        kube,
        canary(
            autoscalerRef={"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "nope"}
        ),
    )
    with pytest.raises(PlatformError, match="HorizontalPodAutoscaler test/nope not found"):
        await p.ensure_primary(TARGET)


def test_the_registry_builds_the_kubernetes_platform() -> None:
    kube = MemoryKube()
    platform = PLATFORMS.create("kubernetes", api=kube)
    assert isinstance(platform, KubernetesPlatform) and platform.api is kube


async def test_a_primary_made_by_flagger_is_adopted_and_the_target_is_analysed_before_replacing_it() -> None:
    kube = CheckedKube()
    flagger_primary = podinfo(replicas=2, selector={"matchLabels": {"app": "podinfo-primary"}})
    flagger_primary["metadata"] = {
        "name": "podinfo-primary",
        "namespace": NS,
        "labels": {"app": "podinfo-primary"},
    }
    flagger_primary["spec"]["template"]["metadata"]["labels"] = {"app": "podinfo-primary"}
    flagger_primary["spec"]["template"]["metadata"]["annotations"]["flagger-id"] = "0c1f7c4e"
    await put(kube, podinfo(replicas=0), flagger_primary)
    p = await platform_for(kube, canary())
    await p.ensure_primary(TARGET)

    assert await p.primary_revision(TARGET) == "unknown" != await p.revision(TARGET)
    primary = await get(kube, DEPLOYMENT, "podinfo-primary")
    assert primary["spec"]["template"] == flagger_primary["spec"]["template"]  # nothing promoted unanalysed
    await rolled_out(kube, DEPLOYMENT, "podinfo-primary")
    before = len(kube.writes)
    await p.ensure_primary(TARGET)
    assert writes(kube)[before:] == []


async def test_revert_on_deletion_unparks_a_daemonset() -> None:
    kube = CheckedKube()
    await put(kube, daemonset())
    c = canary(
        revertOnDeletion=True, targetRef={"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "podinfo"}
    )
    p = await platform_for(kube, c)
    await p.ensure_primary(TARGET)
    await rolled_out(kube, DAEMONSET, "podinfo-primary")
    await p.ensure_primary(TARGET)
    assert "nodeSelector" in (await get(kube, DAEMONSET, "podinfo"))["spec"]["template"]["spec"]
    with pytest.raises(PlatformError, match="the primary stays until it is ready"):
        await p.release(c)
    await rolled_out(kube, DAEMONSET, "podinfo", available=2)
    with pytest.raises(PlatformError, match="2 of 3 pods available"):
        await p.release(c)
    await rolled_out(kube, DAEMONSET, "podinfo")
    await p.release(c)
    assert "nodeSelector" not in (await get(kube, DAEMONSET, "podinfo"))["spec"]["template"]["spec"]
    assert await kube.get(DAEMONSET, NS, "podinfo-primary") is None
