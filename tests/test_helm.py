"""Helm in the GitOps loop: an HTTP chart repository with basic auth, charts rendered by Helm's Go SDK, real git.

Every bad input names file, object and field, and nothing of it is applied: the last good release runs on."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.gitops import conditions as cond
from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.helm_release import HelmReleases
from rheostat.gitops.reconciler import GitOps
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import parse_object
from rheostat.store import Store
from tests.helm_charts import CONFIG, ChartRepo, Tls, write_chart
from tests.test_gitops_git import Repo

NS = "apps"
HR = f"{NS}/web"


def helm_repository(url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": "charts", "namespace": NS},
        "spec": {"url": url, "interval": "1h", "secretRef": {"name": "chart-auth"}, **spec},
    }


def helm_release(version: str = "1.x", api: str = "v2", name: str = "web", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"helm.toolkit.fluxcd.io/{api}",
        "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "interval": "1h",
            "chart": {
                "spec": {
                    "chart": "app",
                    "version": version,
                    "sourceRef": {"kind": "HelmRepository", "name": "charts"},
                }
            },
            **spec,
        },
    }


class World:
    """A Git repository applied by one Kustomization, a store, and the Helm engine with the test's secrets."""

    def __init__(self, tmp: Path, *, wait: bool = False, path: str = "./deploy") -> None:
        self.repo = Repo(tmp / "git")
        self.secrets: dict[tuple[str, str], dict[str, str]] = {
            (NS, "chart-auth"): {"username": "helm", "password": "s3cret-pw"}
        }
        self.store = Store(":memory:")
        boot = [
            parse_object(
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "GitRepository",
                    "metadata": {"name": "flux-system", "namespace": "flux-system"},
                    "spec": {"url": str(self.repo.origin), "interval": "1h", "ref": {"branch": "main"}},
                }
            ),
            parse_object(
                {
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                    "kind": "Kustomization",
                    "metadata": {"name": "flux-system", "namespace": "flux-system"},
                    "spec": {
                        "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                        "prune": True,
                        "interval": "1h",
                        "path": path,
                        "wait": wait,
                    },
                }
            ),
        ]
        lookup = lambda ns, n: self.secrets.get((ns, n))  # noqa: E731
        self.gitops = GitOps(self.store, SourceFetchers(GitFetcher(tmp / "work", lookup)), bootstrap=boot)
        self.cache = tmp / "charts"
        self.restart()

    def restart(self) -> None:
        """A new Helm engine on the same store: nothing kept in memory, the chart cache on disk stays."""
        self.helm = HelmReleases(self.gitops, lambda ns, n: self.secrets.get((ns, n)), self.cache)
        self.gitops.helm = self.helm

    def commit(self, files: dict[str, Any], message: str = "change") -> None:
        texts = {
            f"deploy/{name}" if not name.startswith("charts/") else name: (
                v if isinstance(v, str) else yaml.safe_dump_all(v if isinstance(v, list) else [v])
            )
            for name, v in files.items()
        }
        self.repo.commit(texts, message)
        self.repo.git("branch", "-M", "main")
        self.repo.push("main")

    async def sync(self) -> None:
        await self.gitops.reconcile_once(force=True)

    def state(self, key: str = HR) -> dict[str, Any]:
        return self.gitops.state("HelmRelease", key)

    def ready(self, key: str = HR) -> dict[str, Any]:
        c = cond.condition(self.state(key), "Ready")
        assert c is not None, self.state(key)
        return c

    def config(self, name: str = "web-app") -> dict[str, Any]:
        stored = self.store.get_object("ConfigMap", f"{NS}/{name}")
        assert stored is not None, [o.key for o in self.store.list_objects("ConfigMap")]
        return dict(stored.body["data"])


