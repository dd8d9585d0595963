"""The routers of tests/test_router_contract.py, each on its own data plane, and what the contract does to that
data plane: see whether anything was written, inject a fault, list what the router left, restart the router.

Kubernetes routers run over MemoryKube (schema-checked) and over LightkubeAPI against the kmock server."""

from __future__ import annotations

import asyncio
import errno
import itertools
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import kmock
import pytest
import yaml

from rheostat.flags.rollout import PRIMARY_STATE, FlagRollouts
from rheostat.flags.store import FlagSource, FlagStore
from rheostat.model.base import ObjectKey
from rheostat.model.canary import Service
from rheostat.model.flags import FlagdConfig
from rheostat.plugins.kube.api import Kind, KubeAPI, Obj
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.errors import Retry
from rheostat.plugins.kube.kinds import (
    DESTINATION_RULE,
    HTTPROUTE,
    INGRESS,
    SERVICE,
    TRAFFIC_SPLIT_V1ALPHA2,
    TRAFFIC_SPLIT_V1ALPHA3,
    VIRTUAL_SERVICE,
)
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.plugins.routers import ROUTERS
from rheostat.plugins.routers.base import Router, ServiceRoute, Upstream
from rheostat.plugins.routers.envoy import EnvoyRouter, config
from rheostat.plugins.routers.envoy import admin as envoy_admin
from rheostat.plugins.routers.envoy import router as envoy_router
from rheostat.store import Store
from tests.kube_schemas import assert_valid
from tests.kubeapi import KubeServer
from tests.servers import free_port

NS = "test"
APEX = "podinfo"
PORT = 9898
MANAGED_BY = "app.kubernetes.io/managed-by"
CANARY_ANNOTATION = "rheostat.dev/canary"
WRITES = ("create", "update", "patch", "delete")
KUBE_KEY = ObjectKey(f"{NS}/{APEX}")
FLAG_CANARY = ObjectKey("shop/checkout")


class Rig(Protocol):
    """One router on its data plane. `router` is replaced by `restart()`."""

    key: ObjectKey
    route: ServiceRoute
    faults: tuple[str, ...]  # the names `fault()` takes

    @property
    def router(self) -> Router: ...

    async def restart(self) -> None:
        """A new router instance with nothing in memory, on the same data plane."""

    def written(self) -> object:
        """Something that changes whenever the router writes to its data plane."""

    def fault(self, name: str) -> AbstractContextManager[None]:
        """Inside the block, the router's next write to its data plane fails."""

    async def leftovers(self) -> list[str]:
        """What the router made for the canary and is still there."""


# -- Kubernetes routers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubeRouter:
    """How one Kubernetes router is set up: the registry name, the object it routes with, the write verb
    its split goes out with (server-side apply is a PATCH, a read-modify-write a PUT), its `spec.service`."""

    name: str
    kind: Kind
    write: str
    service: dict[str, Any] = field(default_factory=dict)
    ingress: str | None = None


KUBE_ROUTERS = {
    "istio": KubeRouter("istio", VIRTUAL_SERVICE, "patch"),
    "gatewayapi:v1": KubeRouter(
        "gatewayapi:v1", HTTPROUTE, "patch", {"gatewayRefs": [{"name": "public", "namespace": "gateways"}]}
    ),
    "smi:v1alpha3": KubeRouter("smi:v1alpha3", TRAFFIC_SPLIT_V1ALPHA3, "patch"),
    "linkerd": KubeRouter("linkerd", TRAFFIC_SPLIT_V1ALPHA2, "patch"),
    "nginx": KubeRouter("nginx", INGRESS, "update", ingress=APEX),
    "kubernetes": KubeRouter("kubernetes", SERVICE, "update"),
}
# The kinds a Kubernetes router may write for a canary (all of them checked for leftovers).
ROUTING_KINDS = (
    VIRTUAL_SERVICE,
    DESTINATION_RULE,
    HTTPROUTE,
    TRAFFIC_SPLIT_V1ALPHA2,
    TRAFFIC_SPLIT_V1ALPHA3,
    INGRESS,
)


class CheckedKube(MemoryKube):
    """MemoryKube refusing, as a failed test, any object written that does not validate against its schema."""

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        assert_valid(obj)
        return await super().apply(obj, force=force)

    async def replace(self, obj: Obj) -> Obj:
        assert_valid(obj)
        return await super().replace(obj)


