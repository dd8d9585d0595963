"""Flux's layout: a path built as kustomize-controller builds it (through the real kustomize), the bootstrap
folder understood, and the upstream example repositories built where they lie."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest

from rheostat.cli.validate import validate
from rheostat.gitops import conditions as cond
from rheostat.gitops.build import BuildError, build
from rheostat.gitops.reconciler import GitOps
from rheostat.gitops.sources import FolderFetcher
from rheostat.model.core import CoreObject
from rheostat.model.gitops import Kustomization
from rheostat.model.load import ManifestError, ManifestErrors, parse_object
from rheostat.reactor.settings import Settings
from rheostat.server.main import Server
from rheostat.store import Store
from tests.conftest import in_ci
from tests.rig import Rig
from tests.test_gitops_reconciler import Clock, root, workload

EXAMPLES = "testdata/flux-examples"


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    if shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        if in_ci():
            pytest.fail("CI=true but kubectl (kustomize) is not installed: see the Makefile's system-deps")
        pytest.skip("kubectl is not installed")


def write(folder: Path, name: str, text: str) -> None:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


def names(built: object) -> list[str]:
    return sorted(f"{o.kind} {o.metadata.key}" for o in built.objects)  # type: ignore[attr-defined]


def ks_spec(**spec: object) -> Kustomization:
    obj = parse_object(
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {"sourceRef": {"kind": "GitRepository", "name": "flux-system"}, "prune": True, **spec},
        }
    )
    assert isinstance(obj, Kustomization)
    return obj


DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: apps, labels: {app: web}}
spec:
  template:
    spec:
      containers:
      - {name: web, image: ghcr.io/stefanprodan/podinfo:6.0.0}
"""


async def test_a_path_without_kustomization_yaml_is_generated_as_flux_does(tmp_path: Path) -> None:
    write(tmp_path, "apps/web.yaml", workload("web"))
    write(tmp_path, "apps/more/deep/api.yaml", workload("api"))  # a folder without one: walked into
    write(tmp_path, "apps/base/kustomization.yaml", "resources: [db.yaml]\nnamePrefix: base-\n")
    write(tmp_path, "apps/base/db.yaml", workload("db"))
    write(tmp_path, "apps/base/ignored.yaml", workload("ignored"))  # not in the sub-kustomization
    write(
        tmp_path,
        "apps/flags.yaml",
        "flags:\n  f: {state: ENABLED, variants: {a: true}, defaultVariant: a}\n",
    )
    write(
        tmp_path,
        "apps/more/menu.json",
        '{"flags": {"m": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}}}',
    )
    built = await build(tmp_path, "apps")
    assert names(built) == [
        "FlagSet default/flags",
        "FlagSet default/menu",
        "Workload apps/api",
        "Workload apps/base-db",
        "Workload apps/web",
    ]
    assert not (tmp_path / "apps" / "kustomization.yaml").exists()  # the artifact is never written


async def test_a_yaml_file_that_is_not_objects_fails_the_generated_build_by_name(tmp_path: Path) -> None:
    write(tmp_path, "apps/web.yaml", workload("web"))
    write(tmp_path, "apps/sub/kustomization.yaml", "resources: [a.yaml]\n")
    write(tmp_path, "apps/sub/a.yaml", workload("a"))
    write(tmp_path, "apps/values.yaml", "replicaCount: 2\n")
    with pytest.raises(BuildError, match=r"failed to decode Kubernetes YAML from values\.yaml"):
        await build(tmp_path, "apps")