async def test_a_release_from_an_http_chart_repository_with_basic_auth(tmp_path: Path) -> None:
    w = World(tmp_path)
    with ChartRepo(tmp_path / "served") as charts:
        charts.publish(write_chart(tmp_path / "c1", version="1.0.0"))
        charts.publish(write_chart(tmp_path / "c2", version="1.2.0"))
        charts.publish(write_chart(tmp_path / "c3", version="2.0.0"))
        w.commit(
            {
                "repo.yaml": helm_repository(charts.url),
                "hr.yaml": helm_release("~1.0 || ^1.1", values={"greeting": "hi"}),
            }
        )
        await w.sync()
        assert w.ready()["status"] == "True", w.ready()
        assert w.ready()["reason"] == "InstallSucceeded"
        assert "apps/web.v1 with chart app@1.2.0" in w.ready()["message"]
        # values: the chart's defaults under the release's; Sprig's upper; the subchart rendered too
        assert w.config() == {"greeting": "HI", "tier": "web", "replicas": "1"}
        extras = w.store.get_object("ConfigMap", f"{NS}/web-extras")
        assert extras is not None and extras.body["data"]["note"] == "from the subchart"
        history = w.state()["history"]
        assert [(h["version"], h["chartVersion"], h["status"]) for h in history] == [(1, "1.2.0", "deployed")]
        digest = hashlib.sha256((charts.root / "app-1.2.0.tgz").read_bytes()).hexdigest()
        assert history[0]["digest"].startswith("sha256:") and history[0]["configDigest"].startswith("sha256:")
        repo_state = w.gitops.state("HelmRepository", f"{NS}/charts")
        assert cond.is_ready(repo_state)
        owner = w.store.get_object("ConfigMap", f"{NS}/web-app")
        assert owner is not None and owner.source == "HelmRelease apps/web@1.2.0"

        # the same chart and values: nothing is fetched or rendered again
        downloads, renders = w.helm.repos.downloads, w.helm.renders
        await w.sync()
        await w.sync()
        assert (w.helm.repos.downloads, w.helm.renders) == (downloads, renders)

        # after a restart, a values change in a commit is an upgrade: the chart comes from the disk cache
        w.restart()
        w.commit({"hr.yaml": helm_release("~1.0 || ^1.1", values={"greeting": "bonjour", "replicas": 3})})
        await w.sync()
        assert w.ready()["reason"] == "UpgradeSucceeded"
        assert w.config()["greeting"] == "BONJOUR" and w.helm.repos.downloads == 0
        assert [p.name for p in w.cache.iterdir()] == [f"{digest}.tgz"]
        assert [(h["version"], h["status"]) for h in w.state()["history"]] == [
            (2, "deployed"),
            (1, "superseded"),
        ]

        # removed from Git: the Kustomization prunes the HelmRelease and the release is uninstalled
        w.commit({"hr.yaml": []})
        w.repo.git("rm", "-q", "deploy/hr.yaml")
        w.repo.git("commit", "-q", "-m", "remove")
        w.repo.push("main")
        await w.sync()
        assert w.store.get_object("ConfigMap", f"{NS}/web-app") is None
        assert "UninstallSucceeded" in [e.reason for e in w.store.events(kind="HelmRelease")]
    w.store.close()


async def test_a_repository_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    w = World(tmp_path)
    tls = Tls(tmp_path / "tls")
    w.secrets[(NS, "chart-tls")] = tls.secret
    with ChartRepo(tmp_path / "served", tls=tls) as charts:
        charts.publish(write_chart(tmp_path / "c1", version="1.0.0"))
        w.commit({"repo.yaml": helm_repository(charts.url), "hr.yaml": helm_release()})
        await w.sync()
        ready = w.ready()
        # the test CA is not trusted without certSecretRef
        assert ready["status"] == "False" and "spec.url" in ready["message"], ready
        assert "CERTIFICATE_VERIFY_FAILED" in ready["message"] or "certificate" in ready["message"].lower()
        w.commit({"repo.yaml": helm_repository(charts.url, certSecretRef={"name": "chart-tls"})})
        await w.sync()
        assert w.ready()["status"] == "True", w.ready()
        assert w.config()["greeting"] == "HELLO"
    assert tls.secret["tls.key"] not in str(w.store.events())
    assert not leftover_keys()  # the client key was on disk only while ssl read it
    w.store.close()


