"""The platforms of tests/test_platform_contract.py, each with the small adapters the contract needs: how a
target is declared at a version, how a group is made not ready, what a group's endpoints serve, and whether
the target still serves once the Canary is released.

`local` runs real processes of the demo app; `kubernetes` runs over MemoryKube (schema-checked) and over
LightkubeAPI against the kmock server, with tests/kubelet.py playing the kubelet."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import kmock

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.model.load import parse_object
from rheostat.model.workload import Workload
from rheostat.plugins.kube.api import KubeAPI, Obj
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.errors import Retry
from rheostat.plugins.kube.kinds import DEPLOYMENT, SERVICE
from rheostat.plugins.platforms import PLATFORMS
from rheostat.plugins.platforms.base import Group, Platform
from rheostat.plugins.platforms.local import LocalPlatform
from tests.contract_routers import CheckedKube, fast_sleep, kubeconfig_for
from tests.kubeapi import KubeServer
from tests.kubelet import kubelet

NS = "test"
NAME = "podinfo"
PORT = 9898
TARGET = ObjectKey(f"{NS}/{NAME}")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.05)


def canary_of(target: dict[str, str], **spec: Any) -> Canary:
    parsed = parse_object(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "targetRef": {**target, "name": NAME},
                "service": {"port": PORT},
                "analysis": {"interval": "10s", "threshold": 2, "stepWeight": 50, "maxWeight": 50},
                **spec,
            },
        }
    )
    assert isinstance(parsed, Canary)
    return parsed


class Rig(Protocol):
    target: ObjectKey
    canary: Canary
    replicas: int  # what the target declares

    @property
    def platform(self) -> Platform: ...

    async def declare(self, version: str) -> None:
        """The user declares the target at `version` (a new template, hence a new revision)."""

    def hold(self, group: Group, held: bool) -> None:
        """Make a group's replicas fail readiness (True) or pass it again (False)."""

    async def serves(self, group: Group) -> str | None:
        """The version the group's endpoints reach (None: nothing answers there)."""

    async def desired(self, group: Group) -> int:
        """The replicas the group is asked to run."""

    async def serving_after_release(self) -> str | None:
        """The version the target's users reach once the Canary is gone."""


# -- local -------------------------------------------------------------------------------------------------


def workload(version: str) -> Workload:
    return Workload.model_validate(
        {
            "apiVersion": "rheostat.dev/v1alpha1",
            "kind": "Workload",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {
                "replicas": 1,
                "template": {
                    "command": [
                        "python",
                        "-m",
                        "rheostat.demo.app",
                        "--port",
                        "{port}",
                        "--version",
                        version,
                    ],
                    "readinessProbe": {"path": "/readyz", "periodSeconds": 0.1, "timeoutSeconds": 0.2},
                },
            },
        }
    )


async def version_at(client: httpx.AsyncClient, host: str, port: int) -> str | None:
    try:
        answer = await client.get(f"http://{host}:{port}/", timeout=2)
    except httpx.HTTPError:
        return None
    version = answer.json().get("version")
    return str(version) if version is not None else None


@dataclass
class LocalRig:
    platform: LocalPlatform
    target: ObjectKey = TARGET
    replicas: int = 1
    canary: Canary = field(
        default_factory=lambda: canary_of({"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload"})
    )

    async def declare(self, version: str) -> None:
        self.platform.set_managed(self.target, True)
        self.platform.apply(workload(version))

    def hold(self, group: Group, held: bool) -> None:
        status = self.platform.status(self.target)
        replicas = status.primary.replicas if group is Group.PRIMARY else status.canary.replicas
        for r in replicas:  # a stopped process answers no probe, as a wedged one would
            if r.pid is not None:
                os.kill(r.pid, signal.SIGSTOP if held else signal.SIGCONT)

    async def serves(self, group: Group) -> str | None:
        endpoints = await self.platform.endpoints(self.target, group)
        async with httpx.AsyncClient(trust_env=False) as client:
            versions = {await version_at(client, e.host, e.port) for e in endpoints}
        return versions.pop() if len(versions) == 1 else None

    async def desired(self, group: Group) -> int:
        status = self.platform.status(self.target)
        return (status.primary if group is Group.PRIMARY else status.canary).desired

    async def serving_after_release(self) -> str | None:
        return await self.serves(Group.PRIMARY)


