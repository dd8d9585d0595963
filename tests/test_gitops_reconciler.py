"""The GitOps reconciler on real folders (and a real kustomize): all or nothing, prune, drift, order, health."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from rheostat.gitops import conditions as cond
from rheostat.gitops.reconciler import GateVerdict, GitOps, Health, Hooks
from rheostat.gitops.sources import FolderFetcher
from rheostat.model.load import Manifest, parse_object
from rheostat.store import Store
from tests.conftest import in_ci


def workload(name: str, ns: str = "apps", version: str = "1", replicas: int = 1) -> str:
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  template: {{command: [app, --port, "{{port}}", --version, "{version}"]}}
"""


def root(url: Path, path: str = "./", **spec: Any) -> list[Manifest]:
    repo = parse_object(
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "root", "namespace": "flux-system"},
            "spec": {"url": str(url), "interval": "1m"},
        }
    )
    ks = parse_object(
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "root", "namespace": "flux-system"},
            "spec": {
                "sourceRef": {"kind": "GitRepository", "name": "root"},
                "path": path,
                "prune": True,
                "interval": "10m",
                **spec,
            },
        }
    )
    return [repo, ks]


class Clock:
    t = 1000.0

    def now(self) -> float:
        return self.t


def engine(tmp: Path, hooks: Hooks | None = None, **spec: Any) -> tuple[GitOps, Store, Path]:
    repo = tmp / "repo"
    repo.mkdir(exist_ok=True)
    store = Store(":memory:")
    return GitOps(store, FolderFetcher(), hooks, bootstrap=root(repo, **spec), clock=Clock().now), store, repo


def keys(store: Store, kind: str = "Workload") -> list[str]:
    return [o.key for o in store.list_objects(kind)]


def ready(g: GitOps, key: str = "flux-system/root") -> dict[str, Any]:
    c = cond.condition(g.state("Kustomization", key), "Ready")
    assert c is not None
    return c


async def test_applies_all_then_prunes_and_keeps_the_last_good_revision_on_a_bad_file(tmp_path: Path) -> None:
    g, store, repo = engine(tmp_path)
    (repo / "a.yaml").write_text(workload("a"))
    (repo / "b.yaml").write_text(workload("b"))
    await g.reconcile_once()
    assert keys(store) == ["apps/a", "apps/b"]
    assert ready(g)["status"] == "True"
    inventory = g.state("Kustomization", "flux-system/root")["inventory"]
    assert inventory == [["Workload", "apps/a"], ["Workload", "apps/b"]]

    (repo / "b.yaml").write_text(workload("b", version="2"))
    (repo / "c.yaml").write_text(workload("c") + "  extra: nope\n")  # one bad file
    await g.reconcile_once(force=True)
    c = ready(g)
    assert (c["status"], c["reason"]) == ("False", "BuildFailed")
    assert "c.yaml" in c["message"] and "Workload apps/c" in c["message"] and "spec.extra" in c["message"]
    assert keys(store) == ["apps/a", "apps/b"]
    assert store.get_object("Workload", "apps/b").body["spec"]["template"]["command"][-1] == "1"  # type: ignore[union-attr]

    (repo / "c.yaml").unlink()
    (repo / "a.yaml").unlink()
    await g.reconcile_once(force=True)
    assert keys(store) == ["apps/b"]
    assert store.get_object("Workload", "apps/b").body["spec"]["template"]["command"][-1] == "2"  # type: ignore[union-attr]
    reasons = [e.reason for e in store.events(kind="Kustomization")]
    assert "Pruned" in reasons and "BuildFailed" in reasons


async def test_prune_false_leaves_removed_objects(tmp_path: Path) -> None:
    g, store, repo = engine(tmp_path, prune=False)
    (repo / "a.yaml").write_text(workload("a"))
    await g.reconcile_once()
    (repo / "a.yaml").unlink()
    (repo / "b.yaml").write_text(workload("b"))
    await g.reconcile_once(force=True)
    assert keys(store) == ["apps/a", "apps/b"]


