"""GitOps end to end: real git with signatures, receivers, the local watch, and the Flux-like CLI."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from rheostat.gitops import conditions as cond
from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import GitOps
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import parse_object
from rheostat.reactor.settings import Settings
from rheostat.rollout.types import Phase
from rheostat.server.main import Server
from rheostat.store import Store
from rheostat.store.port import State
from tests.rig import KEY, NS, Rig, canary, workload
from tests.test_gitops_git import Keys, Repo, keys  # noqa: F401  (keys is a fixture)

WORKLOAD = (
    "apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {{name: w, namespace: apps}}\n"
    "spec: {{template: {{command: [app, --port, '{{port}}', --version, '{v}']}}}}\n"
)


def source(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "source.toolkit.fluxcd.io/v1",
        "kind": "GitRepository",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {"url": url, "interval": "1h", "ref": {"branch": "main"}, **spec},
    }


def kustomization(name: str, src: str, path: str = "./") -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
        "kind": "Kustomization",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": {
            "sourceRef": {"kind": "GitRepository", "name": src},
            "path": path,
            "prune": True,
            "interval": "1h",
        },
    }


def version_of(store: State) -> str:
    w = store.get_object("Workload", "apps/w")
    assert w is not None
    return str(w.body["spec"]["template"]["command"][-1])


async def test_only_signed_commits_are_applied(tmp_path: Path, keys: Keys) -> None:  # noqa: F811
    origin = Repo(tmp_path / "repo")
    origin.commit({"w.yaml": WORKLOAD.format(v="1")}, "v1", *keys.pgp(keys.good), env=keys.env)
    origin.git("branch", "-M", "main")
    origin.push("main")
    secrets = {("flux-system", "signers"): {"good.asc": keys.good_pub}}
    store = Store(":memory:")
    boot = [
        parse_object(
            source("app", str(origin.origin), verify={"mode": "HEAD", "secretRef": {"name": "signers"}})
        ),
        parse_object(kustomization("app", "app")),
    ]
    g = GitOps(
        store,
        SourceFetchers(GitFetcher(tmp_path / "work", lambda ns, n: secrets.get((ns, n)))),
        bootstrap=boot,
    )
    await g.reconcile_once()
    assert version_of(store) == "1"
    verified = cond.condition(g.state("GitRepository", "flux-system/app"), "SourceVerified")
    assert verified is not None and keys.good[-16:] in verified["message"]

    origin.commit({"w.yaml": WORKLOAD.format(v="2")}, "v2 unsigned")
    origin.push("main")
    await g.reconcile_once(force=True)
    ready = cond.condition(g.state("GitRepository", "flux-system/app"), "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("False", "VerificationFailed")
    assert version_of(store) == "1"  # nothing of the unsigned commit is applied

    origin.commit({"w.yaml": WORKLOAD.format(v="3")}, "v3 signed", *keys.pgp(keys.good), env=keys.env)
    origin.push("main")
    await g.reconcile_once(force=True)
    assert version_of(store) == "3"
    store.close()


def github_signature(token: str, body: bytes) -> str:
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


async def test_receiver_triggers_a_fetch_at_once_and_refuses_bad_signatures(tmp_path: Path) -> None:
    origin = Repo(tmp_path / "remote")
    origin.commit({"w.yaml": WORKLOAD.format(v="1")}, "v1")
    origin.git("branch", "-M", "main")
    origin.push("main")
    rig = Rig(tmp_path)
    receiver = {
        "apiVersion": "notification.toolkit.fluxcd.io/v1",
        "kind": "Receiver",
        "metadata": {"name": "push", "namespace": "flux-system"},
        "spec": {
            "type": "github",
            "events": ["push"],
            "secretRef": {"name": "hook-token"},
            "resources": [{"kind": "GitRepository", "name": "remote"}],
        },
    }
    docs = [
        yaml.safe_dump(d)
        for d in (source("remote", f"file://{origin.origin}"), kustomization("remote", "remote"), receiver)
    ]
    rig.commit(*docs, message="sources")
    (rig.data / "secrets" / "flux-system").mkdir(parents=True)
    (rig.data / "secrets" / "flux-system" / "hook-token.yaml").write_text("token: s3cret\n")
    server = await rig.start()
    try:
        store = server.controller.store
        assert version_of(store) == "1"
        path = "/hook/" + hashlib.sha256(b"s3cretpushflux-system").hexdigest()
        origin.commit({"w.yaml": WORKLOAD.format(v="2")}, "v2")
        origin.push("main")
        body = json.dumps({"ref": "refs/heads/main"}).encode()
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            r = await api.post(path, content=body, headers={"X-GitHub-Event": "push"})
            assert r.status_code == 401
            r = await api.post(
                path,
                content=body,
                headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature("wrong", body)},
            )
            assert r.status_code == 401
            await asyncio.sleep(1.0)
            assert version_of(store) == "1"  # refused pushes triggered nothing (the interval is an hour)
            pushed = time.monotonic()
            r = await api.post(
                path,
                content=body,
                headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": github_signature("s3cret", body)},
            )
            assert r.status_code == 200
            while version_of(store) != "2":
                assert time.monotonic() - pushed < 5, "the push was not applied"
                await asyncio.sleep(0.05)
            print(f"push to applied: {time.monotonic() - pushed:.3f}s")
            assert (await api.post("/hook/nothing", content=body)).status_code == 404
        reasons = [e.reason for e in store.events(kind="Receiver")]
        assert reasons.count("Refused") == 2 and reasons.count("Triggered") == 1
    finally:
        await rig.stop()


async def test_a_local_commit_is_picked_up_without_polling(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    spec = "interval: 1s\nthreshold: 2\nstepWeight: 50"
    rig.commit(workload("6.0.0"), canary(rig.port, spec), message="first")
    server = Server(
        Settings(repo=rig.repo, data_dir=rig.data, listen_port=rig.api_port, poll_interval_s=60.0)
    )
    rig.server = server
    await server.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        rig.server = None  # commit without asking for a reconcile: only the file watch can see it
        rig.commit(workload("6.0.1"), canary(rig.port, spec), message="second")
        rig.server = server
        committed = time.monotonic()
        await rig.wait_for(
            "the new revision",
            lambda: rig.status().last_applied_spec != "" and rig.status().phase is not Phase.INITIALIZED,
            timeout=5,
        )
        print(f"commit picked up in {time.monotonic() - committed:.2f}s")
    finally:
        await rig.stop()


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from rheostat.cli.main import main; main()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_flux_like_cli(tmp_path: Path) -> None:
    code, out, _ = await cli("bootstrap", "--repo", str(tmp_path / "boot"))
    assert code == 0 and "apps/podinfo/canary.yaml" in out
    from rheostat.gitops.build import build

    built = await build(tmp_path / "boot", "./")
    kinds = [o.kind for o in built.objects]
    assert sorted(k for k in kinds if k in ("Canary", "Workload")) == ["Canary", "Workload"], kinds
    assert kinds.count("ConstraintTemplate") == 4, kinds  # and the starter policies

    rig = Rig(tmp_path)
    rig.commit(workload("6.0.0"), canary(rig.port, "interval: 1s\nstepWeight: 50"), message="first")
    await rig.start()
    server = ("--server", rig.api, "--data-dir", str(rig.data))
    try:
        await rig.wait(Phase.INITIALIZED)
        code, out, _ = await cli("get", "kustomizations", "-o", "json", "--server", rig.api)
        items = json.loads(out)
        assert code == 0 and [i["metadata"]["name"] for i in items] == ["flux-system"]
        assert {"type": "Ready", "status": "True"}.items() <= items[0]["status"]["conditions"][0].items()
        code, out, _ = await cli("get", "sources", "--server", rig.api)
        assert code == 0 and "flux-system" in out and "True" in out

        code, out, _ = await cli("trace", "Workload/web", "-n", NS, "--server", rig.api)
        assert code == 0 and "flux-system/flux-system" in out and "app.yaml" in out, out

        code, out, _ = await cli("suspend", "kustomization", "flux-system", *server)
        assert code == 0
        rig.commit(workload("6.0.1"), canary(rig.port, "interval: 1s\nstepWeight: 50"), message="second")
        await asyncio.sleep(1.5)
        assert rig.status().phase is Phase.INITIALIZED  # suspended: the commit waits
        code, out, _ = await cli("diff", "kustomization", "flux-system", "--server", rig.api)
        assert code == 1 and f"~ Workload {KEY}" in out and "6.0.1" in out, out
        code, out, _ = await cli("resume", "kustomization", "flux-system", *server)
        assert code == 0
        code, out, _ = await cli("reconcile", "kustomization", "flux-system", "--with-source", *server)
        assert code == 0 and "Ready=True" in out, out
        await rig.wait(Phase.SUCCEEDED, timeout=30)
        code, out, _ = await cli("diff", "flux-system", "--server", rig.api)
        assert code == 0 and "0 change(s)" in out
        code, out, _ = await cli(
            "events", "--for", "Kustomization/flux-system/flux-system", "--server", rig.api
        )
        assert "Suspended" in out and "Resumed" in out
    finally:
        await rig.stop()


async def test_run_with_a_path_applies_nested_kustomizations_of_the_same_repository(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (rig.repo / "clusters").mkdir()
    (rig.repo / "apps").mkdir()
    (rig.repo / "apps" / "w.yaml").write_text(WORKLOAD.format(v="1"))
    (rig.repo / "clusters" / "apps.yaml").write_text(
        yaml.safe_dump(kustomization("apps", "flux-system", "apps"))
    )
    rig.commit(message="layout")
    (rig.repo / "app.yaml").unlink(missing_ok=True)
    server = Server(Settings(repo=rig.repo, data_dir=rig.data, listen_port=rig.api_port, path="clusters"))
    await server.start()
    try:
        assert version_of(server.controller.store) == "1"
        owner = server.controller.store.get_object("Workload", "apps/w")
        assert owner is not None and owner.source.startswith("Kustomization flux-system/apps@")
    finally:
        await server.stop()