def leftover_keys() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob("rheostat-tls-*"))


async def test_wrong_credentials_and_a_repository_down_keep_the_last_release(tmp_path: Path) -> None:
    w = World(tmp_path)
    with ChartRepo(tmp_path / "served") as charts:
        charts.publish(write_chart(tmp_path / "c1", version="1.0.0"))
        w.commit({"repo.yaml": helm_repository(charts.url), "hr.yaml": helm_release()})
        await w.sync()
        assert w.ready()["status"] == "True"
        charts.publish(
            write_chart(tmp_path / "c2", version="1.1.0", values={"replicas": 1, "greeting": "new"})
        )
        charts.down()
        w.commit({"hr.yaml": helm_release(values={"tier": "db"})})
        await w.sync()
        repo_ready = cond.condition(w.gitops.state("HelmRepository", f"{NS}/charts"), "Ready")
        assert (
            repo_ready is not None and repo_ready["status"] == "False" and "spec.url" in repo_ready["message"]
        )
        # Flux's semantics: the index fetched last stays the repository's artifact, so the release went on
        assert w.config()["tier"] == "db"
        w.restart()  # no index or chart kept in memory
        shutil.rmtree(w.cache)  # nor on disk
        w.commit({"hr.yaml": helm_release(values={"tier": "web2"})})
        await w.sync()
    ready = w.ready()
    assert (ready["status"], ready["reason"]) == ("False", "ArtifactFailed")
    assert "HelmRelease apps/web" in ready["message"] and "spec.url" in ready["message"], ready
    message = ready["message"]
    assert "All connection attempts failed" in message and "the last good release keeps running" in message
    assert "ConnectError" not in message  # said in words, not Python's class name
    assert w.config()["tier"] == "db"  # nothing of the new revision was applied

    w.secrets[(NS, "chart-auth")] = {"username": "helm", "password": "wrong"}
    with ChartRepo(tmp_path / "served", port=charts.port):  # up again, but the password is wrong
        w.commit({"hr.yaml": helm_release(values={"tier": "cache"})})
        await w.sync()
        ready = w.ready()
        assert "secretRef" in ready["message"] and "401" in ready["message"], ready
        assert "wrong" not in ready["message"] and all("wrong" not in e.message for e in w.store.events())
    assert w.config()["tier"] == "db"
    w.store.close()


async def test_bad_charts_and_values_name_file_object_and_field_and_apply_nothing(tmp_path: Path) -> None:
    w = World(tmp_path)
    with ChartRepo(tmp_path / "served") as charts:
        charts.publish(write_chart(tmp_path / "c1", version="1.0.0"))
        w.commit({"repo.yaml": helm_repository(charts.url), "hr.yaml": helm_release()})
        await w.sync()
        assert w.ready()["status"] == "True"

        # values that fail values.schema.json
        w.commit({"hr.yaml": helm_release(values={"replicas": 0}, upgrade={"remediation": {"retries": 1}})})
        await w.sync()
        ready = w.ready()
        assert (ready["status"], ready["reason"]) == ("False", "UpgradeFailed"), ready
        assert "HelmRelease apps/web spec.values" in ready["message"] and "/replicas" in ready["message"]
        remediated = cond.condition(w.state(), "Remediated")
        assert (
            remediated is not None and "release v1 (chart app@1.0.0) keeps running" in remediated["message"]
        )
        assert w.config()["replicas"] == "1"
        await w.sync()  # a retry: fails again, and the retries are spent
        stalled = cond.condition(w.state(), "Stalled")
        assert stalled is not None and stalled["reason"] == "RetriesExceeded", w.state()["conditions"]

        # a chart that does not render
        broken = {"config.yaml": CONFIG, "bad.yaml": "a: {{ .Values.nothing.here }}\n"}
        charts.publish(write_chart(tmp_path / "c2", version="1.1.0", templates=broken))
        w.commit({"hr.yaml": helm_release(values={"tier": "x"})})
        await w.sync()
        ready = w.ready()
        assert "app/templates/bad.yaml" in ready["message"] and "spec.chart" in ready["message"], ready
        assert "nil pointer" in ready["message"]
        assert w.config()["tier"] == "web"

        # a version range nothing matches
        w.commit({"hr.yaml": helm_release("5.x", values={"tier": "x"})})
        await w.sync()
        ready = w.ready()
        assert "spec.chart.spec.version" in ready["message"] and "'5.x'" in ready["message"], ready
        assert "1.1.0" in ready["message"]

        # a rendered object Rheostat refuses: the template file and the field
        wrong = {
            "config.yaml": CONFIG,
            "canary.yaml": (
                "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: c}\n"
                "spec: {targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: w}, bogus: 1}\n"
            ),
        }
        charts.publish(write_chart(tmp_path / "c3", version="1.2.0", templates=wrong))
        w.commit({"hr.yaml": helm_release(values={"tier": "y"})})
        await w.sync()
        ready = w.ready()
        assert "app/templates/canary.yaml" in ready["message"] and "Canary apps/c" in ready["message"], ready
        assert "bogus" in ready["message"]
        assert w.store.get_object("Canary", f"{NS}/c") is None and w.config()["tier"] == "web"
    w.store.close()


