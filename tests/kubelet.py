"""The test plays the cluster's controllers: every Deployment's and DaemonSet's status follows its spec, as
the Deployment controller and the kubelet would report once the pods are ready."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any, Protocol

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, KubeAPI, Obj


class Emulated(Protocol):
    """An API server a test can write status into (MemoryKube, the kmock server)."""

    def set_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> None: ...


def ready_status(obj: Obj) -> dict[str, Any]:
    meta, spec = obj["metadata"], obj.get("spec", {})
    gen = int(meta.get("generation") or 1)
    if obj["kind"] == "DaemonSet":
        n = (
            0
            if (spec.get("template", {}).get("spec", {}).get("nodeSelector") or {}).get(
                "flagger.app/scale-to-zero"
            )
            else 2
        )
        return {
            "observedGeneration": gen,
            "desiredNumberScheduled": n,
            "updatedNumberScheduled": n,
            "numberAvailable": n,
            "numberReady": n,
        }
    n = int(spec.get("replicas", 1))
    return {
        "observedGeneration": gen,
        "replicas": n,
        "updatedReplicas": n,
        "availableReplicas": n,
        "readyReplicas": n,
        "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}],
    }


@asynccontextmanager
async def kubelet(
    api: KubeAPI, server: Emulated, *, hold: Callable[[Obj], bool] = lambda _: False, period_s: float = 0.05
) -> AsyncIterator[None]:
    """Keeps workloads ready while the block runs; `hold(obj)` keeps one not ready (a stuck rollout)."""

    async def loop() -> None:
        while True:
            for kind in (kinds.DEPLOYMENT, kinds.DAEMONSET):
                for obj in await api.list(kind):
                    want = ready_status(obj)
                    if hold(obj):
                        want = {**want, "availableReplicas": 0, "numberAvailable": 0, "updatedReplicas": 0}
                    if obj.get("status") != want:
                        meta = obj["metadata"]
                        server.set_status(kind, meta["namespace"], meta["name"], want)
            await asyncio.sleep(period_s)

    task = asyncio.get_running_loop().create_task(loop(), name="kubelet")
    try:
        yield
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