def services() -> list[Obj]:
    """The apex, primary and canary Services as the kubernetes platform makes them (apex on the primary)."""

    def service(name: str, pods: str) -> Obj:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "selector": {"app": pods},
                "ports": [{"name": "http", "port": PORT, "targetPort": "http"}],
            },
        }

    return [
        service(APEX, f"{APEX}-primary"),
        service(f"{APEX}-primary", f"{APEX}-primary"),
        service(f"{APEX}-canary", APEX),
    ]


def ingress() -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": APEX, "namespace": NS, "annotations": {"kubernetes.io/ingress.class": "nginx"}},
        "spec": {
            "rules": [
                {
                    "host": "app.example.com",
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": APEX, "port": {"number": PORT}}},
                            }
                        ]
                    },
                }
            ]
        },
    }


@dataclass
class KubeRig:
    setup: KubeRouter
    api: KubeAPI
    memory: MemoryKube | None  # the in-memory server, or
    server: KubeServer | None  # the kmock one behind LightkubeAPI
    router: Router = field(init=False)
    key: ObjectKey = KUBE_KEY
    faults: tuple[str, ...] = ("conflict", "unavailable")

    def __post_init__(self) -> None:
        self.router = self._new()
        self.route = ServiceRoute(
            key=self.key,
            port=PORT,
            primary=(Upstream(f"{APEX}-primary", PORT),),
            canary=(Upstream(f"{APEX}-canary", PORT),),
            service=Service.model_validate({"port": PORT, **self.setup.service}),
            target=f"{NS}/{APEX}",
            ingress=self.setup.ingress,
        )
        objects = services() + ([ingress()] if self.setup.ingress else [])
        for obj in objects:
            (self.memory or self.server).add(obj)  # type: ignore[union-attr]

    def _new(self) -> Router:
        return ROUTERS.create(self.setup.name, api=self.api)

    async def restart(self) -> None:
        self.router = self._new()

    def written(self) -> object:
        if self.memory is not None:
            return len(self.memory.writes)
        assert self.server is not None
        return sum(1 for c in self.server.calls if c.verb in WRITES)

    @contextmanager
    def fault(self, name: str) -> Iterator[None]:
        status, times = {"conflict": (409, 1), "unavailable": (503, 5)}[name]  # 5: the client's tries
        target = self.memory or self.server
        assert target is not None
        target.fail(status, times, verb=self.setup.write, kind=self.setup.kind)
        yield

    async def leftovers(self) -> list[str]:
        out = []
        for kind in ROUTING_KINDS:
            for obj in await self.api.list(kind, NS):
                meta = obj["metadata"]
                if (meta.get("annotations") or {}).get(CANARY_ANNOTATION) == self.key:
                    out.append(f"{kind.kind} {meta['name']}")
        apex = await self.api.get(SERVICE, NS, APEX)
        assert apex is not None
        if apex["spec"]["selector"] != {"app": f"{APEX}-primary"}:  # the kubernetes router's cut-over
            out.append(f"Service {APEX} selects {apex['spec']['selector']}")
        return out


async def fast_sleep(seconds: float) -> None:
    """The client's backoff between retries, without the wait."""
    await asyncio.sleep(0)


