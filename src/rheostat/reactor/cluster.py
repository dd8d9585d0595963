"""Against a cluster: the Canaries, MetricTemplates and AlertProviders in it are watched into the store (the
controller's cache, as an informer's), and each Canary's status and events are written back to it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, parse_object
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, KubeAPI, KubeError, Obj, WriteCheck
from rheostat.plugins.platforms import PLATFORMS
from rheostat.plugins.routers import ROUTERS
from rheostat.reactor.settings import ClusterSettings
from rheostat.rollout.backends import REFUSED_EVERYWHERE, WORKLOAD_KINDS, Backends, Catalogue
from rheostat.rollout.engine import CANARY, Engine, target_of
from rheostat.rollout.flagger_status import from_flagger, to_flagger
from rheostat.store.port import State
from rheostat.util.backoff import Backoff
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)
SOURCE = "cluster"  # the source of mirrored objects in the store
WATCHED = (kinds.CANARY, kinds.METRIC_TEMPLATE, kinds.ALERT_PROVIDER)
# Routers that drive a cluster, by Flagger's provider names; those not registered are not offered.
CLUSTER_ROUTERS = (
    "istio",
    "gatewayapi",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "linkerd",
    "nginx",
    "kubernetes",
)
MANUAL_ANNOTATION = "rheostat.dev/manual"  # JSON of the requests made by hand (rheostat halt, approve, ...)
VOLATILE = ("resourceVersion", "managedFields", "generation", "creationTimestamp")


def cluster_catalogue(available: list[str], mesh_provider: str) -> Catalogue:
    names = [n for n in CLUSTER_ROUTERS if n in available]
    return Catalogue(
        dict.fromkeys(names, WORKLOAD_KINDS),
        dict.fromkeys(WORKLOAD_KINDS, mesh_provider),
        "in this cluster",
        refused={
            **REFUSED_EVERYWHERE,
            "service.unmanagedMetadata": "the kubernetes platform writes the Services' labels and annotations whole",
        },
    )


def cluster_backends(api: KubeAPI, mesh_provider: str) -> Backends:
    """Every mesh router Rheostat has, on this cluster's API, and the `kubernetes` platform for Deployments
    and DaemonSets. A mesh whose CRDs are not installed is still offered: its router says which CRD is missing."""
    catalogue = cluster_catalogue(ROUTERS.names(), mesh_provider)
    platform = PLATFORMS.create("kubernetes", api=api)
    routers = {name: ROUTERS.create(name, api=api) for name in catalogue.routes}
    return Backends(catalogue, routers, dict.fromkeys(WORKLOAD_KINDS, platform))


def connect(
    settings: ClusterSettings, *, fence: WriteCheck | None = None, tries: int | None = None
) -> KubeAPI:
    """The cluster's API from a kubeconfig (or the pod's service account). `fence` is asked before every write
    attempt (leader election); `tries` bounds the retries (the Lease's client: one try, its loop retries)."""
    from rheostat.plugins.kube.client import LightkubeAPI
    from rheostat.plugins.kube.errors import Retry

    retry = Retry(tries=tries) if tries is not None else None
    return LightkubeAPI.from_kubeconfig(settings.kubeconfig, settings.context, retry=retry, fence=fence)


def cached_body(obj: Obj) -> dict[str, Any]:
    """What the store keeps of a cluster object: no status, no fields that change on every write."""
    body = {k: v for k, v in obj.items() if k != "status"}
    body["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k not in VOLATILE}
    return body


class ClusterSecrets:
    """The Secrets that MetricTemplates and AlertProviders name, read from the cluster and kept in memory only
    (never in the store, on disk or in a log); a watch keeps them current."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self.wanted: set[str] = set()
        self._data: dict[str, dict[str, str]] = {}
        self.namespace: str | None = None
        self.task: asyncio.Task[None] | None = None  # the watch, from the first Secret wanted on

    def get(self, namespace: str, name: str) -> dict[str, str] | None:
        return self._data.get(f"{namespace}/{name}")

    async def want(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        if key in self.wanted:
            return
        self.wanted.add(key)
        if self.task is None:  # no Secret is streamed into this process before one is needed
            self.task = supervised(self.watch(self.namespace), name="watch:secrets")
        try:
            found = await self.api.get(kinds.SECRET, namespace, name)
        except KubeError as exc:  # the check that needs it names what is missing
            log.warning("secret %s not read: %s", key, exc)
            return
        if found is not None:
            self.update("ADDED", found)

    def update(self, event: str, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        key = f"{meta.get('namespace', 'default')}/{meta.get('name')}"
        if key not in self.wanted:
            return
        if event == "DELETED":
            self._data.pop(key, None)
            return
        data = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
        self._data[key] = {**data, **{k: str(v) for k, v in (obj.get("stringData") or {}).items()}}

    async def watch(self, namespace: str | None) -> None:
        backoff = Backoff()
        while True:
            try:
                async for event, obj in self.api.watch(kinds.SECRET, namespace):
                    backoff.reset()
                    self.update(event, obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await backoff.wait(log, "watch of secrets", exc)


class ClusterMirror:
    """Watches (never periodic lists) keep the store's copy of the cluster's objects; after every tick, the
    Canary's status subresource and Events are brought up to date: a status at rest is written once."""

    def __init__(
        self,
        api: KubeAPI,
        store: State,
        engine: Engine,
        kick: Callable[[ObjectKey], None],
        namespace: str | None = None,
    ) -> None:
        self.api = api
        self.store = store
        self.engine = engine
        self.kick = kick
        self.namespace = namespace
        self.written: dict[ObjectKey, dict[str, Any]] = {}  # status subresource as last written
        self.manual_written: dict[ObjectKey, dict[str, Any]] = {}  # the manual requests on the Canary
        self._seen_event: dict[ObjectKey, int] = {}
        self._seen_tick: dict[ObjectKey, int] = {}
        self._failure: dict[ObjectKey, str] = {}
        self._refs: dict[ObjectKey, Obj] = {}  # apiVersion/kind/metadata of each Canary, for its Events
        self._invalid: dict[tuple[Kind, ObjectKey], str] = {}  # the text of a version refused, once said
        self._tasks: list[asyncio.Task[None]] = []
        self.secrets = ClusterSecrets(api)
        self.secrets.namespace = namespace
        self.on_deleted: Callable[[Canary], Awaitable[None]] | None = None
        # False on a standby (reactor/leader.py): it writes nothing and keeps the status the leader writes
        self.leading: Callable[[], bool] = lambda: True

    # -- the watches -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """What the cluster holds now is in the store when this returns; then one watch per kind."""
        for kind in WATCHED:
            try:
                await self._resync(kind)
            except KubeError as exc:  # start without it: each Canary's tick reports what is missing
                log.warning("cannot list %s: %s", kind, exc)
        self._tasks = [supervised(self._watch(kind), name=f"watch:{kind.plural}") for kind in WATCHED]

    async def stop(self) -> None:
        await cancel_all([*self._tasks, *([self.secrets.task] if self.secrets.task is not None else [])])

    async def _resync(self, kind: Kind) -> None:
        """One LIST, at start and after a broken watch (never periodically): what was deleted meanwhile goes."""
        items = await self.api.list(kind, self.namespace)
        seen = {self._key(o) for o in items}
        for obj in items:
            await self._put(kind, self._key(obj), obj)
        for stored in self.store.list_objects(kind.kind):
            if stored.source == SOURCE and ObjectKey(stored.key) not in seen:
                await self._deleted(kind, ObjectKey(stored.key))

    async def _watch(self, kind: Kind) -> None:
        backoff = Backoff()
        broken = False
        while True:
            try:
                if broken:
                    await self._resync(kind)
                async for event, obj in self.api.watch(kind, self.namespace):
                    backoff.reset()
                    key = self._key(obj)
                    if event == "DELETED":
                        await self._deleted(kind, key)
                    else:
                        await self._put(kind, key, obj)
                broken = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                broken = True
                await backoff.wait(log, f"watch of {kind}", exc)

    @staticmethod
    def _key(obj: Obj) -> ObjectKey:
        meta = obj.get("metadata", {})
        return object_key(meta.get("namespace") or "default", meta["name"])

    async def _put(self, kind: Kind, key: ObjectKey, obj: Obj) -> None:
        body = cached_body(obj)
        text = json.dumps(body, sort_keys=True)
        current = self.store.get_object_text(kind.kind, key)
        first_sight = kind is kinds.CANARY and key not in self._refs
        if kind is kinds.CANARY:
            self._refs[key] = {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "metadata": obj["metadata"],
            }
        following = kind is kinds.CANARY and not self.leading()
        if (first_sight or following) and obj.get("status"):
            self._import_status(key, obj.get("status") or {})
        if first_sight or following:
            self._import_manual(key, obj, replace=following)
        if current is not None and current[0] == text:
            return
        if self._invalid.get((kind, key)) == text:
            return  # said already (the watch brings it again with every status written)
        try:
            parse_object(body, f"{kind.kind} {key} (cluster)")
        except ManifestError as exc:  # the last good version keeps running; the object says why
            self._invalid[(kind, key)] = text
            await self._event(kind, obj, "InvalidSpec", str(exc), warning=True)
            return
        self._invalid.pop((kind, key), None)
        with self.store.transaction():
            self.store.put_object(kind.kind, key, body, SOURCE)
        if kind is kinds.CANARY:
            self.kick(key)
        ref = (
            (body.get("spec", {}).get("provider") or {})
            if kind is kinds.METRIC_TEMPLATE
            else body.get("spec", {})
        )
        if isinstance(ref, dict) and isinstance(ref.get("secretRef"), dict):
            await self.secrets.want(key.partition("/")[0], str(ref["secretRef"].get("name")))

    def _import_manual(self, key: ObjectKey, obj: Obj, *, replace: bool = False) -> None:
        """What people asked for by hand (halt, approve, pause, ...) lives on the Canary too: a controller on
        a new data dir keeps honouring it. With `replace` (a standby, a takeover) the Canary's is the truth."""
        text = (obj["metadata"].get("annotations") or {}).get(MANUAL_ANNOTATION)
        try:
            manual = dict(json.loads(text)) if text else {}
        except (TypeError, ValueError):
            manual = {}
        self.manual_written[key] = manual
        local = self.store.get_manual(key)
        if manual != local and (replace or (manual and not local)):
            with self.store.transaction():
                self.store.put_manual(key, manual)

    def _import_status(self, key: ObjectKey, status: dict[str, Any]) -> None:
        """The cluster's status is the truth: a restarted controller (even on a new data dir) goes on from it."""
        found = from_flagger(status)
        if found is None or self.written.get(key) == status:
            return
        local = self.store.get_status(key)
        tick = int(local.get("tick", 0)) if local else 0
        with self.store.transaction():
            self.store.put_status(key, {**found.to_json(), "tick": tick})
        self.written[key] = status

    async def _deleted(self, kind: Kind, key: ObjectKey) -> None:
        stored = self.store.get_object(kind.kind, key)
        if stored is None or stored.source != SOURCE:
            return
        with self.store.transaction():
            self.store.delete_object(kind.kind, key)
            if kind is kinds.CANARY:
                self.store.delete_status(key)
        if kind is kinds.CANARY:
            self._forget(key)
            if not self.leading():
                return  # the leader finalizes it
            with suppress(ManifestError):
                canary = parse_object(stored.body, SOURCE)
                if isinstance(canary, Canary) and self.on_deleted is not None:
                    await self.on_deleted(canary)

    def _forget(self, key: ObjectKey) -> None:
        for d in (
            self.written,
            self.manual_written,
            self._seen_event,
            self._seen_tick,
            self._failure,
            self._refs,
        ):
            d.pop(key, None)

    # -- status and events back to the cluster ------------------------------------------------------

    async def after_tick(self, key: ObjectKey) -> None:
        ref = self._refs.get(key)
        if ref is None:
            return
        status = self.engine.status(key)
        events = self.store.events(kind=CANARY, key=key, after=self._seen_event.get(key, 0))
        if status.tick != self._seen_tick.get(key, status.tick):
            self._failure.pop(key, None)  # a tick was recorded: whatever failed before went through
        self._seen_tick[key] = status.tick
        failed = [e for e in events if e.reason == "TickFailed"]
        if failed and failed[-1].id == events[-1].id:
            self._failure[key] = failed[-1].message
        canary = self.engine.canary(key)
        sticky = canary is not None and canary.spec.the_analysis.sessionAffinity is not None
        tracked: dict[str, str] = {}
        if canary is not None:
            with suppress(LookupError):
                tracked = self.engine.backends.parts(canary)[1].tracked_configs(target_of(canary))
        desired = to_flagger(status, failure=self._failure.get(key), sticky=sticky, tracked=tracked)
        meta = ref["metadata"]
        for e in events:  # first: a status that says Succeeded has its Promoted event beside it
            await self.api.event(ref, e.reason, e.message, warning=e.warning)
            self._seen_event[key] = e.id
        if desired != self.written.get(key):
            await self.api.patch_status(kinds.CANARY, meta["namespace"], meta["name"], desired)
            self.written[key] = desired
        manual = self.store.get_manual(key)
        if manual != self.manual_written.get(key, {}):
            await self.api.apply(
                {
                    "apiVersion": ref["apiVersion"],
                    "kind": ref["kind"],
                    "metadata": {
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "annotations": {MANUAL_ANNOTATION: json.dumps(manual, sort_keys=True)},
                    },
                }
            )
            self.manual_written[key] = manual

    async def takeover(self) -> None:
        """This replica has just become the leader: every Canary's status and manual requests from the API
        itself (a watch may lag behind the last writes of the old leader), and the events in the store taken
        as told (whoever led then wrote them). The ticks go on from there, as after a restart."""
        items = await self.api.list(kinds.CANARY, self.namespace)
        for obj in items:
            key = self._key(obj)
            if obj.get("status"):
                self._import_status(key, obj["status"])
            self._import_manual(key, obj, replace=True)
            newest = self.store.events(kind=CANARY, key=key, limit=1)
            if newest:
                self._seen_event[key] = newest[-1].id

    async def _event(self, kind: Kind, obj: Obj, reason: str, message: str, *, warning: bool) -> None:
        if not self.leading():
            return  # the leader says it
        try:
            await self.api.event(obj, reason, message, warning=warning)
        except KubeError as exc:
            log.warning("event %s on %s %s not written: %s", reason, kind.kind, self._key(obj), exc)


async def release(backends: Backends, canary: Canary) -> None:
    """A Canary deleted from the cluster: its routes are removed (or given back) and its target released."""
    try:
        router, platform = backends.parts(canary)
    except LookupError:
        return
    await router.finalize(canary.metadata.key)
    await platform.release(canary)