@asynccontextmanager
async def local_rig(tmp_path: Path) -> AsyncIterator[LocalRig]:
    platform = LocalPlatform(tmp_path / "data", drain_s=0.1)
    await platform.start()
    try:
        yield LocalRig(platform)
    finally:
        await platform.stop()


# -- kubernetes --------------------------------------------------------------------------------------------


def deployment(version: str) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS, "labels": {"app": NAME}},
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {
                            "name": "podinfod",
                            "image": f"ghcr.io/stefanprodan/podinfo:{version}",
                            "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                        }
                    ]
                },
            },
        },
    }


def image_version(workload: Obj) -> str:
    image = workload["spec"]["template"]["spec"]["containers"][0]["image"]
    return str(image).rpartition(":")[2]


def selects(service: Obj, workload: Obj) -> bool:
    labels = workload["spec"]["template"]["metadata"].get("labels") or {}
    selector = service["spec"].get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@dataclass
class KubeRig:
    api: KubeAPI
    add: Callable[[Obj], Obj]
    held: set[str] = field(default_factory=set)
    target: ObjectKey = TARGET
    replicas: int = 2
    canary: Canary = field(
        default_factory=lambda: canary_of(
            {"apiVersion": "apps/v1", "kind": "Deployment"}, revertOnDeletion=True
        )
    )

    def __post_init__(self) -> None:
        self.platform: Platform = PLATFORMS.create("kubernetes", api=self.api)

    async def declare(self, version: str) -> None:
        current = await self.api.get(DEPLOYMENT, NS, NAME)
        if current is None:
            self.add(deployment(version))
            return
        current["spec"]["template"]["spec"]["containers"][0]["image"] = (
            f"ghcr.io/stefanprodan/podinfo:{version}"
        )
        current.pop("status", None)
        await self.api.replace(current)  # as `kubectl apply` of a new image would

    def _workload(self, group: Group) -> str:
        return f"{NAME}-primary" if group is Group.PRIMARY else NAME

    def hold(self, group: Group, held: bool) -> None:
        (self.held.add if held else self.held.discard)(self._workload(group))

    async def _serving(self, service: str, workload: Obj | None, port: int) -> str | None:
        svc = await self.api.get(SERVICE, NS, service)
        if svc is None or workload is None or not selects(svc, workload):
            return None
        if port not in [p["port"] for p in svc["spec"]["ports"]]:
            return None
        return image_version(workload)

    async def serves(self, group: Group) -> str | None:
        (endpoint,) = await self.platform.endpoints(self.target, group)
        workload = await self.api.get(DEPLOYMENT, NS, self._workload(group))
        return await self._serving(endpoint.host, workload, endpoint.port)

    async def desired(self, group: Group) -> int:
        workload = await self.api.get(DEPLOYMENT, NS, self._workload(group))
        assert workload is not None
        return int(workload["spec"].get("replicas", 1))

    async def serving_after_release(self) -> str | None:
        """The apex Service, what clients use, reaches the target's own pods, which run."""
        target = await self.api.get(DEPLOYMENT, NS, NAME)
        if target is None or not target["spec"].get("replicas"):
            return None
        if await self.api.get(DEPLOYMENT, NS, f"{NAME}-primary") is not None:
            return None  # the primary is deleted only once the target serves again
        return await self._serving(NAME, target, PORT)


@asynccontextmanager
async def kube_rig(backend: str, tmp_path: Path) -> AsyncIterator[KubeRig]:
    if backend == "memory":
        mem = CheckedKube()
        rig = KubeRig(mem, mem.add)
        async with kubelet(mem, mem, hold=lambda obj: obj["metadata"]["name"] in rig.held):
            yield rig
        return
    async with KubeServer() as server, kmock.Server(server):
        api = LightkubeAPI.from_kubeconfig(
            str(kubeconfig_for(server, tmp_path)), None, retry=Retry(sleep=fast_sleep)
        )
        rig = KubeRig(api, server.add)
        try:
            async with kubelet(api, server, hold=lambda obj: obj["metadata"]["name"] in rig.held):
                yield rig
        finally:
            await api.close()
            server.drop_watches()
