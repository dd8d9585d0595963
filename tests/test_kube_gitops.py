"""GitOps into a cluster (kmock through the real lightkube client): server-side apply with field manager
`rheostat`, all or nothing per revision, prune, drift repair, health, and the status Flux keeps."""

from __future__ import annotations

import asyncio
import copy

import pytest

from rheostat.gitops import conditions as cond
from rheostat.model.load import ManifestError
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, Obj
from rheostat.plugins.kube.health import health_of
from rheostat.reactor.cluster_gitops import KUSTOMIZATION_KIND
from tests import kubeapi
from tests.kube_gitops_world import (
    APPS,
    APPS_KUSTOMIZATION,
    MAX_WEIGHT,
    TEMPLATE,
    World,
    canary,
    deployment,
    files,
    service,
    world,
)

kube_server = kubeapi.kube_server  # the fixtures, made visible here
kubeconfig = kubeapi.kubeconfig
__all__ = ["world"]


def image(obj: Obj | None) -> str:
    assert obj is not None
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_a_repository_is_applied_with_server_side_apply_and_its_inventory_kept_as_flux(
    world: World,
) -> None:
    await world.reconcile()
    assert cond.is_ready(world.state()), world.state()
    for kind, name in ((kinds.DEPLOYMENT, "podinfo"), (kinds.SERVICE, "podinfo"), (kinds.CANARY, "podinfo")):
        assert world.obj(kind, name) is not None, f"{kind.kind} not applied"
    assert world.server.object(kinds.NAMESPACE, "", "production") is not None
    assert world.server.object(TEMPLATE, "", "rheostatcanarymaxweight") is not None
    assert world.server.object(MAX_WEIGHT, "", "production-canary-max-weight-50") is not None
    # every write is a server-side apply by `rheostat`, forcing ownership as Flux's does
    assert world.server.applies and {(a.field_manager, a.force) for a in world.server.applies} == {
        ("rheostat", True)
    }
    # Namespace and ConstraintTemplate (cluster-scoped, needed by the rest) went first
    order = [a.kind.kind for a in world.server.applies]
    assert order.index("Namespace") < order.index("Deployment")
    # the nested Kustomization is in the cluster with Flux's status: conditions, revisions, inventory
    ks = world.server.object(KUSTOMIZATION_KIND, "flux-system", "apps")
    assert ks is not None
    status = ks["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and ready["reason"] == "ReconciliationSucceeded"
    assert status["lastAppliedRevision"] == world.state()["lastAppliedRevision"]
    ids = {e["id"]: e["v"] for e in status["inventory"]["entries"]}
    assert ids["production_podinfo_apps_Deployment"] == "v1"
    assert ids["production_podinfo__Service"] == "v1"
    assert ids["production_podinfo_flagger.app_Canary"] == "v1beta1"
    assert ids["_production__Namespace"] == "v1"
    # and it was written through the status subresource, never through the object
    status_writes = [
        c for c in world.server.writes() if c.kind == KUSTOMIZATION_KIND and c.subresource == "status"
    ]
    assert status_writes and all(c.content_type == "application/merge-patch+json" for c in status_writes)


async def test_a_commit_the_policy_refuses_is_not_applied_at_all(world: World) -> None:
    await world.reconcile()
    before = len(world.server.writes())
    revision = await world.commit(
        "too far", **{"apps/canary.yaml": canary(max_weight=80), "apps/service.yaml": service(port=80)}
    )
    await world.reconcile()
    ready = cond.condition(world.state(), "Ready")
    assert ready is not None and ready["status"] == "False", ready
    assert ready["reason"] == "PolicyViolation" and revision in ready["message"]
    assert "at most 50" in ready["message"]
    # nothing of the revision reached the cluster: not the Canary, not the Service beside it
    written = [c for c in world.server.writes()[before:] if c.subresource != "status"]
    assert written == []
    assert world.obj(kinds.CANARY, "podinfo")["spec"]["analysis"]["maxWeight"] == 50  # type: ignore[index]
    assert world.obj(kinds.SERVICE, "podinfo")["spec"]["ports"][0]["port"] == 9898  # type: ignore[index]


async def test_a_change_is_applied_and_a_removed_object_pruned(world: World) -> None:
    await world.reconcile()
    world.repo.git("rm", "--quiet", "apps/service.yaml")
    changes = {"apps/deployment.yaml": deployment(image="ghcr.io/stefanprodan/podinfo:6.7.1")}
    revision = world.repo.commit(
        {k: v for k, v in files(**changes).items() if k != "apps/service.yaml"}, "next"
    )
    world.repo.push("main")
    await world.reconcile()
    assert cond.is_ready(world.state()), world.state()
    assert world.state()["lastAppliedRevision"].endswith(revision)
    assert image(world.obj(kinds.DEPLOYMENT, "podinfo")) == "ghcr.io/stefanprodan/podinfo:6.7.1"
    assert world.obj(kinds.SERVICE, "podinfo") is None, "the Service removed from Git was not pruned"
    ks = world.server.object(KUSTOMIZATION_KIND, "flux-system", "apps")
    assert ks is not None
    entries = ks["status"]["inventory"]["entries"]
    assert "production_podinfo__Service" not in {e["id"] for e in entries}


async def test_an_object_the_api_server_refuses_leaves_the_last_good_revision(world: World) -> None:
    await world.reconcile()
    good = world.state()["lastAppliedRevision"]
    world.server.refuse_invalid(
        kinds.DEPLOYMENT,
        "spec.replicas",
        lambda obj: not isinstance(obj.get("spec", {}).get("replicas", 1), int),
        'Invalid value: "two": spec.replicas in body must be of type integer: "string"',
    )
    before = len(world.server.writes())
    revision = await world.commit(
        "bad", **{"apps/deployment.yaml": deployment(replicas="two"), "apps/service.yaml": service(port=80)}
    )
    await world.reconcile()
    ready = cond.condition(world.state(), "Ready")
    assert ready is not None and ready["status"] == "False"
    message = ready["message"]
    assert revision in message
    assert "apps/deployment.yaml" in message, message  # the file
    assert "Deployment production/podinfo" in message, message  # the object
    assert "spec.replicas" in message, message  # the field
    assert world.state()["lastAppliedRevision"] == good
    assert [c for c in world.server.writes()[before:] if c.subresource != "status"] == []
    assert world.obj(kinds.SERVICE, "podinfo")["spec"]["ports"][0]["port"] == 9898  # type: ignore[index]
    assert world.obj(kinds.DEPLOYMENT, "podinfo")["spec"]["replicas"] == 2  # type: ignore[index]
    # and the object itself says why
    events = world.store.events(kind="Deployment", key="production/podinfo")
    assert any(e.reason == "ApplyRefused" and "spec.replicas" in e.message for e in events)


async def test_a_reconcile_with_nothing_changed_writes_nothing(world: World) -> None:
    await world.reconcile()
    await world.reconcile()  # the statuses settle
    kinds_read = {c.kind for c in world.server.calls if c.verb == "list"}
    for _ in range(500):  # each kind read is then watched (a watch lists once before it starts)
        if kinds_read <= {c.kind for c in world.server.calls if c.verb == "watch"}:
            break
        await asyncio.sleep(0.01)
    calls = len(world.server.calls)
    writes = len(world.server.writes())
    await world.reconcile()
    await world.reconcile()
    assert len(world.server.writes()) == writes, world.server.writes()[writes:]
    # and read nothing either: the live objects come from watches
    reads = [c for c in world.server.calls[calls:] if c.verb in ("get", "list")]
    assert reads == [], [(c.verb, c.kind.kind if c.kind else None, c.params) for c in reads]


async def test_drift_in_the_cluster_is_repaired_with_an_event(world: World) -> None:
    await world.reconcile()

    def edit(obj: Obj) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"

    key = world.server._key(kinds.DEPLOYMENT, "production", "podinfo")
    old = world.server.store[key]
    new = copy.deepcopy(old)
    edit(new)
    world.server._write(kinds.DEPLOYMENT, key, old, new, "kubectl")
    await world.reconcile()
    assert image(world.obj(kinds.DEPLOYMENT, "podinfo")) == "ghcr.io/stefanprodan/podinfo:6.7.0"
    events = [
        o for k, o in world.server.store.items() if k[0] == "v1/events" and o.get("reason") == "DriftRepaired"
    ]
    assert events and events[0]["involvedObject"]["kind"] == "Deployment"


def test_health_is_read_as_kstatus_reads_it() -> None:
    deploy = {"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 2}}
    assert health_of({**deploy, "status": {"observedGeneration": 1}})[0] is None
    progressing = {"observedGeneration": 2, "updatedReplicas": 1, "availableReplicas": 1, "replicas": 2}
    assert health_of({**deploy, "status": progressing}) == (None, "1 of 2 replicas updated")
    done = {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2, "replicas": 2}
    assert health_of({**deploy, "status": done}) == (True, "")
    stuck = {
        **progressing,
        "conditions": [
            {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": "too slow",
            }
        ],
    }
    assert health_of({**deploy, "status": stuck}) == (False, "too slow")
    job = {"kind": "Job", "metadata": {}}
    assert (
        health_of({**job, "status": {"conditions": [{"type": "Failed", "status": "True", "message": "x"}]}})[
            0
        ]
        is False
    )
    assert health_of({**job, "status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] is True
    sts = {"kind": "StatefulSet", "metadata": {}, "spec": {"replicas": 1}}
    assert (
        health_of({**sts, "status": {"readyReplicas": 1, "currentRevision": "a", "updateRevision": "b"}})[0]
        is None
    )
    hr = {"kind": "HelmRelease", "metadata": {"generation": 1}}
    failed = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "message": "install failed"}],
    }
    assert health_of({**hr, "status": failed}) == (False, "install failed")
    assert health_of({**hr, "status": {}})[0] is None
    assert health_of({"kind": "Canary", "metadata": {}, "status": {"phase": "Progressing"}})[0] is None
    assert health_of({"kind": "Canary", "metadata": {}, "status": {"phase": "Succeeded"}})[0] is True
    widget = {
        "kind": "Widget",
        "metadata": {},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert health_of(widget)[0] is True
    assert health_of({"kind": "ConfigMap", "metadata": {}})[0] is True
    assert health_of(None)[0] is False


async def test_wait_reads_health_from_the_cluster(world: World) -> None:
    text = APPS_KUSTOMIZATION.replace("prune: true", "prune: true\n  wait: true")
    await world.commit("wait", **{"clusters/apps.yaml": text})
    await world.reconcile()
    await world.reconcile()
    ready = cond.condition(world.state(APPS), "Ready")
    assert ready is not None and ready["status"] == "Unknown", ready  # the Deployment has no status yet
    world.server.set_status(
        kinds.DEPLOYMENT,
        "production",
        "podinfo",
        {
            "observedGeneration": 1,
            "replicas": 2,
            "updatedReplicas": 2,
            "availableReplicas": 2,
            "readyReplicas": 2,
        },
    )
    world.server.set_status(kinds.CANARY, "production", "podinfo", {"phase": "Initialized"})
    await world.reconcile()
    assert cond.is_ready(world.state(APPS)), world.state(APPS)


WIDGETS_CRD: Obj = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
                "subresources": {"status": {}},
            }
        ],
    },
}