async def test_kustomization_fields_are_applied_by_kustomize(tmp_path: Path) -> None:
    write(tmp_path, "apps/deploy.yaml", DEPLOYMENT)
    write(tmp_path, "apps/web.yaml", workload("web"))
    write(
        tmp_path,
        "components/env/kustomization.yaml",
        (
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n"
            "configMapGenerator:\n- name: settings\n  literals: [colour=blue]\n"
        ),
    )
    spec = ks_spec(
        path="./apps",
        targetNamespace="team",
        namePrefix="pre-",
        nameSuffix="-suf",
        images=[{"name": "ghcr.io/stefanprodan/podinfo", "newTag": "6.5.0"}],
        patches=[
            {
                "patch": "- {op: replace, path: /spec/replicas, value: 3}",
                "target": {"kind": "Workload", "name": "web"},
            }
        ],
        components=["../components/env"],
        commonMetadata={"labels": {"team": "blue"}, "annotations": {"owner": "me"}},
    )
    built = await build(tmp_path, "apps", spec=spec.spec)
    by = {f"{o.kind} {o.metadata.key}": o for o in built.objects}
    assert sorted(by) == [
        "ConfigMap team/pre-settings-suf-" + by_name(by, "ConfigMap")[-10:],
        "Deployment team/pre-web-suf",
        "Workload team/pre-web-suf",
    ]
    wl = by["Workload team/pre-web-suf"]
    assert wl.model_dump()["spec"]["replicas"] == 3
    assert wl.metadata.labels["team"] == "blue" and wl.metadata.annotations["owner"] == "me"
    dep = by["Deployment team/pre-web-suf"]
    assert isinstance(dep, CoreObject)
    assert dep.model_dump()["spec"]["template"]["spec"]["containers"][0]["image"].endswith("podinfo:6.5.0")
    assert any(
        "not run on the local platform" in n and "Deployment team/pre-web-suf" in n for n in built.notes
    )


def by_name(by: Mapping[str, object], kind: str) -> str:
    return next(k for k in by if k.startswith(kind))


async def test_kustomization_yaml_generators_and_secrets_never_keep_values(tmp_path: Path) -> None:
    write(
        tmp_path,
        "apps/kustomization.yaml",
        (
            "namespace: apps\nresources: [web.yaml]\n"
            "configMapGenerator:\n- name: conf\n  literals: [mode=fast]\n"
            "secretGenerator:\n- name: creds\n  literals: [password=hunter2-very-secret]\n"
            "generatorOptions: {disableNameSuffixHash: true}\n"
        ),
    )
    write(tmp_path, "apps/web.yaml", workload("web"))
    built = await build(tmp_path, "apps")
    assert names(built) == ["ConfigMap apps/conf", "Secret apps/creds", "Workload apps/web"]
    assert "hunter2" not in "".join(built.bodies)
    assert "cGFzc3dvcmQ" not in "".join(built.bodies) and "aHVudGVy" not in "".join(built.bodies)
    assert len([n for n in built.notes if "not run on the local platform" in n]) == 1


GOTK_COMPONENTS = """---
apiVersion: v1
kind: Namespace
metadata:
  name: flux-system
  labels: {app.kubernetes.io/instance: flux-system, app.kubernetes.io/part-of: flux}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gitrepositories.source.toolkit.fluxcd.io
  labels: {app.kubernetes.io/part-of: flux}
spec: {group: source.toolkit.fluxcd.io}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: kustomize-controller
  namespace: flux-system
  labels: {app.kubernetes.io/part-of: flux, control-plane: controller}
spec:
  template:
    spec:
      containers:
      - {name: manager, image: ghcr.io/fluxcd/kustomize-controller:v1.9.4, args: [--log-level=info]}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: source-controller
  namespace: flux-system
  labels: {app.kubernetes.io/part-of: flux}
spec:
  template:
    spec:
      containers:
      - {name: manager, image: ghcr.io/fluxcd/source-controller:v1.9.1, args: []}
"""

GOTK_SYNC = """---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec:
  interval: 1m0s
  ref: {branch: main}
  secretRef: {name: flux-system}
  url: ssh://git@github.com/example/fleet
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: flux-system, namespace: flux-system}
spec:
  interval: 10m0s
  path: ./clusters/dev
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
"""

BOOT_KUSTOMIZATION = """apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [gotk-components.yaml, gotk-sync.yaml]
patches:
- patch: |
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --concurrent=20
  target: {kind: Deployment, name: "(kustomize-controller|source-controller)"}
"""


