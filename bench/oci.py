"""Benchmark: an OCIRepository of a 500-file Flux artifact on a real docker-registry on loopback.

Measures the OCI fetcher alone: the first fetch (tag resolved, manifest and layer pulled and checked against
their digests, the tarball unpacked safely, ignore rules applied), and the no-change check a reconcile makes
when nothing was pushed (one manifest HEAD, no blob), each the median of several runs, with the round trips
counted. A final row times the whole first reconcile (fetch, build, validation, apply of 500 Workloads).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.oci_registry import docker_registry, tarball

from rheostat.gitops.fetch import source_fetchers
from rheostat.gitops.oci import OCIFetcher
from rheostat.gitops.reconciler import GitOps
from rheostat.model.load import parse_object
from rheostat.model.sources import OCIRepository
from rheostat.store import Store

FILES = 500
RUNS = 7


def files() -> dict[str, str | bytes]:
    out: dict[str, str | bytes] = {}
    for i in range(FILES):
        out[f"apps/team-{i % 20}/w{i}.yaml"] = (
            f"apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w{i}, namespace: team-{i % 20}}}\n"
            f"spec: {{replicas: 2, template: {{command: [app, --port, '{{port}}', --version, '1']}}}}\n"
        )
    return out


def source(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "OCIRepository",
        "metadata": {"name": "bench", "namespace": "flux-system"},
        "spec": {"url": url, "interval": "1h", "insecure": True, "ref": {"tag": "v1"}},
    }


async def run(tmp: Path) -> dict[str, Any]:
    with docker_registry(tmp / "registry") as reg:
        content = files()
        layer = tarball(content)
        reg.push_artifact("bench/apps", "v1", content)
        url = f"oci://{reg.host}/bench/apps"
        repo = parse_object(source(url))
        assert isinstance(repo, OCIRepository)
        full, nochange, requests_full, requests_nochange = [], [], 0, 0
        for i in range(RUNS):
            fetcher = OCIFetcher(tmp / f"work-{i}", lambda ns, n: None)
            t = time.perf_counter()
            got = await fetcher.fetch(repo, None)
            full.append(time.perf_counter() - t)
            requests_full = fetcher.last_requests
            assert sum(1 for p in got.path.rglob("*.yaml")) == FILES
            t = time.perf_counter()
            again = await fetcher.fetch(repo, got)
            nochange.append(time.perf_counter() - t)
            requests_nochange = fetcher.last_requests
            assert again.revision == got.revision
        store = Store(":memory:")
        ks = {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "bench", "namespace": "flux-system"},
            "spec": {"sourceRef": {"kind": "OCIRepository", "name": "bench"}, "path": "./", "prune": True},
        }
        g = GitOps(
            store, source_fetchers(tmp / "gitops", lambda ns, n: None), bootstrap=[repo, parse_object(ks)]
        )
        t = time.perf_counter()
        await g.reconcile_once(force=True)
        reconcile = time.perf_counter() - t
        applied = len(store.list_objects("Workload"))
        assert applied == FILES, applied
        store.close()
    return {
        "files": FILES,
        "layer_kib": len(layer) / 1024,
        "full_ms": statistics.median(full) * 1000,
        "requests_full": requests_full,
        "nochange_ms": statistics.median(nochange) * 1000,
        "requests_nochange": requests_nochange,
        "reconcile_s": reconcile,
    }


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        r = asyncio.run(run(Path(tmp)))
    print(
        "| files | layer (gzip) | fetch + verify + extract (median) | round trips | no-change check (median) | "
        "round trips | first reconcile, 500 Workloads applied |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {r['files']} | {r['layer_kib']:.0f} KiB | {r['full_ms']:.0f} ms | {r['requests_full']} | "
        f"{r['nochange_ms']:.1f} ms | {r['requests_nochange']} | {r['reconcile_s']:.2f} s |"
    )
    return r


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
