"""What tests/test_kube_gitops*.py run against: a real Git repository of a Namespace, a Deployment, a Service,
a Canary and a policy, the kmock API server with Flux's, Gatekeeper's and Flagger's kinds installed, and the
GitOps engine applying into it through the real lightkube client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.gate import PolicyGate
from rheostat.gitops.reconciler import KUSTOMIZATION, SOURCE, GitOps, Hooks
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import parse_object
from rheostat.plugins.kube.api import Kind, Obj
from rheostat.plugins.kube.apply import CRD
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.reactor.cluster_gitops import FLUX_KINDS, RECEIVER, ClusterGitOps
from rheostat.store import Store
from tests.kubeapi import KubeServer
from tests.test_gitops_git import Repo

ROOT = "flux-system/flux-system"
APPS = "flux-system/apps"
TEMPLATE = Kind("templates.gatekeeper.sh/v1", "ConstraintTemplate", "constrainttemplates", False, True)
MAX_WEIGHT = Kind(
    "constraints.gatekeeper.sh/v1beta1", "RheostatCanaryMaxWeight", "rheostatcanarymaxweight", False, True
)
POLICY = (Path(__file__).parents[1] / "src/rheostat/policy/library/canary-max-weight.yaml").read_text()


def install(server: KubeServer) -> None:
    """The CRDs a cluster with Flux and Gatekeeper has (Gatekeeper made the constraint's kind already)."""
    for kind in (*FLUX_KINDS, RECEIVER, CRD, TEMPLATE, MAX_WEIGHT):
        server.install(kind)


def deployment(image: str = "ghcr.io/stefanprodan/podinfo:6.7.0", replicas: Any = 2) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "podinfo", "namespace": "production", "labels": {"app": "podinfo"}},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "podinfo"}},
                "template": {
                    "metadata": {"labels": {"app": "podinfo"}},
                    "spec": {"containers": [{"name": "podinfo", "image": image}]},
                },
            },
        }
    )


def service(port: int = 9898) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "podinfo", "namespace": "production"},
            "spec": {"selector": {"app": "podinfo"}, "ports": [{"name": "http", "port": port}]},
        }
    )


def canary(max_weight: int = 50) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "production"},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"interval": "1m", "threshold": 5, "maxWeight": max_weight, "stepWeight": 10},
            },
        }
    )


APPS_KUSTOMIZATION = yaml.safe_dump(
    {
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
)
NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: production}\n"


def files(**changes: str) -> dict[str, str]:
    base = {
        "clusters/apps.yaml": APPS_KUSTOMIZATION,
        "apps/namespace.yaml": NAMESPACE,
        "apps/deployment.yaml": deployment(),
        "apps/service.yaml": service(),
        "apps/canary.yaml": canary(),
        "apps/policy.yaml": POLICY,
    }
    return {**base, **changes}


def root_objects(url: Path) -> list[Any]:
    return [
        parse_object(
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "flux-system", "namespace": "flux-system"},
                "spec": {"url": str(url), "interval": "1m"},
            }
        ),
        parse_object(
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": "flux-system", "namespace": "flux-system"},
                "spec": {
                    "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                    "path": "./clusters",
                    "prune": True,
                    "interval": "10m",
                },
            }
        ),
    ]


@dataclass
class World:
    server: KubeServer
    repo: Repo
    store: Store
    cluster: ClusterGitOps
    api: LightkubeAPI

    @property
    def gitops(self) -> GitOps:
        assert self.cluster.gitops is not None
        return self.cluster.gitops

    def obj(self, kind: Kind, name: str, namespace: str = "production") -> Obj | None:
        return self.server.object(kind, namespace, name)

    async def commit(self, message: str, **changes: str) -> str:
        revision = self.repo.commit(files(**changes), message)
        self.repo.push("main")
        return revision

    async def reconcile(self) -> None:
        """What a new commit or `rheostat reconcile` sets off: fetch, apply, and the statuses written."""
        for kind, key in ((SOURCE, ROOT), (KUSTOMIZATION, ROOT), (KUSTOMIZATION, APPS)):
            self.gitops.request(kind, key)
        await self.gitops.reconcile_once()
        assert self.cluster.status is not None
        await self.cluster.status.flush()

    def state(self, key: str = APPS) -> dict[str, Any]:
        return self.store.get_state(KUSTOMIZATION, key) or {}


@pytest.fixture
async def world(kube_server: KubeServer, kubeconfig: Path, tmp_path: Path) -> AsyncIterator[World]:
    install(kube_server)
    repo = Repo(tmp_path / "repo")
    repo.commit(files(), "first")
    repo.push("main")
    store = Store(tmp_path / "state.db")
    api = LightkubeAPI.from_kubeconfig(str(kubeconfig))
    cluster = ClusterGitOps(
        api,
        store,
        fetcher=SourceFetchers(GitFetcher(tmp_path / "sources", lambda ns, name: None)),
        hooks=Hooks(gate=PolicyGate(store)),
        bootstrap=root_objects(repo.origin),
    )
    world = World(kube_server, repo, store, cluster, api)
    try:
        yield world
    finally:
        await cluster.stop()
        await api.close()
        store.close()
