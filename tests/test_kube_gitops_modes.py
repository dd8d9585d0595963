"""The two modes with the real `rheostat run`: `--repo` with `--kubeconfig` applies Git into the cluster;
without `--repo`, Flux's own Kustomizations are shown read-only and actions on them are refused."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rheostat.plugins.kube import kinds
from rheostat.reactor.cluster_gitops import KUSTOMIZATION_KIND
from tests import kubeapi
from tests.kube_e2e_world import RHEOSTAT, Controller, kubeconfig_for, running
from tests.kube_gitops_world import files, install
from tests.kubeapi import KubeServer
from tests.test_gitops_git import Repo

kube_server = kubeapi.kube_server  # the fixture, made visible here
NO_PROMETHEUS = "http://127.0.0.1:9"  # builtin checks are not run by these tests


async def until(what: Callable[[], Any], timeout: float = 60.0) -> Any:
    for _ in range(int(timeout / 0.1)):
        if found := what():
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


class RepoController(Controller):
    """`rheostat run --repo R --kubeconfig K --path ./clusters`."""

    repo: Path | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        assert RHEOSTAT is not None and self.repo is not None
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "run.out", "wb") as out, open(self.logs / "run.err", "wb") as err:
            return subprocess.Popen(
                [
                    RHEOSTAT,
                    "run",
                    "--repo",
                    str(self.repo),
                    "--path",
                    "./clusters",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--data-dir",
                    str(self.data),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "COLUMNS": "200"},
            )


async def test_run_with_repo_and_kubeconfig_applies_git_into_the_cluster(
    kube_server: KubeServer, tmp_path: Path
) -> None:
    install(kube_server)
    repo = Repo(tmp_path / "repo")
    repo.commit(files(), "first")
    ctl = RepoController(
        kubeconfig_for(kube_server, tmp_path / "kubeconfig"), tmp_path / "data", tmp_path / "logs", ""
    )
    ctl.repo = repo.work
    async with running(ctl):
        await until(lambda: kube_server.object(kinds.SERVICE, "production", "podinfo"))
        assert kube_server.object(kinds.DEPLOYMENT, "production", "podinfo") is not None
        assert kube_server.object(kinds.CANARY, "production", "podinfo") is not None

        def ready() -> Any:
            ks = kube_server.object(KUSTOMIZATION_KIND, "flux-system", "apps") or {}
            return [c for c in (ks.get("status") or {}).get("conditions", []) if c["type"] == "Ready"]

        conditions = await until(ready)
        assert conditions[0]["status"] == "True", conditions
        listed = await ctl.cli("get", "kustomizations", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        assert {"flux-system/apps", "flux-system/flux-system"} <= {
            f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in json.loads(listed.stdout)
        }
    assert "rheostat" in {a.field_manager for a in kube_server.applies}


async def test_without_repo_flux_kustomizations_are_shown_read_only(
    kube_server: KubeServer, tmp_path: Path
) -> None:
    install(kube_server)
    flux_ks = {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": "apps", "namespace": "flux-system"},
        "spec": {
            "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
            "path": "./apps",
            "prune": True,
            "interval": "10m",
        },
    }
    kube_server.add(flux_ks, manager="kustomize-controller")
    kube_server.set_status(
        KUSTOMIZATION_KIND,
        "flux-system",
        "apps",
        {
            "lastAppliedRevision": "main@sha1:0123abc",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "ReconciliationSucceeded",
                    "message": "Applied revision: main@sha1:0123abc",
                    "lastTransitionTime": "2026-12-01T10:00:00Z",
                }
            ],
        },
    )
    ctl = Controller(
        kubeconfig_for(kube_server, tmp_path / "kubeconfig"),
        tmp_path / "data",
        tmp_path / "logs",
        NO_PROMETHEUS,
    )
    async with running(ctl):
        listed = await ctl.cli("get", "kustomizations")
        assert listed.returncode == 0, listed.stderr
        assert "apps" in listed.stdout and "main@sha1:0123abc" in listed.stdout, listed.stdout
        as_json = json.loads((await ctl.cli("get", "kustomizations", "-o", "json")).stdout)
        assert as_json[0]["status"]["readOnly"] == "Flux"
        refused = await ctl.cli("reconcile", "kustomization", "apps", "-n", "flux-system")
        assert refused.returncode != 0
        said = refused.stdout + refused.stderr
        assert "belongs to Flux" in said and "flux reconcile kustomization apps -n flux-system" in said, said
        suspended = await ctl.cli("suspend", "kustomization", "apps", "-n", "flux-system")
        assert suspended.returncode != 0 and "read-only" in suspended.stdout + suspended.stderr
        # a change Flux makes shows up
        kube_server.set_status(
            KUSTOMIZATION_KIND,
            "flux-system",
            "apps",
            {"lastAppliedRevision": "main@sha1:4567def", "conditions": []},
        )
        for _ in range(300):
            if "main@sha1:4567def" in (await ctl.cli("get", "kustomizations")).stdout:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("Flux's new revision was not shown")
    # Rheostat wrote nothing to Flux's object
    assert not [
        c
        for c in kube_server.writes()
        if c.kind == KUSTOMIZATION_KIND and c.params.get("fieldManager") == "rheostat"
    ]
