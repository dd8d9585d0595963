"""Benchmark (issue 13): 1,000 Kustomizations of 10 objects each, from one Git repository into a cluster.

The GitOps engine with the cluster target (server-side apply through the real lightkube client) against the
tests' kmock API server (tests/kubeapi.py), both in this process: the times include the emulated API server's
own work. Measured: the first full reconcile (every object dry-run, then applied; every Kustomization's
status written), a reconcile where nothing changed (target: no write to the API), and one file changed, from
the moment it is asked for (what a receiver or the local watch does) to the object changed in the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kmock
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kube_gitops_world import install
from tests.kubeapi import KubeServer

from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import KUSTOMIZATION, SOURCE, Hooks
from rheostat.gitops.sources import SourceFetchers
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.reactor.cluster_gitops import ClusterGitOps
from rheostat.store import Store

N = 1000
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@x",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@x",
}
ROOT = "flux-system/root"


def app(i: int, image: str = "ghcr.io/stefanprodan/podinfo:6.7.0") -> dict[str, str]:
    """10 objects: a Namespace, 3 Deployments, 3 Services, 2 ConfigMaps and a Canary."""
    ns = f"team-{i}"
    files = {"namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"}
    for w in range(3):
        files[f"deploy-{w}.yaml"] = yaml.safe_dump(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": f"w{w}", "namespace": ns},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": f"w{w}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"w{w}"}},
                        "spec": {"containers": [{"name": "app", "image": image}]},
                    },
                },
            }
        )
        files[f"service-{w}.yaml"] = yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"w{w}", "namespace": ns},
                "spec": {"selector": {"app": f"w{w}"}, "ports": [{"port": 9898}]},
            }
        )
    for c in range(2):
        files[f"config-{c}.yaml"] = (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{c}, namespace: {ns}}}\ndata: {{k: v{c}}}\n"
        )
    files["canary.yaml"] = (
        f"apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: w0, namespace: {ns}}}\nspec:\n"
        f"  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: w0}}\n"
        f"  service: {{port: 9898}}\n  analysis: {{interval: 1m, stepWeight: 10}}\n"
    )
    return files


def kustomizations(n: int) -> str:
    return "".join(
        f"---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
        f"metadata: {{name: app-{i}, namespace: flux-system}}\n"
        f"spec: {{sourceRef: {{kind: GitRepository, name: root}}, path: apps/app-{i}, prune: true, "
        f"interval: 1h}}\n"
        for i in range(n)
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=ENV)


def kubeconfig(server: KubeServer, path: Path) -> Path:
    url = str(server.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": url}}],
                "users": [{"name": "kmock", "user": {"token": "bench"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


def writes(server: KubeServer, since: int = 0) -> Counter[str]:
    return Counter(
        f"{c.verb}{' status' if c.subresource else ''}"
        for c in server.calls[since:]
        if c.verb in ("create", "update", "patch", "delete") and c.params.get("dryRun") != "All"
    )


async def run(n: int) -> dict[str, Any]:
    from bench.gitops_scale import root

    with tempfile.TemporaryDirectory(prefix="rheostat-kube-gitops-bench-") as tmp:
        repo = Path(tmp) / "repo"
        (repo / "clusters").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / "clusters" / "apps.yaml").write_text(kustomizations(n))
        for i in range(n):
            d = repo / "apps" / f"app-{i}"
            d.mkdir(parents=True)
            for name, text in app(i).items():
                (d / name).write_text(text)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"{n} Kustomizations")
        async with KubeServer() as server, kmock.Server(server):
            install(server)
            api = LightkubeAPI.from_kubeconfig(str(kubeconfig(server, Path(tmp) / "kubeconfig")))
            store = Store(Path(tmp) / "state.db")
            cluster = ClusterGitOps(
                api,
                store,
                fetcher=SourceFetchers(GitFetcher(Path(tmp) / "work", lambda ns, name: None)),
                hooks=Hooks(),
                bootstrap=root(repo),
            )
            assert cluster.gitops is not None and cluster.status is not None
            g, status = cluster.gitops, cluster.status
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                await g.reconcile_once(force=True)
                await status.flush()
                full, full_cpu = time.perf_counter() - t0, time.process_time() - c0
                full_calls = len(server.calls)
                full_writes = writes(server)
                applied = sum(1 for k in server.store if k[0] != "v1/events")
                failed = [k for k, s in store.list_states(KUSTOMIZATION).items() if "Applied" not in str(s)]
                assert not failed, failed[:3]
                await g.reconcile_once(force=True)  # the watches of each kind start (one LIST each)
                await status.flush()
                await asyncio.sleep(1)
                before = len(server.calls)
                t0, c0 = time.perf_counter(), time.process_time()
                await g.reconcile_once(force=True)
                await status.flush()
                nochange, nochange_cpu = time.perf_counter() - t0, time.process_time() - c0
                nochange_calls = Counter(c.verb for c in server.calls[before:] if c.verb != "watch")
                nochange_writes = writes(server, before)
                (repo / "apps" / f"app-{n // 2}" / "deploy-0.yaml").write_text(
                    app(n // 2, "ghcr.io/stefanprodan/podinfo:6.7.1")["deploy-0.yaml"]
                )
                git(repo, "commit", "-qam", "one file")
                before = len(server.calls)
                t0, c0 = time.perf_counter(), time.process_time()
                g.request(SOURCE, ROOT)
                await g.reconcile_once()
                one, one_cpu = time.perf_counter() - t0, time.process_time() - c0
                one_writes = writes(server, before)
                live = server.object(kinds.DEPLOYMENT, f"team-{n // 2}", "w0")
                assert live is not None
                assert live["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.7.1")
            finally:
                await cluster.stop()
                await api.close()
                store.close()
    return {
        "kustomizations": n,
        "objects": applied,
        "full_s": full,
        "full_cpu_s": full_cpu,
        "nochange_cpu_s": nochange_cpu,
        "one_cpu_s": one_cpu,
        "full_requests": full_calls,
        "full_writes": dict(full_writes),
        "nochange_s": nochange,
        "nochange_requests": dict(nochange_calls),
        "nochange_writes": sum(nochange_writes.values()),
        "one_s": one,
        "one_writes": dict(one_writes),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=N, help="Kustomizations (10 objects each)")
    args = parser.parse_args(argv)
    r = asyncio.run(run(args.n))
    print(
        "| Kustomizations | objects in the cluster | first full reconcile | no-change reconcile "
        "| writes at no change | one-file change, asked to applied "
        "| peak memory (max RSS, with the API server) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {r['kustomizations']:,} | {r['objects']:,} | {r['full_s']:.1f} s, CPU {r['full_cpu_s']:.1f} s "
        f"({r['full_requests']:,} requests) | {r['nochange_s']:.2f} s, CPU {r['nochange_cpu_s']:.2f} s "
        f"({sum(r['nochange_requests'].values())} requests) | {r['nochange_writes']} | "
        f"{r['one_s']:.2f} s, CPU {r['one_cpu_s']:.2f} s | {r['peak_rss_mib']:.0f} MiB |"
    )
    print(f"\nwrites of the full reconcile: {r['full_writes']}; of the one-file change: {r['one_writes']}")
    return r


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
