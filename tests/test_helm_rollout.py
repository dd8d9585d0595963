"""A chart that renders a Rheostat Workload and Canary, reconciled by `rheostat run --repo` (the embedded
default): a values change in a commit is rolled out progressively, and `rheostat get helmreleases` shows it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import yaml

from rheostat.rollout.types import Phase
from tests.rig import NS, Rig, canary, workload
from tests.servers import git


def release(version: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "helm.toolkit.fluxcd.io/v2",
            "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {
                "interval": "1h",
                "chart": {
                    "spec": {
                        "chart": "./charts/web",
                        "sourceRef": {
                            "kind": "GitRepository",
                            "name": "flux-system",
                            "namespace": "flux-system",
                        },
                    }
                },
                "values": {"version": version},
            },
        }
    )


def write_chart(repo: Path, port: int) -> None:
    chart = repo / "charts" / "web"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: web\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("version: 6.0.0\n")
    (chart / "templates" / "_helpers.tpl").write_text(
        '{{- define "web.version" -}}{{ .Values.version | trim }}{{- end -}}\n'
    )
    (chart / "templates" / "workload.yaml").write_text(workload('{{ include "web.version" . }}'))
    (chart / "templates" / "canary.yaml").write_text(
        canary(port, "interval: 1s\nthreshold: 2\nstepWeight: 50")
    )


async def cli(*args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from rheostat.cli.main import main; main()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_a_values_change_in_a_commit_rolls_the_charts_canary_out(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    write_chart(rig.repo, rig.port)
    (rig.repo / "deploy").mkdir()
    (rig.repo / "deploy" / "web.yaml").write_text(release("6.0.0"))
    git(rig.repo, "add", "-A")
    git(rig.repo, "commit", "-q", "-m", "chart")
    server = await rig.start(path="deploy")
    try:
        await rig.wait(Phase.INITIALIZED)
        store = server.controller.store
        owner = store.get_object("Canary", f"{NS}/web")
        assert owner is not None and owner.source.startswith("HelmRelease e2e/web@0.1.0")

        (rig.repo / "deploy" / "web.yaml").write_text(release("6.0.1"))
        git(rig.repo, "commit", "-q", "-am", "web 6.0.1")
        server.controller.request_reconcile()
        st = await rig.wait(Phase.PROGRESSING, Phase.SUCCEEDED, timeout=30)
        st = await rig.wait(Phase.SUCCEEDED, timeout=60)
        assert st.phase is Phase.SUCCEEDED
        w = store.get_object("Workload", f"{NS}/web")
        assert w is not None and w.body["spec"]["template"]["command"][-1] == "6.0.1"
        weights = [e.message for e in store.events(kind="Canary") if "weight" in e.message.lower()]
        assert weights, "the new version was not shifted in by steps"

        code, out = await cli("get", "helmreleases", "-n", NS, "-o", "json", "--server", rig.api)
        items = json.loads(out)
        assert code == 0 and [i["metadata"]["name"] for i in items] == ["web"]
        history = items[0]["status"]["history"]
        assert [(h["version"], h["status"]) for h in history] == [(2, "deployed"), (1, "superseded")]
        code, out = await cli("get", "hr", "-n", NS, "--server", rig.api)
        assert code == 0 and "web@0.1.0" in out and "UpgradeSucceeded" not in out and "True" in out, out
        code, out = await cli(
            "reconcile", "hr", "web", "-n", NS, "--server", rig.api, "--data-dir", str(rig.data)
        )
        assert code == 0 and "Ready=True" in out, out
    finally:
        await rig.stop()