async def test_values_from_config_maps_and_secrets_in_fluxs_order(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.secrets[(NS, "web-secret")] = {"values.yaml": "greeting: from-secret\n", "tier": "secret-tier"}
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "web-values", "namespace": NS},
        "data": {"values.yaml": "greeting: from-configmap\nreplicas: 2\n", "custom": "tier: cm-tier\n"},
    }
    with ChartRepo(tmp_path / "served") as charts:
        charts.publish(write_chart(tmp_path / "c1", version="1.0.0"))
        values_from = [
            {"kind": "ConfigMap", "name": "web-values"},
            {"kind": "Secret", "name": "web-secret"},
            {"kind": "ConfigMap", "name": "web-values", "valuesKey": "custom"},
            {"kind": "Secret", "name": "web-secret", "valuesKey": "tier", "targetPath": "tier"},
            {"kind": "ConfigMap", "name": "absent", "optional": True},
        ]
        w.commit(
            {
                "repo.yaml": helm_repository(charts.url),
                "cm.yaml": config_map,
                "hr.yaml": helm_release(valuesFrom=values_from, values={"replicas": 4}),
            }
        )
        await w.sync()
        assert w.ready()["status"] == "True", w.ready()
        # later entries win, targetPath sets one value, spec.values come last
        assert w.config() == {"greeting": "FROM-SECRET", "tier": "secret-tier", "replicas": "4"}

        # a Secret's value that fails the chart's schema: the message never quotes it
        w.secrets[(NS, "web-secret")] = {"values.yaml": "greeting: from-secret\n", "tier": "Sup3r-S3cret!"}
        w.commit({"hr.yaml": helm_release(valuesFrom=values_from, values={"replicas": 5})})
        await w.sync()
        ready = w.ready()
        assert ready["status"] == "False" and "/tier" in ready["message"], ready
        assert "Sup3r-S3cret!" not in str(w.state()) and all(
            "Sup3r" not in e.message for e in w.store.events()
        )
        assert w.config()["replicas"] == "4"

        # a changed Secret is picked up without waiting for the interval (an unforced pass)
        w.secrets[(NS, "web-secret")] = {"values.yaml": "greeting: from-secret\n", "tier": "gold"}
        await w.gitops.reconcile_once()
        assert w.config()["tier"] == "gold" and w.ready()["status"] == "True"
        renders = w.helm.renders
        await w.gitops.reconcile_once()
        assert w.helm.renders == renders

        missing = [*values_from[:1], {"kind": "ConfigMap", "name": "web-values", "valuesKey": "nope"}]
        w.commit({"hr.yaml": helm_release(valuesFrom=missing)})
        await w.sync()
        ready = w.ready()
        assert (ready["status"], ready["reason"]) == ("False", "InitFailed")
        assert "HelmRelease apps/web spec.valuesFrom[1].valuesKey" in ready["message"]
        assert "has no key 'nope'" in ready["message"]
        assert w.config()["tier"] == "gold"  # the last good release
        assert all("from-secret" not in e.message.lower() for e in w.store.events())
    w.store.close()


