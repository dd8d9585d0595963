"""Benchmark (issue 13): leader failover of `rheostat run --kubeconfig --leader-elect` against the kmock API
server, two replicas, a rollout in progress.

The API server (tests/kubeapi.py) runs in this process and stamps every object it commits with the time; the
test plays the kubelet. The replicas are real `rheostat run` processes. Each run: the leader is killed
(SIGKILL, at a random point of its 2 s renewal cycle); measured from the kill, the time until the standby
holds the Lease, and until its first write to the cluster (the Canary's next step: route, status or Event).
A new standby is started for the next run. Then the same with SIGTERM: the leader releases the Lease on its
way out, and the standby takes it at its next look.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import kmock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import podinfo
from tests.kube_e2e_world import Controller, StoreView, kubeconfig_for
from tests.kubeapi import Key, KubeServer
from tests.kubelet import kubelet

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, Obj, WatchType

NS = "team"
LEASE_NS = "rheostat-system"
LEASE = "rheostat-leader"
WRITTEN = (kinds.CANARY, kinds.VIRTUAL_SERVICE, kinds.DESTINATION_RULE, kinds.EVENT)  # the controller's only


@attrs.define(kw_only=True)
class Stamped(KubeServer):
    commits: list[tuple[float, Kind, Obj]] = attrs.field(factory=list, init=False)

    def _commit(self, kind: Kind, key: Key, obj: Obj, event: WatchType) -> Obj:
        out = super()._commit(kind, key, obj, event)
        self.commits.append((time.monotonic(), kind, out))
        return out


def canary() -> Obj:
    """A long rollout (99 steps of 1%, one a second): in progress through a run, its next step due at once."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": NS},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898, "targetPort": 9898},
            "analysis": {"interval": "1s", "threshold": 5, "stepWeight": 1, "maxWeight": 99, "metrics": []},
        },
    }


def holder(server: Stamped) -> str:
    found = server.object(kinds.LEASE, LEASE_NS, LEASE)
    return str(found["spec"]["holderIdentity"]) if found is not None else ""


async def until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.01)
    raise RuntimeError(f"timed out waiting for {what}")


async def identity(ctl: Controller) -> str:
    view: dict[str, Any] = await ctl.get("/api/v1/leader")
    return str(view["identity"])


async def failover(
    server: Stamped, leader: Controller, standby: Controller, *, kill: bool
) -> tuple[float, float]:
    """(kill to the standby holding the Lease, kill to its first write), in seconds."""
    want = await identity(standby)
    await asyncio.sleep(random.uniform(0.0, 2.0))  # anywhere in the leader's renewal cycle
    at = time.monotonic()
    if kill:
        await leader.kill()
    else:
        code = await leader.stop()
        assert code == 0, leader.stderr()[-2000:]
    await until("the standby to lead", lambda: holder(server) == want, 60)
    led = next(
        t for t, k, o in server.commits if t > at and k == kinds.LEASE and o["spec"]["holderIdentity"] == want
    )
    wrote = await until(
        "the new leader's first write",
        lambda: next((t for t, k, _ in server.commits if t > led and k in WRITTEN), None),
    )
    return led - at, wrote - at


def summary(label: str, values: list[float]) -> str:
    return f"| {label} | {len(values)} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} |"


async def bench(runs: int, clean_runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rheostat-failover-") as tmp:
        root = Path(tmp)
        async with Stamped() as server, kmock.Server(server):
            try:
                server.add(podinfo.deployment(NS, "6.0.0"))
                server.add(canary())
                config = kubeconfig_for(server, root / "kubeconfig")
                made = 0

                def replica() -> Controller:
                    nonlocal made
                    made += 1
                    return Controller(
                        config,
                        root / f"data-{made}",
                        root / f"logs-{made}",
                        "http://127.0.0.1:9",  # never asked: the Canary has no metrics
                        args=("--leader-elect", "--lease-namespace", LEASE_NS),
                    )

                async with kubelet(StoreView(server).api(), server, period_s=0.05):
                    leader, standby = replica(), replica()
                    try:
                        await leader.start()
                        await until("a leader", lambda: holder(server))
                        await standby.start()

                        def status() -> Obj:
                            return (server.object(kinds.CANARY, NS, "podinfo") or {}).get("status") or {}

                        await until("Initialized", lambda: status().get("phase") == "Initialized", 120)
                        versions = iter(range(1, 1000))

                        async def progressing() -> None:
                            """A run in progress with steps to go: a new image (`kubectl set image`) if not."""
                            st = status()
                            if st.get("phase") == "Progressing" and st.get("canaryWeight", 0) <= 60:
                                return
                            key = server._key(kinds.DEPLOYMENT, NS, "podinfo")
                            old = server.store[key]
                            new = copy.deepcopy(old)
                            image = f"ghcr.io/stefanprodan/podinfo:6.0.{next(versions)}"
                            new["spec"]["template"]["spec"]["containers"][0]["image"] = image
                            server._write(kinds.DEPLOYMENT, key, old, new, "kubectl")
                            await until(
                                "Progressing",
                                lambda: (
                                    status().get("lastAppliedSpec") != st.get("lastAppliedSpec")
                                    and status().get("canaryWeight", 0) >= 2
                                ),
                                120,
                            )

                        results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
                        for kill in [True] * runs + [False] * clean_runs:
                            await progressing()
                            results[kill].append(await failover(server, leader, standby, kill=kill))
                            leader, standby = standby, replica()
                            await standby.start()
                    finally:
                        for ctl in (leader, standby):
                            await ctl.stop()
            finally:
                server.drop_watches()
    print("| from the leader's end (signal) to | runs | min (s) | median (s) | max (s) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kill, label in ((True, "SIGKILL"), (False, "SIGTERM (Lease released)")):
        if results[kill]:
            print(summary(f"{label}: the standby holds the Lease", [r[0] for r in results[kill]]))
            print(summary(f"{label}: its first write", [r[1] for r in results[kill]]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="failovers with SIGKILL")
    parser.add_argument("--clean-runs", type=int, default=3, help="handovers with SIGTERM")
    args = parser.parse_args(argv)
    asyncio.run(bench(args.runs, args.clean_runs))


if __name__ == "__main__":
    main()