def widget(size: object = 3) -> Obj:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "shop"},
        "spec": {"size": size},
    }


SHOP: Obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}


async def test_a_crd_and_a_namespace_go_first_and_are_removed_again_if_what_needs_them_is_refused(
    world: World,
) -> None:
    from rheostat.plugins.kube.apply import CRD, ClusterApplier

    applier = ClusterApplier(world.api)
    widgets = Kind("example.com/v1", "Widget", "widgets", status=True)
    world.server.refuse_invalid(
        widgets, "spec.size", lambda o: not isinstance(o["spec"].get("size"), int), "must be an integer"
    )
    bad = [("crd.yaml", WIDGETS_CRD), ("widget.yaml", widget("big")), ("ns.yaml", SHOP)]
    await applier.dry_run(bad)  # the Widget waits for its CRD: nothing to say yet
    with pytest.raises(ManifestError) as refused:
        await applier.apply(bad)
    assert refused.value.source == "widget.yaml"
    assert "Widget shop/w" in str(refused.value) and "spec.size" in str(refused.value)
    # nothing of it is left: the CRD and the Namespace it brought were removed again
    assert world.server.object(CRD, "", "widgets.example.com") is None
    assert world.server.object(kinds.NAMESPACE, "", "shop") is None

    good = [("widget.yaml", widget()), ("crd.yaml", WIDGETS_CRD), ("ns.yaml", SHOP)]
    await applier.dry_run(good)
    outcome = await applier.apply(good)
    assert outcome.applied[-1] == "Widget shop/w"  # written after the CRD and Namespace it needs
    assert world.server.object(widgets, "shop", "w") is not None
    await applier.live.close()


