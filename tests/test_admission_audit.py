"""The audit against a cluster: `rheostat run --kubeconfig` checks the cluster's live objects of the kinds the
policies match, on its interval, and records the violations where the gate's go (dashboard, CLI, alerts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.policy import PolicySet
from rheostat.reactor.cluster_audit import kinds_to_audit
from rheostat.reactor.controller import Controller
from rheostat.reactor.settings import ClusterSettings, Settings
from tests.test_admission import DEPLOYMENTS, SOURCE, constraint, deployment, library_template

NS = "apps"


async def until(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def cluster_findings(ctl: Controller) -> list[tuple[str, str, str]]:
    return sorted(
        (f["policy"], f["object"], f["action"])
        for f in ctl.gate.findings()
        if f["found_by"] == "audit" and f["owner"] == "cluster"
    )


async def test_live_deployments_in_the_cluster_are_audited_on_the_interval(
    tmp_path: Path, shared: Path
) -> None:
    kube = MemoryKube()
    kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    kube.add(deployment("unowned"))
    kube.add(deployment("owned", labels={"owner": "me"}))
    kube.add(deployment("coredns", ns="kube-system"))
    settings = Settings(
        repo=None, data_dir=tmp_path / "data", audit_interval_s=0.2, cluster=ClusterSettings()
    )
    ctl = Controller(settings, kube=kube)
    docs = [
        library_template(shared, "requiredlabels"),
        constraint(
            "K8sRequiredLabels", "deployments-need-owner", DEPLOYMENTS, {"labels": [{"key": "owner"}]}
        ),
    ]
    with ctl.store.transaction():  # as the policies would be mirrored from the cluster or applied from Git
        for d in docs:
            ctl.store.put_object(d["kind"], d["metadata"]["name"], d, source=SOURCE)
    await ctl.start()
    try:
        found = await until(lambda: cluster_findings(ctl))
        assert found == [("deployments-need-owner", "Deployment apps/unowned", "deny")]
        # fixed in the cluster: the finding goes at the next audit
        kube.add(deployment("unowned", labels={"owner": "me"}))
        await until(lambda: not cluster_findings(ctl))
    finally:
        await ctl.stop()


def test_only_the_kinds_the_policies_match_are_listed(shared: Path) -> None:
    docs = [
        library_template(shared, "requiredlabels"),
        constraint(
            "K8sRequiredLabels", "deployments-need-owner", DEPLOYMENTS, {"labels": [{"key": "owner"}]}
        ),
    ]
    assert kinds_to_audit(PolicySet.from_documents(docs)) == [kinds.NAMESPACE, kinds.DEPLOYMENT]
    everything = constraint("K8sRequiredLabels", "all-need-owner", {}, {"labels": [{"key": "owner"}]})
    listed = kinds_to_audit(PolicySet.from_documents([docs[0], everything]))
    assert kinds.SECRET not in listed and kinds.DEPLOYMENT in listed and len(listed) > 10
