"""Benchmark: 1,000 Kustomizations of 10 objects each from one Git repository, on the in-memory store.

Measures the GitOps engine alone (sources, build, validation, apply, prune, inventory): the first full
reconcile, a reconcile where nothing changed, a one-file change from the moment it is asked for (what a
receiver or the local watch does) to applied, and the peak memory (max RSS) of the process.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import GitOps, Hooks
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import Manifest, parse_object
from rheostat.store import Store

N = 1000
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@x",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@x",
}


def app(i: int, version: str = "1") -> dict[str, str]:
    ns = f"team-{i}"
    files = {}
    for w in range(4):
        files[f"workload-{w}.yaml"] = (
            f"apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w{w}, namespace: {ns}}}\n"
            f"spec: {{replicas: 2, template: {{command: [app, --port, '{{port}}', --version, '{version}']}}}}\n"
        )
    for c in range(2):
        files[f"canary-{c}.yaml"] = (
            f"apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: w{c}, namespace: {ns}}}\nspec:\n"
            f"  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: w{c}}}\n"
            f"  service: {{port: {10000 + i * 2 + c}}}\n  analysis: {{interval: 1m, stepWeight: 10}}\n"
        )
    for m in range(4):
        files[f"metric-{m}.yaml"] = (
            f"apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {{name: m{m}, namespace: {ns}}}\n"
            f"spec: {{provider: {{type: prometheus, address: 'http://prom:9090'}}, query: 'up{{job=\"{m}\"}}'}}\n"
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


def root(url: Path) -> list[Manifest]:
    return [
        parse_object(
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "root", "namespace": "flux-system"},
                "spec": {"url": str(url), "interval": "1h", "ref": {"branch": "main"}},
            }
        ),
        parse_object(
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": "root", "namespace": "flux-system"},
                "spec": {
                    "sourceRef": {"kind": "GitRepository", "name": "root"},
                    "path": "clusters",
                    "prune": True,
                    "interval": "1h",
                },
            }
        ),
    ]


async def run(n: int = N) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rheostat-gitops-bench-") as tmp:
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
        git(repo, "commit", "-q", "-m", "1,000 Kustomizations")
        applied = {"objects": 0}

        async def on_applied(objects: list[Manifest], deleted: list[Any]) -> None:
            applied["objects"] += len(objects)  # what the platform would receive

        store = Store(Path(tmp) / "state.db")
        g = GitOps(
            store,
            SourceFetchers(GitFetcher(Path(tmp) / "work", lambda ns, n: None)),
            Hooks(on_applied=on_applied),
            bootstrap=root(repo),
        )
        t0 = time.perf_counter()
        await g.reconcile_once(force=True)
        full = time.perf_counter() - t0
        objects = len(store.list_objects()) - 2 - n
        t0 = time.perf_counter()
        await g.reconcile_once(force=True)
        nochange = time.perf_counter() - t0
        (repo / "apps" / f"app-{n // 2}" / "workload-0.yaml").write_text(app(n // 2, "2")["workload-0.yaml"])
        git(repo, "commit", "-qam", "one file")
        t0 = time.perf_counter()
        g.request("GitRepository", "flux-system/root")
        await g.reconcile_once()
        one = time.perf_counter() - t0
        changed = store.get_object("Workload", f"team-{n // 2}/w0")
        assert changed is not None and changed.body["spec"]["template"]["command"][-1] == "2"
        store.close()
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "kustomizations": n,
        "objects": objects,
        "full_s": full,
        "nochange_s": nochange,
        "one_file_s": one,
        "peak_rss_mib": rss_mib,
        "applied": applied["objects"],
    }


def main() -> dict[str, Any]:
    r = asyncio.run(run())
    print(
        "| Kustomizations | objects | first full reconcile | no-change reconcile | one-file change, asked to "
        "applied | peak memory (max RSS, whole process) |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {r['kustomizations']:,} | {r['objects']:,} | {r['full_s']:.2f} s | {r['nochange_s']:.2f} s | "
        f"{r['one_file_s'] * 1000:.0f} ms | {r['peak_rss_mib']:.0f} MiB |"
    )
    return r


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