def fleet(tmp: Path) -> Path:
    """A repository as `flux bootstrap` leaves it, plus one app folder of Rheostat objects."""
    repo = tmp / "fleet"
    write(repo, "clusters/dev/flux-system/gotk-components.yaml", GOTK_COMPONENTS)
    write(repo, "clusters/dev/flux-system/gotk-sync.yaml", GOTK_SYNC)
    write(repo, "clusters/dev/flux-system/kustomization.yaml", BOOT_KUSTOMIZATION)
    write(
        repo,
        "clusters/dev/apps.yaml",
        """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  sourceRef: {kind: GitRepository, name: flux-system}
  path: ./apps
  prune: true
""",
    )
    write(repo, "apps/web.yaml", workload("web"))
    write(repo, "apps/svc.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: apps}\n")
    return repo


async def test_the_bootstrap_folder_is_adopted_and_flux_components_are_one_note(tmp_path: Path) -> None:
    built = await build(fleet(tmp_path), "clusters/dev")
    assert names(built) == ["Kustomization flux-system/apps"]
    flux = [n for n in built.notes if "Flux's own components" in n]
    assert flux == [
        "Flux's own components are not run, Rheostat does their work: 1 CustomResourceDefinition, "
        "2 Deployment, 1 Namespace (from the bootstrap folder's gotk-components.yaml)"
    ]
    adopted = [n for n in built.notes if n.startswith("adopted")]
    assert adopted == [
        "adopted from clusters/dev/flux-system: GitRepository flux-system/flux-system, Kustomization "
        "flux-system/flux-system; they describe the repository Rheostat already follows (it applies "
        "./clusters/dev)"
    ]
    assert not any("document" in n for n in built.notes)


async def test_run_reconciles_a_bootstrapped_repository_with_one_note_per_revision(tmp_path: Path) -> None:
    repo = fleet(tmp_path)
    apps = repo / "clusters/dev/apps.yaml"
    apps.write_text(apps.read_text().replace("toolkit.fluxcd.io/v1\n", "toolkit.fluxcd.io/v1beta2\n"))
    store = Store(":memory:")
    own = [  # what `rheostat run --repo fleet --path clusters/dev` stores: Flux bootstrap's names
        parse_object(
            {
                **o.model_dump(exclude_none=True),
                "metadata": {"name": "flux-system", "namespace": "flux-system"},
            }
        )
        for o in root(repo, path="clusters/dev")
    ]
    own[1] = parse_object(
        {
            **own[1].model_dump(exclude_none=True),
            "spec": {
                **own[1].model_dump(exclude_none=True)["spec"],
                "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
            },
        }
    )
    g = GitOps(store, FolderFetcher(), bootstrap=own, clock=Clock().now)
    await g.reconcile_once()
    for key in ("flux-system/flux-system", "flux-system/apps"):
        assert cond.is_ready(g.state("Kustomization", key)), g.state("Kustomization", key)
    assert [o.key for o in store.list_objects("Workload")] == ["apps/web"]
    assert [o.key for o in store.list_objects("Service")] == ["apps/web"]
    assert store.list_objects("Deployment") == []  # Flux's controllers are not run
    (source,) = store.list_objects("GitRepository")
    assert source.body["spec"]["url"] == str(repo)  # adopted: not replaced by gotk-sync's ssh:// one
    notes = [e.message for e in store.events(kind="Kustomization") if e.reason == "NotRun"]
    assert len([n for n in notes if "Flux's own components" in n]) == 1
    assert len([n for n in notes if "stored, not run on the local platform: Service apps/web" in n]) == 1
    deprecated = [e for e in store.events(kind="Kustomization") if e.reason == "Deprecated"]
    assert [e.message.split(": ", 1)[1] for e in deprecated] == [
        "Kustomization flux-system/apps: apiVersion kustomize.toolkit.fluxcd.io/v1beta2 is deprecated; "
        "use kustomize.toolkit.fluxcd.io/v1"
    ]
    await g.reconcile_once(force=True)  # the same revision again: no second note
    again = [e for e in store.events(kind="Kustomization") if e.reason in ("NotRun", "Deprecated")]
    assert len(again) == len(notes) + 1