async def test_drift_is_repaired_with_an_event(tmp_path: Path) -> None:
    g, store, repo = engine(tmp_path)
    (repo / "a.yaml").write_text(workload("a", replicas=2))
    await g.reconcile_once()
    edited = store.get_object("Workload", "apps/a")
    assert edited is not None
    body = edited.body
    body["spec"]["replicas"] = 5  # as if changed through the API
    store.put_object("Workload", "apps/a", body, source=edited.source)
    await g.reconcile_once(force=True)
    after = store.get_object("Workload", "apps/a")
    assert after is not None and after.body["spec"]["replicas"] == 2
    assert [e.reason for e in store.events(kind="Workload", key="apps/a")] == ["DriftRepaired"]


async def test_nested_kustomizations_depends_on_and_cycles(tmp_path: Path) -> None:
    g, store, repo = engine(tmp_path, path="clusters")
    (repo / "clusters").mkdir()
    (repo / "apps").mkdir()
    (repo / "infra").mkdir()
    (repo / "apps" / "a.yaml").write_text(workload("a"))
    (repo / "infra" / "i.yaml").write_text(workload("i", ns="infra"))

    def ks(name: str, path: str, depends: list[str]) -> str:
        deps = "".join(f"\n  - name: {d}" for d in depends) or " []"
        return (
            f"apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}, "
            f"namespace: flux-system}}\nspec:\n  sourceRef: {{kind: GitRepository, name: root}}\n  path: {path}\n"
            f"  prune: true\n  dependsOn:{deps}\n"
        )

    (repo / "clusters" / "k.yaml").write_text(
        ks("apps", "apps", ["infra"]) + "---\n" + ks("infra", "infra", [])
    )
    await g.reconcile_once()  # the root applies the two Kustomizations
    await g.reconcile_once(force=True)  # infra first, then apps
    assert keys(store) == ["apps/a", "infra/i"]
    assert ready(g, "flux-system/apps")["status"] == "True"

    (repo / "clusters" / "k.yaml").write_text(
        ks("apps", "apps", ["infra"]) + "---\n" + ks("infra", "infra", ["apps"])
    )
    await g.reconcile_once(force=True)
    await g.reconcile_once(force=True)
    stalled = cond.condition(g.state("Kustomization", "flux-system/apps"), "Stalled")
    assert stalled is not None and stalled["reason"] == "DependencyCycle"
    assert keys(store) == ["apps/a", "infra/i"]  # nothing lost


async def test_one_object_in_two_kustomizations_is_refused_on_the_second(tmp_path: Path) -> None:
    g, _, repo = engine(tmp_path, path="clusters")
    for d in ("clusters", "one", "two"):
        (repo / d).mkdir()
    (repo / "one" / "a.yaml").write_text(workload("a"))
    (repo / "two" / "a.yaml").write_text(workload("a", version="2"))
    (repo / "clusters" / "k.yaml").write_text(
        "".join(
            f"---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {n}, "
            f"namespace: flux-system}}\nspec: {{sourceRef: {{kind: GitRepository, name: root}}, path: {n}, prune: true}}\n"
            for n in ("one", "two")
        )
    )
    await g.reconcile_once()
    await g.reconcile_once(force=True)
    c = ready(g, "flux-system/two")
    assert c["status"] == "False" and "already managed by Kustomization flux-system/one" in c["message"]


async def test_suspend_target_namespace_and_post_build(tmp_path: Path) -> None:
    g, store, repo = engine(tmp_path, targetNamespace="staging", postBuild={"substitute": {"version": "9"}})
    (repo / "a.yaml").write_text(workload("a", version="${version}"))
    await g.reconcile_once()
    a = store.get_object("Workload", "staging/a")
    assert a is not None and a.body["spec"]["template"]["command"][-1] == "9"
    (repo / "b.yaml").write_text(workload("b", version="${missing}"))
    await g.reconcile_once(force=True)
    assert "${missing} is not set" in ready(g)["message"]