async def test_a_chart_kept_in_git_with_post_renderers_and_drift_repair(tmp_path: Path) -> None:
    w = World(tmp_path)
    chart_dir = write_chart(tmp_path / "src", version="0.3.0")
    files = {str(p.relative_to(tmp_path / "src")): p.read_text() for p in chart_dir.rglob("*") if p.is_file()}
    w.repo.commit({f"charts/{k}": v for k, v in files.items()}, "chart")
    release: dict[str, Any] = {
        "apiVersion": "helm.toolkit.fluxcd.io/v2beta1",
        "kind": "HelmRelease",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "interval": "1h",
            "chart": {
                "spec": {
                    "chart": "charts/app",
                    "reconcileStrategy": "Revision",
                    "sourceRef": {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"},
                }
            },
            "driftDetection": {"mode": "enabled"},
            "postRenderers": [
                {
                    "kustomize": {
                        "patches": [
                            {
                                "target": {"kind": "ConfigMap", "name": "web-app"},
                                "patch": "- op: add\n  path: /data/patched\n  value: by-kustomize\n",
                            }
                        ]
                    }
                }
            ],
        },
    }
    w.commit({"hr.yaml": release})
    await w.sync()
    ready = w.ready()
    assert ready["status"] == "True", ready
    assert w.config()["patched"] == "by-kustomize"
    version = w.state()["history"][0]["chartVersion"]
    assert version.startswith("0.3.0+") and len(version) == len("0.3.0+") + 12
    deprecated = [e.message for e in w.store.events(kind="Kustomization") if e.reason == "Deprecated"]
    assert any(
        "helm.toolkit.fluxcd.io/v2beta1 is deprecated; use helm.toolkit.fluxcd.io/v2" in m for m in deprecated
    )

    # someone changes a rendered object: set back to the release without a render
    renders = w.helm.renders
    body = w.store.get_object("ConfigMap", f"{NS}/web-app")
    assert body is not None
    w.store.put_object(
        "ConfigMap", f"{NS}/web-app", {**body.body, "data": {"greeting": "HACKED"}}, body.source
    )
    w.gitops.request("HelmRelease", HR)
    await w.gitops.reconcile_once()
    assert w.config()["greeting"] == "HELLO" and w.helm.renders == renders
    assert "DriftCorrected" in [e.reason for e in w.store.events(kind="HelmRelease")]

    # driftDetection.mode warn: reported, left as it is
    w.commit({"hr.yaml": {**release, "spec": {**release["spec"], "driftDetection": {"mode": "warn"}}}})
    await w.sync()
    body = w.store.get_object("ConfigMap", f"{NS}/web-app")
    assert body is not None
    w.store.put_object("ConfigMap", f"{NS}/web-app", {**body.body, "data": {"greeting": "HAND"}}, body.source)
    w.gitops.request("HelmRelease", HR)
    await w.gitops.reconcile_once()
    assert w.config()["greeting"] == "HAND"
    assert "DriftDetected" in [e.reason for e in w.store.events(kind="HelmRelease")]
    w.store.close()


