"""Benchmark: 100 HelmReleases of a 20-template chart from an HTTP chart repository, on the in-memory store.

Measures the Helm path of the GitOps engine (index fetch, chart download, values merge, render through Helm's
Go SDK, validation, apply, inventory): the first full reconcile, a forced reconcile where nothing changed
(target: no chart downloaded and nothing rendered again), one release's values changed in a commit, the cost
of one render, the binding's import, and the peak memory (max RSS) of the process.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from rheostat.gitops import helm_render
from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.helm_release import HelmReleases
from rheostat.gitops.reconciler import GitOps, Hooks
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import Manifest, parse_object
from rheostat.store import Store

N = 100
ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "b",
    "GIT_AUTHOR_EMAIL": "b@x",
    "GIT_COMMITTER_NAME": "b",
    "GIT_COMMITTER_EMAIL": "b@x",
}
HELPERS = (
    '{{- define "app.name" -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}'
    "{{- end -}}\n"
    '{{- define "app.labels" -}}\napp.kubernetes.io/instance: {{ .Release.Name | quote }}\n'
    'helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}\n{{- end -}}\n'
)


def chart(root: Path) -> Path:
    """20 templates: 2 Workloads, 1 Canary and 17 ConfigMaps, with helpers and Sprig."""
    d = root / "app"
    (d / "templates").mkdir(parents=True)
    (d / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 1.0.0\nappVersion: 1.0.0\n")
    (d / "values.yaml").write_text("version: '1'\nport: 10000\nreplicas: 2\nsettings: {a: 1, b: two}\n")
    (d / "templates" / "_helpers.tpl").write_text(HELPERS)
    for w in range(2):
        (d / "templates" / f"workload-{w}.yaml").write_text(
            "apiVersion: rheostat.dev/v1alpha1\nkind: Workload\n"
            f'metadata:\n  name: {{{{ include "app.name" . }}}}-w{w}\n  labels:\n'
            '    {{- include "app.labels" . | nindent 4 }}\n'
            "spec:\n  replicas: {{ .Values.replicas }}\n"
            "  template: {command: [app, --port, '{port}', --version, {{ .Values.version | quote }}]}\n"
        )
    (d / "templates" / "canary.yaml").write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\n"
        'metadata: {name: {{ include "app.name" . }}-w0}\nspec:\n'
        '  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: {{ include "app.name" . }}-w0}\n'
        "  service: {port: {{ .Values.port }}}\n  analysis: {interval: 1m, stepWeight: 10}\n"
    )
    for c in range(17):
        (d / "templates" / f"config-{c}.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\n"
            f'metadata:\n  name: {{{{ include "app.name" . }}}}-c{c}\n  labels:\n'
            '    {{- include "app.labels" . | nindent 4 }}\n'
            "data:\n{{- range $k, $v := .Values.settings }}\n  {{ $k }}: {{ $v | toString | upper | quote }}\n"
            "{{- end }}\n  digest: {{ .Values.version | sha256sum | trunc 12 | quote }}\n"
        )
    return d


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def release(i: int, version: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": f"app{i}", "namespace": f"team-{i}"},
        "spec": {
            "interval": "1h",
            "chart": {
                "spec": {
                    "chart": "app",
                    "version": "1.x",
                    "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"},
                }
            },
            "values": {"version": version, "port": 20000 + i},
        },
    }


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, env=ENV, capture_output=True)


def setup(root: Path) -> tuple[http.server.ThreadingHTTPServer, Path, bytes]:
    """The chart packaged and served with its index; a Git repository with the HelmRepository and releases."""
    served = root / "served"
    served.mkdir()
    archive = Path(helm_render.package(str(chart(root / "src")), str(served)))
    entry = {
        "name": "app",
        "version": "1.0.0",
        "digest": hashlib.sha256(archive.read_bytes()).hexdigest(),
        "urls": [archive.name],
    }
    (served / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": {"app": [entry]}}))
    server, url = serve(served)
    repo = root / "repo"
    (repo / "deploy").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    source = {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "HelmRepository",
        "metadata": {"name": "charts", "namespace": "flux-system"},
        "spec": {"url": url, "interval": "1h"},
    }
    (repo / "deploy" / "charts.yaml").write_text(yaml.safe_dump(source))
    for i in range(N):
        (repo / "deploy" / f"app{i}.yaml").write_text(yaml.safe_dump(release(i)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "all")
    return server, repo, archive.read_bytes()


def change_one(repo: Path) -> None:
    (repo / "deploy" / "app7.yaml").write_text(yaml.safe_dump(release(7, "2")))
    git(repo, "commit", "-q", "-am", "app7 v2")


async def bench(root: Path, repo: Path) -> dict[str, Any]:
    boot: list[Manifest] = [
        parse_object(
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "root", "namespace": "flux-system"},
                "spec": {"url": str(repo), "interval": "1h", "ref": {"branch": "main"}},
            }
        ),
        parse_object(
            {
                "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                "kind": "Kustomization",
                "metadata": {"name": "root", "namespace": "flux-system"},
                "spec": {
                    "sourceRef": {"kind": "GitRepository", "name": "root"},
                    "path": "./deploy",
                    "prune": True,
                    "interval": "1h",
                },
            }
        ),
    ]
    applied = [0]

    async def on_applied(objs: list[Manifest], _pruned: list[tuple[str, str]]) -> None:
        applied[0] += len(objs)

    store = Store(":memory:")
    g = GitOps(
        store, SourceFetchers(GitFetcher(root / "work", lambda *_: None)), Hooks(on_applied), bootstrap=boot
    )
    helm = HelmReleases(g)
    g.helm = helm
    t = time.perf_counter()
    await g.reconcile_once(force=True)
    full = time.perf_counter() - t
    ready = sum(
        1
        for st in store.list_states("HelmRelease").values()
        if any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
    )
    objects = applied[0]
    renders, downloads = helm.renders, helm.repos.downloads
    t = time.perf_counter()
    await g.reconcile_once(force=True)
    nochange = time.perf_counter() - t
    rerendered = helm.renders - renders
    refetched = helm.repos.downloads - downloads
    await asyncio.to_thread(change_one, repo)
    t = time.perf_counter()
    await g.reconcile_once(force=True)
    one = time.perf_counter() - t
    one_renders = helm.renders - renders - rerendered
    store.close()
    return {
        "releases": N,
        "ready": ready,
        "objects": objects,
        "full_s": full,
        "nochange_s": nochange,
        "nochange_renders": rerendered,
        "nochange_downloads": refetched,
        "one_change_s": one,
        "one_change_renders": one_renders,
    }


def render_and_import(data: bytes) -> dict[str, Any]:
    times = []
    for i in range(50):
        t = time.perf_counter()
        helm_render.render(data, {"version": str(i)}, name="x", namespace="y", revision=1, install=True)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import helm_python"], check=True)
    return {
        "render_ms_median": statistics.median(times) * 1000,
        "import_s": time.perf_counter() - t,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "helm": helm_render.sdk_version(),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server, repo, data = setup(Path(tmp))
        try:
            r = asyncio.run(bench(Path(tmp), repo))
        finally:
            server.shutdown()
            server.server_close()
        r |= render_and_import(data)
    print("Helm: 100 HelmReleases of a 20-template chart")
    for k, v in r.items():
        print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")


if __name__ == "__main__":
    main()
