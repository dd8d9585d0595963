"""postBuild.substituteFrom with real git and the reconciler; Flux's Kustomization fields through a real build."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.gitops import conditions as cond
from rheostat.gitops.build import BuildError, build
from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import GitOps, Hooks
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.gitops import KustomizationSpec
from rheostat.model.load import parse_object
from rheostat.store import Store
from rheostat.store.port import State
from tests.processes import missing
from tests.sops_kit import age_key, encrypt, secret_yaml
from tests.test_gitops_e2e import kustomization, source
from tests.test_gitops_git import Repo

APP = (
    "apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {name: w, namespace: apps}\n"
    "spec: {template: {command: [app, --port, '{port}', --greeting, '${GREETING}', --colour, '${COLOUR}',"
    " --size, '${SIZE:=small}', --token, '${TOKEN}']}}\n"
)
VARS = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vars, namespace: flux-system}\ndata: {GREETING: hi, COLOUR: red}\n"
MORE = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: more, namespace: flux-system}\ndata: {COLOUR: blue}\n"
)


def args_of(store: State) -> list[str]:
    w = store.get_object("Workload", "apps/w")
    assert w is not None
    cmd = w.body["spec"]["template"]["command"]
    return [str(c) for c in cmd[4::2]]


def app_ks(substitute_from: list[dict[str, Any]], substitute: dict[str, str] | None = None) -> dict[str, Any]:
    ks = kustomization("app", "repo", "app")
    ks["spec"]["dependsOn"] = [{"name": "vars"}]
    ks["spec"]["postBuild"] = {"substituteFrom": substitute_from, "substitute": substitute or {}}
    return ks


def world(
    tmp_path: Path, files: dict[str, str], app: dict[str, Any], secrets: dict[tuple[str, str], dict[str, str]]
) -> tuple[Repo, GitOps, Store]:
    origin = Repo(tmp_path / "repo")
    origin.commit(files, "first")
    origin.git("branch", "-M", "main")
    origin.push("main")
    store = Store(":memory:")
    vars_ks = kustomization("vars", "repo", "vars")
    vars_ks["spec"]["decryption"] = {"provider": "sops", "secretRef": {"name": "sops-age"}}
    boot = [parse_object(d) for d in (source("repo", str(origin.origin)), vars_ks, app)]
    look = lambda ns, n: secrets.get((ns, n))  # noqa: E731
    g = GitOps(
        store, SourceFetchers(GitFetcher(tmp_path / "work", look)), Hooks(secrets=look), bootstrap=boot
    )
    return origin, g, store


def ready(g: GitOps, name: str = "app") -> dict[str, Any]:
    found = cond.condition(g.state("Kustomization", f"flux-system/{name}"), "Ready")
    assert found is not None
    return found


async def test_variables_from_configmaps_secret_files_and_sops_secrets_in_flux_order(tmp_path: Path) -> None:
    key = age_key()
    files = {
        "vars/vars.yaml": VARS,
        "vars/more.yaml": MORE,
        "vars/token.yaml": encrypt(secret_yaml("token", "flux-system", TOKEN="t0k3n"), key),
        "app/w.yaml": APP,
    }
    secrets = {
        ("flux-system", "sops-age"): {"age.agekey": key.secret},
        ("flux-system", "site"): {"SIZE": "large", "COLOUR": "green"},
    }
    app = app_ks(
        [
            {"kind": "ConfigMap", "name": "vars"},
            {"kind": "Secret", "name": "site", "optional": True},  # a secret file of Rheostat's
            {"kind": "ConfigMap", "name": "more"},  # later entries win: COLOUR blue
            {"kind": "Secret", "name": "token"},  # decrypted from Git, held in memory
            {"kind": "ConfigMap", "name": "absent", "optional": True},
        ],
        {"GREETING": "hello"},  # substitute wins over substituteFrom
    )
    origin, g, store = world(tmp_path, files, app, secrets)
    await g.reconcile_once()
    await g.reconcile_once(force=True)
    assert ready(g)["status"] == "True", ready(g)
    assert args_of(store) == ["hello", "blue", "large", "t0k3n"]

    del secrets[("flux-system", "site")]  # ${SIZE:=small} takes its default
    origin.commit({"vars/more.yaml": MORE.replace("blue", "cyan")}, "cyan")
    origin.push("main")
    await g.reconcile_once(force=True)
    await g.reconcile_once(force=True)
    assert args_of(store) == ["hello", "cyan", "small", "t0k3n"], (ready(g), ready(g, "vars"))


async def test_a_missing_source_of_variables_refuses_the_revision_by_field(tmp_path: Path) -> None:
    app = app_ks([{"kind": "ConfigMap", "name": "vars"}, {"kind": "Secret", "name": "nowhere"}])
    files = {
        "vars/vars.yaml": VARS,
        "app/w.yaml": APP.replace("${TOKEN}", "x").replace("${SIZE:=small}", "s"),
    }
    _, g, store = world(tmp_path, files, app, {("flux-system", "sops-age"): {"age.agekey": age_key().secret}})
    await g.reconcile_once()
    await g.reconcile_once(force=True)
    found = ready(g)
    assert found["reason"] == "BuildFailed"
    assert "spec.postBuild.substituteFrom[1]: Secret flux-system/nowhere not found" in found["message"]
    assert store.get_object("Workload", "apps/w") is None


async def test_defaults_and_the_disabled_opt_out(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\n"
        "data: {x: '${X:=fallback}', y: '${Y}'}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw\n  namespace: apps\n  annotations:\n"
        "    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata: {x: '${X}'}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: raw2\n  namespace: apps\n  labels:\n"
        "    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata: {x: '${NOT_SET}'}\n"
    )
    built = await build(tmp_path, "p", variables={"Y": "why"})
    data = {o.metadata.name: o.model_dump()["data"] for o in built.objects}
    assert data == {"a": {"x": "fallback", "y": "why"}, "raw": {"x": "${X}"}, "raw2": {"x": "${NOT_SET}"}}
    with pytest.raises(BuildError, match=r"variable \$\{Y\} is not set"):
        await build(tmp_path, "p", variables={})


def kustomize_or_skip() -> None:
    if shutil.which("kustomize") is None and shutil.which("kubectl") is None:
        missing("kubectl (or kustomize) is not installed: the build needs a real kustomize")


async def test_flux_kustomization_fields_through_a_real_kustomize(tmp_path: Path) -> None:
    kustomize_or_skip()
    base = tmp_path / "app"
    (base / "comp").mkdir(parents=True)
    (base / "w.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: apps}\n"
        "spec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n"
        "    metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: ghcr.io/podinfo:6.0.0}]}\n"
    )
    (base / "kustomization.yaml").write_text("resources: [w.yaml]\n")
    (base / "comp" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [extra.yaml]\n"
    )
    (base / "comp" / "extra.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: apps}\ndata: {k: v}\n"
    )
    spec = KustomizationSpec.model_validate(
        {
            "sourceRef": {"kind": "GitRepository", "name": "x"},
            "prune": True,
            "path": "app",
            "namePrefix": "pre-",
            "nameSuffix": "-suf",
            "images": [{"name": "ghcr.io/podinfo", "newTag": "6.1.0"}],
            "patches": [
                {
                    "patch": '[{"op": "replace", "path": "/spec/replicas", "value": 3}]',
                    "target": {"kind": "Deployment"},
                }
            ],
            "components": ["comp"],
            "commonMetadata": {"labels": {"team": "a"}, "annotations": {"owner": "ops"}},
        }
    )
    built = await build(tmp_path, "app", spec=spec)
    by_kind = {o.kind: o.model_dump(by_alias=True) for o in built.objects}
    dep, cm = by_kind["Deployment"], by_kind["ConfigMap"]
    assert dep["metadata"]["name"] == "pre-web-suf" and cm["metadata"]["name"] == "pre-extra-suf"
    assert dep["spec"]["replicas"] == 3
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/podinfo:6.1.0"
    for obj in (dep, cm):
        assert obj["metadata"]["labels"]["team"] == "a" and obj["metadata"]["annotations"]["owner"] == "ops"
    assert yaml.safe_dump(cm)  # a plain document, as stored