def test_helm_kinds_load_and_what_rheostat_does_not_run_is_refused_by_name() -> None:
    from rheostat.model.load import ManifestError

    ok = parse_object(helm_release(api="v2beta2"))
    assert ok.kind == "HelmRelease"
    for doc, where, words in (
        (helm_repository("oci://ghcr.io/x", type="oci"), "spec", "OCI Helm repositories are not supported"),
        (
            {**helm_release(), "spec": {**helm_release()["spec"], "serviceAccountName": "x"}},
            "spec.serviceAccountName",
            "not supported by Rheostat",
        ),
        (
            {
                **helm_release(),
                "spec": {
                    **helm_release()["spec"],
                    "chart": {"spec": {"chart": "a", "sourceRef": {"kind": "Bucket", "name": "b"}}},
                },
            },
            "spec.chart.spec.sourceRef.kind",
            "Bucket sources are not supported",
        ),
        (
            {
                **helm_release(),
                "spec": {**helm_release()["spec"], "install": {"disableSchemaValidation": True}},
            },
            "spec.install.disableSchemaValidation",
            "checks values.schema.json on every render",
        ),
        (
            {
                **helm_release(),
                "spec": {**helm_release()["spec"], "driftDetection": {"ignore": [{"paths": ["/x"]}]}},
            },
            "spec.driftDetection.ignore",
            "not supported by Rheostat",
        ),
        (helm_release(api="v3"), "apiVersion", "Flux serves helm.toolkit.fluxcd.io/v2"),
    ):
        with pytest.raises(ManifestError) as err:
            parse_object(doc)
        assert where in str(err.value) and words in str(err.value), str(err.value)


async def test_a_helm_chart_object_chart_ref_and_depends_on(tmp_path: Path) -> None:
    w = World(tmp_path)
    chart: dict[str, Any] = {
        "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
        "kind": "HelmChart",
        "metadata": {"name": "app", "namespace": NS},
        "spec": {
            "chart": "app",
            "version": "1.0.x",
            "valuesFiles": ["values.yaml", "values-prod.yaml"],
            "sourceRef": {"kind": "HelmRepository", "name": "charts"},
            "interval": "1h",
        },
    }
    db = {
        **helm_release(name="db"),
        "spec": {"interval": "1h", "chartRef": {"kind": "HelmChart", "name": "app"}},
    }
    web = helm_release(dependsOn=[{"name": "db"}], values={"tier": "front"})
    with ChartRepo(tmp_path / "served") as charts:
        src = write_chart(tmp_path / "c1", version="1.0.3")
        (src / "values-prod.yaml").write_text("greeting: prod\nreplicas: 3\n")
        charts.publish(src)
        w.commit(
            {"repo.yaml": helm_repository(charts.url), "chart.yaml": chart, "db.yaml": db, "web.yaml": web}
        )
        await w.sync()
        chart_state = w.gitops.state("HelmChart", f"{NS}/app")
        assert cond.is_ready(chart_state) and chart_state["artifact"]["revision"] == "1.0.3"
        assert w.ready(f"{NS}/db")["status"] == "True", w.ready(f"{NS}/db")
        # the chart's valuesFiles merged in order
        assert w.config("db-app") == {"greeting": "PROD", "tier": "web", "replicas": "3"}
        assert w.ready()["status"] == "True"

        # db fails (a values file that is not there): web, which depends on it, waits
        broken = {**chart, "spec": {**chart["spec"], "valuesFiles": ["values-nope.yaml"]}}
        w.commit(
            {"chart.yaml": broken, "web.yaml": helm_release(dependsOn=[{"name": "db"}], values={"tier": "x"})}
        )
        await w.sync()
        ready = w.ready(f"{NS}/db")
        assert ready["status"] == "False" and "HelmChart apps/app spec.valuesFiles" in ready["message"], ready
        assert "values-nope.yaml" in ready["message"]
        assert w.ready()["reason"] == "DependencyNotReady" and w.config()["tier"] == "front"
    w.store.close()


