"""The real `rheostat run` following a Git repository whose Kustomization points at an OCIRepository on a real
docker-registry: the artifact is applied in the embedded default, and `rheostat reconcile source` and
`rheostat get sources` see the OCIRepository like a GitRepository."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.oci_registry import docker_registry
from tests.rig import Rig
from tests.test_gitops_e2e import cli


def config_map(version: str) -> str:
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: apps}\n"
        f"data: {{version: '{version}'}}\n"
    )


async def test_rheostat_run_applies_an_oci_artifact_and_the_cli_reconciles_it(tmp_path: Path) -> None:
    with docker_registry(tmp_path / "registry") as reg:
        reg.push_artifact("team/apps", "1.0.0", {"settings.yaml": config_map("1.0.0")})
        source = {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "OCIRepository",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {
                "url": f"oci://{reg.host}/team/apps",
                "interval": "1h",
                "insecure": True,
                "ref": {"semver": "1.x"},
            },
        }
        ks = {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "apps", "namespace": "flux-system"},
            "spec": {
                "sourceRef": {"kind": "OCIRepository", "name": "apps"},
                "path": "./",
                "prune": True,
                "interval": "1h",
            },
        }
        rig = Rig(tmp_path)
        rig.commit(yaml.safe_dump(source), yaml.safe_dump(ks), message="apps from a registry")
        server = await rig.start()
        store = server.controller.store

        def version() -> str | None:
            obj = store.get_object("ConfigMap", "apps/settings")
            return None if obj is None else str(obj.body["data"]["version"])

        try:
            await rig.wait_for("the artifact applied", lambda: version() == "1.0.0", timeout=30)
            reg.push_artifact("team/apps", "1.1.0", {"settings.yaml": config_map("1.1.0")})
            opts = ("-n", "flux-system", "--server", rig.api, "--data-dir", str(rig.data))
            code, out, err = await cli("reconcile", "source", "apps", *opts)
            assert (
                code == 0 and "Ready=True" in out and "stored artifact for revision '1.1.0@sha256:" in out
            ), (out, err)
            await rig.wait_for("the new tag applied", lambda: version() == "1.1.0", timeout=30)
            code, out, _ = await cli("get", "sources", "-o", "json", "--server", rig.api)
            kinds = {(i["kind"], i["metadata"]["name"]) for i in json.loads(out)}
            assert (
                code == 0 and ("OCIRepository", "apps") in kinds and ("GitRepository", "flux-system") in kinds
            )
            code, out, _ = await cli("trace", "ConfigMap/settings", "-n", "apps", "--server", rig.api)
            assert code == 0 and f"oci://{reg.host}/team/apps" in out and "1.1.0@sha256:" in out, out
        finally:
            await rig.stop()