async def test_a_write_refused_after_the_dry_run_passed_says_exactly_what_was_applied(world: World) -> None:
    await world.reconcile()
    good = world.state()["lastAppliedRevision"]

    def quota(of: Kind, obj: Obj) -> kubeapi.Refused | None:  # admitted by the dry-run, refused for real
        if of == kinds.SERVICE and not world.server._dry:
            return kubeapi.Refused(
                403, "Forbidden", 'services "podinfo" is forbidden: exceeded quota: services'
            )
        return None

    world.server.validators.append(quota)
    revision = await world.commit(
        "both",
        **{
            "apps/deployment.yaml": deployment(image="ghcr.io/stefanprodan/podinfo:6.7.1"),
            "apps/service.yaml": service(port=80),
        },
    )
    await world.reconcile()
    ready = cond.condition(world.state(), "Ready")
    assert ready is not None and ready["status"] == "False"
    assert revision in ready["message"] and "applied in part" in ready["message"]
    assert "exceeded quota" in ready["message"]
    assert "applied before the failure: Deployment production/podinfo" in ready["message"], ready["message"]
    assert image(world.obj(kinds.DEPLOYMENT, "podinfo")).endswith(":6.7.1")  # what was applied, said
    assert world.state()["lastAppliedRevision"] == good
    world.server.validators.remove(quota)
    await world.reconcile()  # the next try applies the rest
    assert cond.is_ready(world.state()), world.state()
    assert world.obj(kinds.SERVICE, "podinfo")["spec"]["ports"][0]["port"] == 80  # type: ignore[index]
