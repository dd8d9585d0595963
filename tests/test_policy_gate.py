"""The policy gate in the GitOps path: deny stops a revision, warn applies, dryrun records, errors fail
closed, and the audit flags what already runs when a policy arrives later."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from rheostat.gitops import conditions as cond
from rheostat.gitops.gate import PolicyGate
from rheostat.gitops.reconciler import GitOps, Hooks
from rheostat.gitops.sources import FolderFetcher
from rheostat.model.load import parse_object
from rheostat.store import Store

WORKLOAD = """apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: web, namespace: {ns}}}
spec:
  template:
    command: [app, --port, "{{port}}"]
    {probe}
"""
CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: web, namespace: {ns}}}
spec:
  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}}
  service: {{port: 9898}}
  analysis:
    interval: 1h
    threshold: 3
    stepWeight: 10
    maxWeight: {max_weight}
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}}}
    - {{name: request-duration, thresholdRange: {{max: 1000}}}}
"""


def ks(name: str, path: str, depends: list[str]) -> dict[str, Any]:
    spec = {
        "sourceRef": {"kind": "GitRepository", "name": "root"},
        "path": path,
        "prune": True,
        "dependsOn": [{"name": d} for d in depends],
    }
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    }


def setup(tmp: Path, *paths: str) -> tuple[GitOps, PolicyGate, Store, Path]:
    repo = tmp / "repo"
    for p in ("apps", "policies"):
        (repo / p).mkdir(parents=True, exist_ok=True)
    store = Store(":memory:")
    gate = PolicyGate(store)
    boot = [
        parse_object(
            {
                "apiVersion": "source.toolkit.fluxcd.io/v1",
                "kind": "GitRepository",
                "metadata": {"name": "root", "namespace": "flux-system"},
                "spec": {"url": str(repo), "interval": "1h"},
            }
        )
    ]
    # apps wait for policies (as a platform team would set it up), unless the test lists apps first
    boot += [
        parse_object(ks(p, p, ["policies"] if p == "apps" and paths[0] == "policies" else [])) for p in paths
    ]
    return GitOps(store, FolderFetcher(), Hooks(gate=gate), bootstrap=boot), gate, store, repo


def starter_into(folder: Path) -> None:
    for entry in resources.files("rheostat.policy").joinpath("library").iterdir():
        if entry.name.endswith(".yaml"):
            (folder / entry.name).write_text(entry.read_text())


def ready(g: GitOps, key: str) -> dict[str, Any]:
    c = cond.condition(g.state("Kustomization", key), "Ready")
    assert c is not None
    return c


async def test_deny_blocks_the_revision_and_names_policy_object_and_file(tmp_path: Path) -> None:
    g, gate, store, repo = setup(tmp_path, "policies", "apps")
    starter_into(repo / "policies")
    (repo / "apps" / "web.yaml").write_text(
        WORKLOAD.format(ns="production", probe="readinessProbe: {path: /}")
        + "---\n"
        + CANARY.format(ns="production", max_weight=50)
    )
    await g.reconcile_once()
    assert ready(g, "flux-system/apps")["status"] == "True"
    assert store.get_object("Canary", "production/web") is not None

    (repo / "apps" / "web.yaml").write_text(
        WORKLOAD.format(ns="production", probe="readinessProbe: {path: /}")
        + "---\n"
        + CANARY.format(ns="production", max_weight=80)
    )
    await g.reconcile_once(force=True)
    c = ready(g, "flux-system/apps")
    assert (c["status"], c["reason"]) == ("False", "PolicyViolation")
    assert "production-canary-max-weight-50" in c["message"]
    live = store.get_object("Canary", "production/web")
    assert live is not None and live.body["spec"]["analysis"]["maxWeight"] == 50  # nothing applied
    (finding,) = [f for f in gate.findings() if f["found_by"] == "gate"]
    assert (finding["policy"], finding["object"], finding["action"]) == (
        "production-canary-max-weight-50",
        "Canary production/web",
        "deny",
    )
    assert finding["file"] == "apps/web.yaml" and finding["commit"].startswith("sha256:")
    events = [e for e in store.events(kind="Canary", key="production/web") if e.reason == "PolicyViolation"]
    assert events and "max-weight" in events[0].message

    # Outside production the same Canary is fine: the constraint matches production namespaces only.
    (repo / "apps" / "web.yaml").write_text(
        WORKLOAD.format(ns="staging", probe="readinessProbe: {path: /}")
        + "---\n"
        + CANARY.format(ns="staging", max_weight=80)
    )
    await g.reconcile_once(force=True)
    assert ready(g, "flux-system/apps")["status"] == "True"