async def test_gate_blocks_a_revision_and_nothing_is_applied(tmp_path: Path) -> None:
    async def gate(objects: list[Manifest], owner: str, revision: str, files: dict[str, str]) -> GateVerdict:
        bad = [o.metadata.name for o in objects if o.metadata.name.startswith("bad")]
        return GateVerdict(not bad, f"{bad} denied")

    g, store, repo = engine(tmp_path, Hooks(gate=gate))
    (repo / "a.yaml").write_text(workload("a"))
    await g.reconcile_once()
    (repo / "bad.yaml").write_text(workload("bad"))
    await g.reconcile_once(force=True)
    assert ready(g)["reason"] == "PolicyViolation"
    assert keys(store) == ["apps/a"]


async def test_wait_holds_ready_until_health_checks_pass(tmp_path: Path) -> None:
    health = {"apps/a": Health(None)}
    g, _, repo = engine(tmp_path, Hooks(health=lambda kind, key: health.get(key, Health(True))), wait=True)
    (repo / "a.yaml").write_text(workload("a"))
    await g.reconcile_once()
    assert ready(g)["status"] == "Unknown"
    await g.reconcile_once()
    assert ready(g)["status"] == "Unknown"
    health["apps/a"] = Health(True)
    await g.reconcile_once()
    assert ready(g)["status"] == "True"
    health["apps/a"] = Health(False, "crash loop")
    (repo / "a.yaml").write_text(workload("a", version="2"))
    await g.reconcile_once(force=True)
    await g.reconcile_once()
    c = ready(g)
    assert (c["status"], c["reason"]) == ("False", "HealthCheckFailed") and "crash loop" in c["message"]


async def test_kustomization_yaml_overlays_are_built_by_real_kustomize(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None and shutil.which("kustomize") is None:
        if in_ci():
            pytest.fail("CI=true but neither kubectl nor kustomize is installed")
        pytest.skip("kubectl or kustomize is needed")
    g, store, repo = engine(tmp_path, path="overlays/prod")
    (repo / "base").mkdir()
    (repo / "overlays" / "prod").mkdir(parents=True)
    (repo / "base" / "w.yaml").write_text(workload("web", replicas=1))
    (repo / "base" / "kustomization.yaml").write_text("resources: [w.yaml]\n")
    (repo / "overlays" / "prod" / "kustomization.yaml").write_text(
        "resources: [../../base]\nnamespace: prod\npatches:\n- target: {kind: Workload, name: web}\n"
        "  patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: 3\n"
    )
    await g.reconcile_once()
    web = store.get_object("Workload", "prod/web")
    assert web is not None and web.body["spec"]["replicas"] == 3


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"url": "git@github.com:org/repo"}, "spec.url", "scp-like"),
        ({"url": "/r", "ref": {"commit": "abc1234"}}, "spec.ref.commit", "pattern"),
        ({"url": "/r", "interval": "soon"}, "spec.interval", "duration"),
        ({"url": "/r", "verify": {"mode": "Always", "secretRef": {"name": "k"}}}, "spec.verify.mode", "HEAD"),
    ],
)
def test_bad_gitrepository_fields_are_named(spec: dict[str, Any], field: str, words: str) -> None:
    from rheostat.model.load import ManifestError

    doc = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": "r", "namespace": "flux-system"},
        "spec": spec,
    }
    with pytest.raises(ManifestError) as info:
        parse_object(doc, "clusters/sources.yaml")
    assert any(e.path == field for e in info.value.errors), info.value.errors
    assert words in str(info.value) and str(info.value).startswith("clusters/sources.yaml: GitRepository")


def test_a_kustomization_path_leaving_the_source_is_refused() -> None:
    from rheostat.model.load import ManifestError

    doc = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "k", "namespace": "flux-system"},
        "spec": {"sourceRef": {"kind": "GitRepository", "name": "r"}, "path": "../etc", "prune": True},
    }
    with pytest.raises(ManifestError, match=r"spec.path: .*must stay inside the source"):
        parse_object(doc, "k.yaml")