# -- the upstream example repositories, read where they lie ---------------------------------------------


async def test_kustomize_helm_example_clusters_build_and_refuse_what_rheostat_cannot_run(
    shared: Path,
) -> None:
    repo = shared / EXAMPLES / "flux2-kustomize-helm-example"
    for cluster in ("staging", "production"):
        boot = await build(repo, f"clusters/{cluster}/flux-system")  # placeholders upstream: nothing to run
        assert boot.objects == []
        with pytest.raises(ManifestErrors) as err:
            await build(repo, f"clusters/{cluster}")
        refused = {(p.obj, p.errors[0].path) for p in err.value.problems}
        assert refused == {
            ("ArtifactGenerator flux-system/flux-system", "kind"),
            ("Kustomization flux-system/apps", "spec.sourceRef.kind"),
            ("Kustomization flux-system/infra-controllers", "spec.sourceRef.kind"),
            ("Kustomization flux-system/infra-configs", "spec.sourceRef.kind"),  # its `patches` are accepted
        }
        text = str(err.value)
        assert "ArtifactGenerator is not supported by Rheostat yet" in text
        assert "ExternalArtifact is not supported by Rheostat yet" in text
        assert "unknown kind" not in text and "Extra inputs" not in text
    staging = await build(repo, "apps/staging")  # Helm's kinds are read since issue 14.3
    assert {"HelmRelease podinfo/podinfo", "HelmRepository podinfo/podinfo"} <= set(staging.files)


async def test_multi_tenancy_clusters_build_and_refuse_impersonation_by_name(shared: Path) -> None:
    repo = shared / EXAMPLES / "flux2-multi-tenancy"
    for cluster in ("staging", "production"):
        assert (await build(repo, f"clusters/{cluster}/flux-system")).objects == []
        with pytest.raises(ManifestErrors) as err:
            await build(repo, f"clusters/{cluster}")
        assert {p.obj for p in err.value.problems} == {
            "Kustomization flux-system/kyverno",
            "Kustomization flux-system/kyverno-policies",
            "Kustomization flux-system/tenants",
        }
        assert all(
            p.errors[0].path == "spec.serviceAccountName"
            and "not supported by Rheostat" in p.errors[0].message
            for p in err.value.problems
        )
    with pytest.raises(ManifestError) as one:
        await build(repo, "infrastructure/kyverno")
    assert "cosign keyless verification is not supported by Rheostat yet" in str(one.value)
    with pytest.raises(ManifestErrors) as tenants:  # ../base/dev-team and a patch file: kustomize's own work
        await build(repo, "tenants/staging")
    dev_team = [p for p in tenants.value.problems if p.obj == "Kustomization apps/dev-team"]
    assert dev_team and "serviceAccountName" in str(dev_team[0])
    assert not any(p.obj.startswith("Namespace") for p in tenants.value.problems)  # a core kind: stored


def test_validate_reads_a_bootstrapped_repository_with_one_note_for_flux(tmp_path: Path) -> None:
    results = validate([fleet(tmp_path)])
    assert [(r.level, r.rule, Path(r.file).name) for r in results] == [
        ("note", "flux-components", "gotk-components.yaml")
    ]
    assert "2 Deployment" in results[0].message