def kubeconfig_for(server: KubeServer, folder: Path) -> Path:
    path = folder / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(server.url).rstrip("/")}}],
                "users": [{"name": "kmock", "user": {"token": "test"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


@asynccontextmanager
async def kube_rig(name: str, backend: str, tmp_path: Path) -> AsyncIterator[KubeRig]:
    setup = KUBE_ROUTERS[name]
    if backend == "memory":
        mem = CheckedKube()
        yield KubeRig(setup, mem, mem, None)
        return
    async with KubeServer() as server, kmock.Server(server):
        api = LightkubeAPI.from_kubeconfig(
            str(kubeconfig_for(server, tmp_path)), None, retry=Retry(sleep=fast_sleep)
        )
        try:
            yield KubeRig(setup, api, None, server)
        finally:
            await api.close()
            server.drop_watches()


# -- the Envoy router --------------------------------------------------------------------------------------


class SharedEnvoy:
    """One Envoy for a whole module (started when first asked for); each rig routes its own canary on it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.router: EnvoyRouter | None = None
        self._names = itertools.count()

    async def get(self) -> EnvoyRouter:
        if self.router is None:
            self.router = EnvoyRouter(self.data_dir)
            await self.router.start()
        return self.router

    async def restart(self) -> EnvoyRouter:
        """A new router adopting the running Envoy, knowing only what is on disk."""
        if self.router is not None:
            await self.router.stop(end_envoy=False)
        self.router = None
        return await self.get()

    def next_key(self) -> ObjectKey:
        return ObjectKey(f"shop/web-{next(self._names)}")

    async def stop(self) -> None:
        if self.router is not None:
            await self.router.stop()


@dataclass
class EnvoyRig:
    shared: SharedEnvoy
    router: Router
    key: ObjectKey
    route: ServiceRoute
    faults: tuple[str, ...] = ("disk full", "admin unavailable")

    async def restart(self) -> None:
        self.router = await self.shared.restart()

    def written(self) -> object:
        root = self.shared.data_dir / "xds"
        return {p: p.read_bytes() for p in sorted(root.rglob("*.json"))}

    @contextmanager
    def fault(self, name: str) -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            if name == "disk full":

                def full(*args: object) -> bytes:
                    raise OSError(errno.ENOSPC, "No space left on device")

                mp.setattr(envoy_router, "write_json_atomic", full)
            else:

                async def down(*args: object) -> dict[str, str]:
                    raise envoy_admin.AdminError("admin socket: connection refused")

                mp.setattr(envoy_admin.AdminClient, "stats", down)
                mp.setattr(envoy_router, "CONFIRM_TIMEOUT_S", 0.3)
            yield

    async def leftovers(self) -> list[str]:
        router = await self.shared.get()
        out = []
        if router.layout.rds(self.key).exists():
            out.append(f"routes file of {self.key}")
        name = config.resource_name(self.key)
        clusters = {config.cluster_name(self.key, group) for group in config.GROUPS}
        cds = json.loads(router.layout.cds.read_text())
        out += [f"cluster {c['name']}" for c in cds["resources"] if c["name"] in clusters]
        lds = json.loads(router.layout.lds.read_text())
        out += [f"listener {r['name']}" for r in lds["resources"] if r["name"] == name]
        return out


async def envoy_rig(shared: SharedEnvoy) -> EnvoyRig:
    router = await shared.get()
    key = shared.next_key()
    route = ServiceRoute(
        key=key,
        port=free_port(),
        primary=(Upstream("127.0.0.1", free_port()),),  # nothing answers there: the config is what counts
        canary=(Upstream("127.0.0.1", free_port()),),
    )
    return EnvoyRig(shared, router, key, route)


# -- feature flags -----------------------------------------------------------------------------------------

FLAG = "new-checkout"


def flag_source(default: str) -> FlagSource:
    config = FlagdConfig.model_validate(
        {
            "flags": {
                FLAG: {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default}
            }
        }
    )
    return FlagSource("FeatureFlag shop/checkout", config, f"main@sha1:{default}")


@dataclass
class FlagRig:
    """FlagRollouts as the router of a flag whose new definition (in Git) is being rolled out."""

    db: Store = field(default_factory=lambda: Store(":memory:"))
    flags: FlagStore = field(default_factory=FlagStore)
    key: ObjectKey = FLAG_CANARY
    faults: tuple[str, ...] = ("state store full",)

    def __post_init__(self) -> None:
        self.sources = [flag_source("off")]
        self.flags.replace(self.sources)
        self.router: FlagRollouts = FlagRollouts(self.flags, self.db)
        self.route = ServiceRoute(key=self.key, port=0, primary=(), canary=(), target=FLAG)

    async def start(self) -> None:
        await self.router.ensure_primary(ObjectKey(FLAG))  # the platform's half pins the served definition
        self.sources = [flag_source("on")]  # then Git moves on: the new definition is the canary
        self.flags.replace(self.sources)

    async def restart(self) -> None:
        """A controller restart: a new flag store fed from Git, a new FlagRollouts restored from the state."""
        self.flags = FlagStore()
        self.flags.replace(self.sources)
        self.router = FlagRollouts(self.flags, self.db)
        self.router.restore()

    def written(self) -> object:
        return self.db.list_states(PRIMARY_STATE), self.flags.split(FLAG)

    @contextmanager
    def fault(self, name: str) -> Iterator[None]:
        def full(*args: object) -> None:
            raise sqlite3.OperationalError("database or disk is full")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(self.db, "put_state", full)
            yield

    async def leftovers(self) -> list[str]:
        out = []
        if self.flags.primary(FLAG) is not None:
            out.append(f"a pinned primary of {FLAG}")
        if self.db.get_state(PRIMARY_STATE, FLAG) is not None:
            out.append(f"the state row of {FLAG}")
        return out


async def flag_rig() -> FlagRig:
    rig = FlagRig()
    await rig.start()
    return rig