async def test_warn_applies_with_a_warning_and_dryrun_only_records(tmp_path: Path) -> None:
    g, gate, store, repo = setup(tmp_path, "policies", "apps")
    starter_into(repo / "policies")
    probe = repo / "policies" / "workload-readiness-probe.yaml"
    name = "  name: workload-must-have-readiness-probe\nspec:\n"
    probe.write_text(probe.read_text().replace(name, name + "  enforcementAction: warn\n"))
    (repo / "apps" / "web.yaml").write_text(WORKLOAD.format(ns="apps", probe=""))
    await g.reconcile_once()
    assert ready(g, "flux-system/apps")["status"] == "True"
    assert store.get_object("Workload", "apps/web") is not None
    assert any(e.reason == "PolicyWarning" for e in store.events(kind="Kustomization"))
    assert [f["action"] for f in gate.findings()] == ["warn"]

    probe.write_text(probe.read_text().replace("enforcementAction: warn", "enforcementAction: dryrun"))
    (repo / "apps" / "web.yaml").write_text(WORKLOAD.format(ns="apps", probe="") + "  replicas: 2\n")
    await g.reconcile_once(force=True)
    assert ready(g, "flux-system/apps")["status"] == "True"
    assert {f["action"] for f in gate.findings()} == {"dryrun"}


async def test_a_policy_that_does_not_compile_fails_closed(tmp_path: Path) -> None:
    g, _, store, repo = setup(tmp_path, "apps")
    (repo / "apps" / "policy.yaml").write_text("""apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: broken}
spec:
  crd: {spec: {names: {kind: Broken}}}
  targets:
  - target: admission.k8s.gatekeeper.sh
    rego: |
      package broken
      violation[{"msg": msg}] { msg := input.review.object.kind[ }
""")
    (repo / "apps" / "web.yaml").write_text(WORKLOAD.format(ns="apps", probe=""))
    await g.reconcile_once()
    c = ready(g, "flux-system/apps")
    assert (c["status"], c["reason"]) == ("False", "PolicyViolation")
    assert "broken" in c["message"] and "fails closed" in c["message"]
    assert store.get_object("Workload", "apps/web") is None


async def test_audit_flags_what_already_runs_when_a_policy_arrives(tmp_path: Path) -> None:
    g, gate, store, repo = setup(tmp_path, "apps", "policies")
    (repo / "apps" / "web.yaml").write_text(WORKLOAD.format(ns="apps", probe=""))
    await g.reconcile_once()
    assert store.get_object("Workload", "apps/web") is not None
    assert gate.audit() == []
    library = resources.files("rheostat.policy").joinpath("library", "workload-readiness-probe.yaml")
    (repo / "policies" / "probe.yaml").write_text(library.read_text())
    await g.reconcile_once(force=True)
    assert ready(g, "flux-system/policies")["status"] == "True"
    (found,) = gate.audit()
    assert (found.policy, found.object, found.found_by) == (
        "workload-must-have-readiness-probe",
        "Workload apps/web",
        "audit",
    )
    assert found.owner == "flux-system/apps"
    assert any(e.reason == "PolicyViolation" for e in store.events(kind="Workload", key="apps/web"))


async def test_blocked_revision_is_listed_by_api_and_cli_and_alerted(tmp_path: Path) -> None:
    import asyncio
    import json
    import sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    from tests.rig import Rig, canary, workload
    from tests.servers import serving

    got: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Receiver), "alert-receiver") as srv:
        rig = Rig(tmp_path)
        provider = (
            "apiVersion: flagger.app/v1beta1\nkind: AlertProvider\nmetadata:\n  name: platform\n"
            "  namespace: e2e\n  annotations: {rheostat.dev/alerts: policy}\n"
            "spec: {type: webhook, secretRef: {name: platform-hook}}\n"
        )
        probe = (
            resources.files("rheostat.policy")
            .joinpath("library", "workload-readiness-probe.yaml")
            .read_text()
        )
        rig.commit(
            workload("6.0.0"), canary(rig.port, "interval: 1s\nstepWeight: 50"), provider, message="first"
        )
        (rig.data / "secrets" / "e2e").mkdir(parents=True)
        (rig.data / "secrets" / "e2e" / "platform-hook.yaml").write_text(
            f"address: http://127.0.0.1:{srv.server_address[1]}/hook\ntoken: t0k3n\n"
        )
        server = await rig.start()
        try:
            broken = workload("6.0.1", probe="/readyz").replace("    readinessProbe: {path: /readyz}\n", "")
            rig.commit(
                broken, canary(rig.port, "interval: 1s\nstepWeight: 50"), provider, probe, message="no probe"
            )
            async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
                for _ in range(100):
                    items = (await api.get("/api/v1/violations")).json()["items"]
                    if items:
                        break
                    await asyncio.sleep(0.1)
                (item,) = items
                assert (item["policy"], item["object"], item["action"]) == (
                    "workload-must-have-readiness-probe",
                    "Workload e2e/web",
                    "deny",
                )
                assert item["file"] == "app.yaml" and item["commit"]
                source = (await api.get("/api/v1/source")).json()
                assert "blocked by policy" in source["error"]
            assert "6.0.0" in json.dumps(server.controller.store.get_object("Workload", "e2e/web").body)  # type: ignore[union-attr]
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from rheostat.cli.main import main; main()",
                "get",
                "violations",
                "--server",
                rig.api,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await proc.communicate()
            assert proc.returncode == 0 and b"workload-must-have-readiness-probe" in out
            await server.controller.engine.drain()
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.1)
            alert = json.loads(got[0])
            assert alert["severity"] == "error" and "workload-must-have-readiness-probe" in alert["message"]
        finally:
            await rig.stop()