async def test_rheostat_run_follows_a_bootstrapped_git_repository_at_its_cluster_path(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    fleet_repo = fleet(tmp_path / "layout")
    shutil.copytree(fleet_repo, rig.repo, dirs_exist_ok=True)
    write(rig.repo, "apps/kustomization.yaml", "resources: [web.yaml, svc.yaml]\nnamePrefix: shop-\n")
    rig.commit(message="flux bootstrap")
    (rig.repo / "app.yaml").unlink(missing_ok=True)
    server = Server(Settings(repo=rig.repo, data_dir=rig.data, listen_port=rig.api_port, path="clusters/dev"))
    await server.start()
    try:
        store = server.controller.store
        assert [o.key for o in store.list_objects("Workload")] == ["apps/shop-web"]
        assert [o.key for o in store.list_objects("Service")] == ["apps/shop-web"]
        assert store.list_objects("Deployment") == [] and store.list_objects("Namespace") == []
        (repo_obj,) = store.list_objects("GitRepository")
        assert repo_obj.body["spec"]["url"] != "ssh://git@github.com/example/fleet"
        for key in ("flux-system/flux-system", "flux-system/apps"):
            assert cond.is_ready(server.controller.gitops.state("Kustomization", key))
        notes = [e.message for e in store.events(kind="Kustomization") if e.reason == "NotRun"]
        assert sum("Flux's own components are not run" in n for n in notes) == 1
        assert sum("not run on the local platform: Service apps/shop-web" in n for n in notes) == 1
    finally:
        await server.stop()


async def test_deprecated_patch_fields_of_v1beta2_still_patch(tmp_path: Path) -> None:
    write(tmp_path, "apps/a.yaml", workload("a"))
    write(tmp_path, "apps/b.yaml", workload("b"))
    old = parse_object(
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1beta2",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {
                "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                "prune": True,
                "path": "./apps",
                "patchesStrategicMerge": [
                    {
                        "apiVersion": "rheostat.dev/v1alpha1",
                        "kind": "Workload",
                        "metadata": {"name": "a", "namespace": "apps"},
                        "spec": {"replicas": 2},
                    }
                ],
                "patchesJson6902": [
                    {
                        "target": {"kind": "Workload", "name": "b"},
                        "patch": [{"op": "replace", "path": "/spec/replicas", "value": 4}],
                    }
                ],
            },
        }
    )
    assert isinstance(old, Kustomization)
    built = await build(tmp_path, "apps", spec=old.spec)
    replicas = {o.metadata.name: o.model_dump()["spec"]["replicas"] for o in built.objects}
    assert replicas == {"a": 2, "b": 4}


HPA = """apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: apps}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 3
"""

CANARY_ON_DEPLOYMENT = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: apps}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  service: {port: 9898}
  analysis: {interval: 1s, threshold: 2, iterations: 2}
"""


async def test_core_kinds_are_stored_but_a_canary_on_a_deployment_still_fails_the_revision(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    write(repo, "apps/deploy.yaml", DEPLOYMENT)
    write(repo, "apps/hpa.yaml", HPA)
    write(repo, "apps/ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n")
    write(
        repo,
        "apps/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: apps}\ndata: {a: b}\n",
    )
    write(repo, "apps/web.yaml", workload("w"))
    store = Store(":memory:")
    g = GitOps(store, FolderFetcher(), bootstrap=root(repo), clock=Clock().now)
    await g.reconcile_once()
    assert cond.is_ready(g.state("Kustomization", "flux-system/root"))
    stored = sorted(
        f"{k} {o.key}"
        for k in ("Deployment", "HorizontalPodAutoscaler", "Namespace", "ConfigMap")
        for o in store.list_objects(k)
    )
    assert stored == [
        "ConfigMap apps/c",
        "Deployment apps/web",
        "HorizontalPodAutoscaler apps/web",
        "Namespace default/apps",
    ]
    (note,) = [e.message for e in store.events(kind="Kustomization") if e.reason == "NotRun"]
    assert note.endswith(
        "stored, not run on the local platform: ConfigMap apps/c, Deployment apps/web, "
        "HorizontalPodAutoscaler apps/web, Namespace default/apps"
    )
    write(repo, "apps/canary.yaml", CANARY_ON_DEPLOYMENT)
    await g.reconcile_once(force=True)
    ready = cond.condition(g.state("Kustomization", "flux-system/root"), "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "BuildFailed"
    assert "Canary apps/web" in ready["message"] and "Deployment" in ready["message"]
    assert store.list_objects("Canary") == []  # nothing of that revision applied