async def test_a_kustomization_that_waits_waits_for_its_helm_releases(tmp_path: Path) -> None:
    w = World(tmp_path, wait=True)
    root = "flux-system/flux-system"
    with ChartRepo(tmp_path / "served") as charts:
        charts.publish(write_chart(tmp_path / "c1", version="1.0.0"))
        bad = helm_release(values={"replicas": 0}, install={"remediation": {"retries": 0}})
        w.commit({"repo.yaml": helm_repository(charts.url), "hr.yaml": bad})
        await w.sync()
        await w.gitops.reconcile_once()  # not forced: the Kustomization only looks at its health
        assert cond.condition(w.state(), "Stalled") is not None
        ks = cond.condition(w.gitops.state("Kustomization", root), "Ready")
        assert ks is not None and (ks["status"], ks["reason"]) == ("False", "HealthCheckFailed"), ks
        assert "HelmRelease/apps/web" in ks["message"] and "/replicas" in ks["message"]

        w.commit({"hr.yaml": helm_release()})
        await w.sync()
        await w.gitops.reconcile_once()
        assert w.ready()["status"] == "True"
        ks = cond.condition(w.gitops.state("Kustomization", root), "Ready")
        assert ks is not None and ks["status"] == "True", ks
    w.store.close()


PODINFO = {
    "deployment.yaml": (
        'apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ include "app.fullname" . }}\n'
        "spec:\n  replicas: {{ .Values.replicaCount }}\n  template:\n    spec:\n      containers:\n"
        '      - name: podinfo\n        image: {{ printf "%s:%s" .Values.image.repository '
        "(.Values.image.tag | default .Chart.AppVersion) }}\n"
    ),
    "routes.yaml": (
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-routes\ndata:\n"
        '  hostnames: {{ .Values.httpRoute.hostnames | join "," | quote }}\n'
        '  redis: {{ ternary "on" "off" .Values.redis.enabled | quote }}\n'
    ),
}


async def test_the_kustomize_helm_example_layout_reconciles_with_its_chart_served_here(
    tmp_path: Path, shared: Path
) -> None:
    """flux2-kustomize-helm-example's apps/staging as committed upstream, the podinfo HelmRepository pointed at
    a chart written here (no network): kustomize patches the HelmRelease, Helm renders it, a commit upgrades."""
    example = shared / "testdata/flux-examples/flux2-kustomize-helm-example/apps"
    files = {f"apps/{p.relative_to(example)}": p.read_text() for p in example.rglob("*") if p.is_file()}
    w = World(tmp_path, path="./apps/staging")
    values = {
        "replicaCount": 1,
        "image": {"repository": "ghcr.io/stefanprodan/podinfo", "tag": ""},
        "httpRoute": {"enabled": False, "hostnames": []},
        "redis": {"enabled": False},
    }
    with ChartRepo(tmp_path / "served", user="") as charts:
        charts.publish(
            write_chart(
                tmp_path / "c",
                "podinfo",
                "6.5.4",
                templates=PODINFO,
                values=values,
                dependency=False,
                schema=False,
            )
        )
        upstream = "https://stefanprodan.github.io/podinfo"
        assert upstream in files["apps/base/podinfo/repository.yaml"]
        files["apps/base/podinfo/repository.yaml"] = files["apps/base/podinfo/repository.yaml"].replace(
            upstream, charts.url
        )
        w.repo.commit(files, "the example's apps")
        w.repo.git("branch", "-M", "main")
        w.repo.push("main")
        await w.sync()
        key = "podinfo/podinfo"
        assert w.ready(key)["status"] == "True", w.ready(key)
        routes = w.store.get_object("ConfigMap", "podinfo/podinfo-routes")
        assert routes is not None and routes.body["data"] == {"hostnames": "podinfo.staging", "redis": "on"}
        deployment = w.store.get_object("Deployment", "podinfo/podinfo-podinfo")
        assert deployment is not None
        assert deployment.body["spec"]["template"]["spec"]["containers"][0]["image"].endswith("podinfo:6.5.4")

        staging = files["apps/staging/podinfo-values.yaml"] + "    replicaCount: 2\n"
        w.repo.commit({"apps/staging/podinfo-values.yaml": staging}, "two replicas")
        w.repo.push("main")
        await w.sync()
        deployment = w.store.get_object("Deployment", "podinfo/podinfo-podinfo")
        assert deployment is not None and deployment.body["spec"]["replicas"] == 2
        assert [h["status"] for h in w.state(key)["history"]] == ["deployed", "superseded"]
    w.store.close()
