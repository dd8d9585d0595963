"""GitOps with a cluster, in its two modes.

With `--repo`, Rheostat reconciles Git into the cluster: the GitOps engine with `ClusterTarget` (server-side
apply through plugins/kube/apply.py), and the status of its GitRepositories, Kustomizations and Receivers
written to their `status` subresource as Flux writes it (conditions, revisions, `inventory.entries`).

Without `--repo`, Flux (or anyone) owns Git: Flux's GitRepositories, Kustomizations and HelmReleases are
watched into the store read-only, so `rheostat get kustomizations` and the dashboard show them; asking
Rheostat to reconcile or suspend one is refused (`read_only`).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterable
from typing import Any

from rheostat.gitops.reconciler import (
    BOOTSTRAP,
    KUSTOMIZATION,
    SOURCE,
    GitOps,
    Health,
    Hooks,
    Plan,
    TargetError,
    body_of,
)
from rheostat.gitops.sources import Fetcher
from rheostat.model.core import REDACTED
from rheostat.model.load import FieldError, Manifest, ManifestError
from rheostat.plugins.kube.api import Kind, KubeAPI, KubeError, NotInstalled, Obj
from rheostat.plugins.kube.apply import ApplyAPI, ClusterApplier, PartlyApplied, inventory_id
from rheostat.plugins.routers import ROUTERS
from rheostat.reactor.cluster import SOURCE as MIRRORED
from rheostat.reactor.cluster import cached_body, cluster_catalogue
from rheostat.store.port import Change, State
from rheostat.util.backoff import Backoff
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)
NOT_RUN_LOCALLY = "stored, not run on the local platform"  # gitops/build.py's note
FLUX = "cluster (Flux)"  # the store source of Flux's own objects, shown read-only
GIT_REPOSITORY = Kind("source.toolkit.fluxcd.io/v1", "GitRepository", "gitrepositories", status=True)
KUSTOMIZATION_KIND = Kind("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "kustomizations", status=True)
RECEIVER = Kind("notification.toolkit.fluxcd.io/v1", "Receiver", "receivers", status=True)
HELM_RELEASE = Kind("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases", status=True)
OWN_STATUS = {k.kind: k for k in (GIT_REPOSITORY, KUSTOMIZATION_KIND, RECEIVER)}
FLUX_KINDS = (GIT_REPOSITORY, KUSTOMIZATION_KIND, HELM_RELEASE)


def read_only(store: State, kind: str, key: str) -> str | None:
    """Why an action on this object is refused (it is Flux's, mirrored from the cluster), or None."""
    stored = store.get_object(kind, key)
    if stored is None or stored.source != FLUX:
        return None
    verb = {SOURCE: "source git", KUSTOMIZATION: "kustomization"}.get(kind, kind.lower())
    return (
        f"{kind} {key} belongs to Flux in the cluster and is shown read-only; "
        f"use `flux reconcile {verb} {key.partition('/')[2]} -n {key.partition('/')[0]}` "
        "(or flux suspend/resume)"
    )


# -- the target ----------------------------------------------------------------------------------------------


class ClusterTarget:
    """The gitops engine's target when a cluster is: objects applied to it, the store keeping a copy."""

    reads_health = True
    adopts = frozenset({MIRRORED})  # a Canary watched in from the cluster before its Kustomization applied it

    def __init__(self, api: ApplyAPI, store: State) -> None:
        self.api = api
        self.store = store
        self.applier = ClusterApplier(api)

    def _pairs(self, plan: Plan, objects: Iterable[Manifest]) -> list[tuple[str, Obj]]:
        out = []
        for obj in objects:
            body = body_of(obj)
            ident = f"{obj.kind} {obj.metadata.key}"
            file = plan.files.get(ident, "")
            if obj.kind == "Secret" and REDACTED in str(body.get("data", "")) + str(
                body.get("stringData", "")
            ):
                raise ManifestError(
                    file,
                    ident,
                    [
                        FieldError(
                            "data",
                            "Secret values from Git are not applied to a cluster; encrypt them with SOPS",
                        )
                    ],
                )
            out.append((file, body))
        return out

    async def observe(self, plan: Plan) -> None:
        # the build's note that core kinds are only stored is about the embedded default: here they apply
        plan.notes = [n for n in plan.notes if not n.startswith(NOT_RUN_LOCALLY)]
        objs = [*plan.unchanged, *plan.drifted]
        texts = [plan.bodies.get(f"{o.kind} {o.metadata.key}", "") for o in objs]
        try:
            flags = await self.applier.drifted(self._pairs(plan, objs), texts)
        except KubeError as exc:
            raise TargetError(f"cannot read the cluster: {exc}") from exc
        plan.drifted = [o for o, d in zip(objs, flags, strict=True) if d]
        plan.unchanged = [o for o, d in zip(objs, flags, strict=True) if not d]

    async def dry_run(self, plan: Plan) -> None:
        try:
            await self.applier.dry_run(self._pairs(plan, [*plan.created, *plan.updated, *plan.drifted]))
        except KubeError as exc:
            raise TargetError(f"dry-run failed: {exc}") from exc

    async def apply(self, plan: Plan, revision: str, *, force: bool = False) -> None:
        pairs = self._pairs(plan, [*plan.created, *plan.updated, *plan.drifted])
        try:
            await self.applier.apply(pairs, force=force)
        except PartlyApplied as exc:
            applied = [(i.partition(" ")[0], i.partition(" ")[2]) for i in exc.applied]
            raise TargetError(str(exc), applied) from exc
        refs = []
        for kind, key in plan.pruned:
            stored = self.store.get_object(kind, key)
            if stored is not None and "apiVersion" in stored.body:
                ns, _, name = key.partition("/")
                refs.append(
                    {
                        "apiVersion": stored.body["apiVersion"],
                        "kind": kind,
                        "metadata": {"name": name, "namespace": ns},
                    }
                )
        try:
            await self.applier.prune(refs)
        except KubeError as exc:
            raise TargetError(f"revision {revision} applied; pruning failed: {exc}") from exc
        for obj in plan.drifted:  # on the object itself too, as `kubectl describe` shows
            body = body_of(obj)
            of = await self.applier.kinds.of(body)
            meta = body["metadata"]
            live = await self.applier.live.get(of, meta.get("namespace", ""), meta["name"])
            try:
                await self.api.event(
                    live or body,
                    "DriftRepaired",
                    f"{obj.kind} {obj.metadata.key} set back to what Git says at {revision}",
                    warning=True,
                )
            except KubeError as exc:
                log.warning("event on %s %s not written: %s", obj.kind, obj.metadata.key, exc)

    async def health(self, kind: str, key: str) -> Health:
        stored = self.store.get_object(kind, key)
        if stored is None:
            return Health(False, "not applied")
        ns, _, name = key.partition("/")
        try:
            ready, message = await self.applier.health(str(stored.body.get("apiVersion")), kind, ns, name)
        except KubeError as exc:
            return Health(None, f"cannot read it: {exc}")
        return Health(ready, message)

    async def close(self) -> None:
        await self.applier.live.close()


# -- status subresources, as Flux writes them --------------------------------------------------------------


def _time(ts: Any) -> str:
    when = datetime.datetime.fromtimestamp(float(ts or 0), datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def flux_status(
    kind: str, state: dict[str, Any], entries: list[dict[str, str]], generation: int | None
) -> Obj:
    """A GitRepository's, Kustomization's or Receiver's status from the engine's state, in Flux's fields."""
    conditions = [
        {
            "type": c["type"],
            "status": c["status"],
            "reason": c["reason"],
            "message": c["message"],
            "lastTransitionTime": _time(c.get("lastTransitionTime")),
            **({"observedGeneration": generation} if generation is not None else {}),
        }
        for c in state.get("conditions", [])
    ]
    out: Obj = {"conditions": conditions}
    if generation is not None:
        out["observedGeneration"] = generation
    if kind == KUSTOMIZATION:
        for name in ("lastAppliedRevision", "lastAttemptedRevision"):
            if state.get(name):
                out[name] = state[name]
        out["inventory"] = {"entries": entries}
    if kind == SOURCE and state.get("artifact"):
        artifact = state["artifact"]
        out["artifact"] = {
            "revision": artifact["revision"],
            "path": artifact["path"],
            "url": f"file://{artifact['path']}",
            "lastUpdateTime": _time(state.get("lastFetch")),
        }
    return out


class StatusWriter:
    """Each change of an engine state goes to the object's status subresource (only when it changed; an
    object that is not in the cluster, like the root of `--repo`, has none)."""

    def __init__(self, api: KubeAPI, store: State, target: ClusterTarget) -> None:
        self.api = api
        self.store = store
        self.target = target
        self.written: dict[tuple[str, str], Obj] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._unwatch = store.watch(self._changed)

    def _changed(self, changes: frozenset[Change]) -> None:
        for what, key in changes:
            kind = what.removesuffix(".status")
            if what.endswith(".status") and kind in OWN_STATUS:
                self._dirty.add((kind, key))
                self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            await self.flush()

    async def flush(self) -> None:
        """Write every status changed since the last flush."""
        self._wake.clear()
        dirty, self._dirty = self._dirty, set()
        for kind, key in sorted(dirty):
            try:
                await self.write(kind, key)
            except KubeError as exc:  # written with the next change of its state
                self._dirty.add((kind, key))
                log.warning("status of %s %s not written: %s", kind, key, exc)

    def entries(self, state: dict[str, Any]) -> list[dict[str, str]]:
        out = []
        for kind_name, key in state.get("inventory", []):
            stored = self.store.get_object(kind_name, key)
            api_version = str((stored.body if stored else {}).get("apiVersion", ""))
            kind = self.target.applier.kinds.known(api_version, kind_name)
            if kind is None:
                continue
            ns, _, name = key.partition("/")
            out.append({"id": inventory_id(kind, ns, name), "v": kind.version})
        return sorted(out, key=lambda e: e["id"])

    async def write(self, kind_name: str, key: str) -> None:
        stored = self.store.get_object(kind_name, key)
        if stored is None or stored.source == BOOTSTRAP:
            return  # not an object of the cluster
        kind = OWN_STATUS[kind_name]
        kind = Kind(str(stored.body.get("apiVersion", kind.api_version)), kind.kind, kind.plural, status=True)
        ns, _, name = key.partition("/")
        live = await self.target.applier.live.get(kind, ns, name)
        if live is None:
            return
        generation = live.get("metadata", {}).get("generation")
        state = self.store.get_state(kind_name, key) or {}
        status = flux_status(kind_name, state, self.entries(state), generation)
        if self.written.get((kind_name, key)) == status or live.get("status") == status:
            self.written[(kind_name, key)] = status
            return
        await self.api.patch_status(kind, ns, name, status)
        self.written[(kind_name, key)] = status

    def close(self) -> None:
        self._unwatch()


# -- Flux's objects, read-only ----------------------------------------------------------------------------


def _seconds(stamp: Any) -> float:
    try:
        return datetime.datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def state_from_flux(obj: Obj) -> dict[str, Any]:
    """Flux's status in the engine's state shape, so listings and the dashboard read both alike."""
    status = obj.get("status") or {}
    state: dict[str, Any] = {
        "conditions": [
            {
                "type": c.get("type", ""),
                "status": c.get("status", "Unknown"),
                "reason": c.get("reason", ""),
                "message": c.get("message", ""),
                "lastTransitionTime": _seconds(c.get("lastTransitionTime")),
            }
            for c in status.get("conditions") or []
        ],
        "readOnly": "Flux",
    }
    for name in ("lastAppliedRevision", "lastAttemptedRevision"):
        if status.get(name):
            state[name] = status[name]
    if isinstance(status.get("artifact"), dict):
        state["artifact"] = {"revision": status["artifact"].get("revision", "")}
    entries = (status.get("inventory") or {}).get("entries") or []
    if entries:
        state["fluxInventory"] = [e.get("id", "") for e in entries]
    return state


class FluxMirror:
    """Flux's GitRepositories, Kustomizations and HelmReleases, watched into the store (kinds whose CRDs are
    not installed are left out: the cluster has no Flux)."""

    def __init__(self, api: KubeAPI, store: State, namespace: str | None = None) -> None:
        self.api = api
        self.store = store
        self.namespace = namespace
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        for kind in FLUX_KINDS:
            try:
                items = await self.api.list(kind, self.namespace)
            except NotInstalled:
                continue
            except KubeError as exc:
                log.warning("cannot list Flux's %s: %s", kind.plural, exc)
                continue
            for obj in items:
                self._put(kind, obj)
            self._tasks.append(supervised(self._watch(kind), name=f"watch:flux:{kind.plural}"))

    def _put(self, kind: Kind, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        key = f"{meta.get('namespace') or 'default'}/{meta['name']}"
        stored = self.store.get_object(kind.kind, key)
        if stored is not None and stored.source != FLUX:
            return  # Rheostat's own (from Git): never overwritten by a mirror
        with self.store.transaction():
            self.store.put_object(kind.kind, key, cached_body(obj), FLUX)
            self.store.put_state(kind.kind, key, state_from_flux(obj))

    def _deleted(self, kind: Kind, obj: Obj) -> None:
        meta = obj.get("metadata", {})
        key = f"{meta.get('namespace') or 'default'}/{meta['name']}"
        stored = self.store.get_object(kind.kind, key)
        if stored is not None and stored.source == FLUX:
            with self.store.transaction():
                self.store.delete_object(kind.kind, key)
                self.store.delete_state(kind.kind, key)

    async def _watch(self, kind: Kind) -> None:
        backoff = Backoff()
        while True:
            try:
                async for event, obj in self.api.watch(kind, self.namespace):
                    backoff.reset()
                    if event == "DELETED":
                        self._deleted(kind, obj)
                    else:
                        self._put(kind, obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await backoff.wait(log, f"watch of {kind}", exc)

    async def stop(self) -> None:
        await cancel_all(self._tasks)


# -- the two modes together ---------------------------------------------------------------------------------


class ClusterGitOps:
    """With a repository: the engine applying to the cluster and the status writer. Without: Flux's mirror."""

    def __init__(
        self,
        api: KubeAPI,
        store: State,
        *,
        fetcher: Fetcher[Any] | None = None,
        hooks: Hooks | None = None,
        bootstrap: Iterable[Manifest] = (),
        namespace: str | None = None,
        poll_interval_s: float = 1.0,
        mesh_provider: str = "istio",
    ) -> None:
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.gitops: GitOps | None = None
        self.target: ClusterTarget | None = None
        self.status: StatusWriter | None = None
        self.mirror: FluxMirror | None = None
        if fetcher is not None:
            if not hasattr(api, "apply_as"):
                raise ValueError(
                    "GitOps into a cluster needs server-side apply of any kind (the lightkube client)"
                )
            self.target = ClusterTarget(api, store)  # type: ignore[arg-type]  # checked just above
            catalogue = cluster_catalogue(ROUTERS.names(), mesh_provider)
            self.gitops = GitOps(
                store, fetcher, hooks, bootstrap=bootstrap, target=self.target, catalogue=catalogue
            )
            self.status = StatusWriter(api, store, self.target)
        else:
            self.mirror = FluxMirror(api, store, namespace)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.mirror is not None:
            await self.mirror.start()
            return
        assert self.gitops is not None and self.status is not None
        try:
            await self.gitops.reconcile_once(force=True)
        except Exception:  # the loop goes on and says why in the Kustomization's conditions
            log.exception("first gitops pass failed")
        self._tasks = [
            supervised(self.gitops.run(self.poll_interval_s), name="gitops:cluster"),
            supervised(self.status.run(), name="gitops:status"),
        ]

    async def pause(self) -> None:
        """Stop reconciling (this replica no longer leads); `start` again later."""
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)

    async def stop(self) -> None:
        await self.pause()
        if self.mirror is not None:
            await self.mirror.stop()
        if self.status is not None:
            self.status.close()
        if self.target is not None:
            await self.target.close()
