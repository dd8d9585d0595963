"""The GitOps reconciler: sources fetched, Kustomizations built and applied all or nothing, in order.

Flux's semantics on the store instead of a cluster: an inventory per Kustomization, prune, drift repair,
dependsOn, suspend, health checks, conditions Ready / Reconciling / Stalled, events with the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import posixpath
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rheostat.flags.store import FlagSource, source_of
from rheostat.gitops import conditions as cond
from rheostat.gitops.build import KUSTOMIZE_FILES, BuildCache, BuildError, Built, build, uses_kustomize
from rheostat.gitops.checks import Index, check_flags, check_references
from rheostat.gitops.sops import DecryptionError, decryptor_for
from rheostat.gitops.sources import (
    SOURCE_KINDS,
    SOURCE_TYPES,
    Fetched,
    Fetcher,
    FetchError,
    SecretLookup,
    Source,
    location,
    unreadable,
)
from rheostat.gitops.variables import VariablesError, variables_for
from rheostat.model.flags import FeatureFlag, FlagSet
from rheostat.model.gitops import Kustomization
from rheostat.model.load import FieldError, Manifest, ManifestError, parse_object
from rheostat.rollout.backends import EMBEDDED, Catalogue
from rheostat.store.port import State
from rheostat.util.durations import parse_duration

log = logging.getLogger(__name__)

SOURCE = "GitRepository"  # the root source of `rheostat run --repo`; SOURCE_KINDS lists every source kind
KUSTOMIZATION = "Kustomization"
BOOTSTRAP = "bootstrap"
MAX_NESTING = 5  # a Kustomization that applies Kustomizations that apply Kustomizations...
Ident = tuple[str, str]  # (kind, "namespace/name")


@dataclass(frozen=True)
class Health:
    ready: bool | None  # None: still progressing
    message: str = ""


@dataclass(frozen=True)
class Owner:
    """Who applies a set of objects: a Kustomization, or a HelmRelease (gitops/helm_release.py)."""

    kind: str
    key: str
    prune: bool
    wait: bool = False
    force: bool = False  # recreate what cannot be changed in place (a cluster's immutable fields)
    retry_s: float = 60.0  # after a refusal


class HelmPass(Protocol):
    """HelmRepositories, HelmCharts and HelmReleases, reconciled after the Kustomizations of each pass."""

    async def reconcile(self, requested: set[tuple[str, str]], now: float, *, force: bool) -> None: ...


@dataclass(frozen=True)
class GateVerdict:
    allowed: bool
    message: str = ""


@dataclass
class Hooks:
    """What the reconciler asks of the rest of the system; all optional so the engine runs alone."""

    on_applied: Callable[[list[Manifest], list[Ident]], Awaitable[None]] | None = None
    health: Callable[[str, str], Health] | None = None
    # objects, owner (Kustomization key), revision, files by "Kind ns/name"
    gate: Callable[[list[Manifest], str, str, dict[str, str]], Awaitable[GateVerdict]] | None = None
    secrets: SecretLookup | None = None  # Secrets outside Git: SOPS keys, postBuild.substituteFrom


class TargetError(Exception):
    """The target could not be read or written; `applied` names what was written before it failed."""

    def __init__(self, message: str, applied: list[Ident] | None = None) -> None:
        super().__init__(message)
        self.applied = applied or []


class Target(Protocol):
    """Where a Kustomization's objects go. The store is the local target: `_apply` writes the objects in the
    same transaction as the inventory, so `LocalTarget` has nothing more to do. A cluster is another
    (reactor/cluster_gitops.py): the store then keeps a copy of what was applied, for the API and trace."""

    reads_health: bool  # True: health comes from `health`, not from Hooks.health
    adopts: frozenset[str]  # store sources of objects a Kustomization may take over (besides bootstrap)

    async def observe(self, plan: Plan) -> None:
        """Move what the target changed behind Git's back to plan.drifted, the rest to plan.unchanged."""

    async def dry_run(self, plan: Plan) -> None:
        """ManifestError (file, object, field) when the target would refuse an object; writes nothing."""

    async def apply(self, plan: Plan, revision: str, *, force: bool = False) -> None:
        """Write created, updated and drifted objects, then prune. ManifestError: refused and nothing of it
        left; TargetError: failed part-way (it says what was written)."""

    async def health(self, kind: str, key: str) -> Health: ...


class LocalTarget:
    reads_health = False
    adopts: frozenset[str] = frozenset()

    async def observe(self, plan: Plan) -> None:
        return None

    async def dry_run(self, plan: Plan) -> None:
        return None

    async def apply(self, plan: Plan, revision: str, *, force: bool = False) -> None:
        return None

    async def health(self, kind: str, key: str) -> Health:
        return Health(True)


def body_of(obj: Manifest) -> dict[str, Any]:
    return obj.model_dump(mode="json", exclude_none=True, by_alias=True)


@dataclass
class Plan:
    """What one Kustomization would change: the output of `diff` and the input of apply."""

    created: list[Manifest] = field(default_factory=list)
    updated: list[Manifest] = field(default_factory=list)
    drifted: list[Manifest] = field(default_factory=list)  # Git unchanged, the stored object was changed
    unchanged: list[Manifest] = field(default_factory=list)
    pruned: list[Ident] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # "Kind ns/name" -> file in the source
    bodies: dict[str, str] = field(default_factory=dict)  # "Kind ns/name" -> body as stored JSON
    notes: list[str] = field(default_factory=list)  # what the build left out or only stores (build.py)
    deprecated: list[str] = field(default_factory=list)  # deprecated Flux versions and fields it read
    secret_values: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)  # memory only

    @property
    def empty(self) -> bool:
        return not (self.created or self.updated or self.drifted or self.pruned)


class GitOps:
    def __init__(
        self,
        store: State,
        fetcher: Fetcher[Any],
        hooks: Hooks | None = None,
        *,
        clock: Callable[[], float] = time.time,
        bootstrap: Iterable[Manifest] = (),
        target: Target | None = None,
        catalogue: Catalogue = EMBEDDED,
    ) -> None:
        self.store = store
        self.target: Target = target or LocalTarget()
        self.catalogue = catalogue  # what Canaries may run on: the embedded default, or the cluster's
        self.fetcher = fetcher
        self.hooks = hooks or Hooks()
        self.clock = clock
        self._requested: set[Ident] = set()
        self._index_cache: Index | None = None
        self._builds = BuildCache()
        self._git_secrets: dict[str, dict[str, str]] = {}  # Secrets applied from Git: values in memory only
        self._wake = asyncio.Event()
        self.helm: HelmPass | None = None  # set by whoever wires Helm in (reactor/controller.py)
        with store.transaction():
            for obj in bootstrap:
                store.put_object(obj.kind, obj.metadata.key, body_of(obj), source=BOOTSTRAP)

    # -- asking -----------------------------------------------------------------------------------------

    def request(self, kind: str, key: str) -> None:
        """Reconcile this object at the next pass, whatever its interval (receivers, CLI, local watch)."""
        self._requested.add((kind, key))
        self._wake.set()

    def suspend(self, kind: str, key: str, suspended: bool) -> None:
        """`rheostat suspend|resume`: held in the object's state, beside what Git says in spec.suspend."""
        with self.store.transaction():
            state = self.state(kind, key)
            state["suspended"] = suspended
            self.store.put_state(kind, key, state)
            self.store.add_event(
                kind,
                key,
                "Suspended" if suspended else "Resumed",
                f"{kind} {key} {'suspended' if suspended else 'resumed'} by hand",
            )
        if not suspended:
            self.request(kind, key)

    def source_kind(self, key: str) -> str:
        """The kind of the source stored under `key` (GitRepository when none is): for `reconcile source`."""
        return next((k for k in SOURCE_KINDS if self.store.get_object(k, key) is not None), SOURCE)

    def source_ident(self, key: str) -> Ident:
        """(kind, key) of the source of Kustomization `key`."""
        ks = next((k for k in self.kustomizations() if k.metadata.key == key), None)
        if ks is None:
            raise LookupError(f"Kustomization {key} not found")
        return ks.spec.sourceRef.kind, self.source_of(key)

    def source_of(self, key: str) -> str:
        for ks in self.kustomizations():
            if ks.metadata.key == key:
                return f"{ks.spec.sourceRef.namespace or ks.metadata.namespace}/{ks.spec.sourceRef.name}"
        raise LookupError(f"Kustomization {key} not found")

    async def diff(self, key: str) -> tuple[str, Plan]:
        """What reconciling Kustomization `key` now would change, from a fresh fetch; changes nothing."""
        ks = next((k for k in self.kustomizations() if k.metadata.key == key), None)
        if ks is None:
            raise LookupError(f"Kustomization {key} not found")
        src_kind, src_key = self.source_ident(key)
        repo = next((r for r in self.sources() if (r.kind, r.metadata.key) == (src_kind, src_key)), None)
        if repo is None:
            raise LookupError(f"{src_kind} {src_key} not found")
        fetched = await self.fetcher.preview(repo)  # a scratch copy: the source's own artifact stays as it is
        plan, _ = await self.plan(ks, {"revision": fetched.revision, "path": str(fetched.path)})
        return fetched.revision, plan

    def trace(self, kind: str, key: str) -> dict[str, Any]:
        """Which Kustomization, source, revision and file made an object."""
        for ks_key, state in self.store.list_states(KUSTOMIZATION).items():
            if [kind, key] in state.get("inventory", []):
                src_kind, src_key = self.source_ident(ks_key)
                repo = next(
                    (r for r in self.sources() if (r.kind, r.metadata.key) == (src_kind, src_key)), None
                )
                return {
                    "object": f"{kind} {key}",
                    "kustomization": ks_key,
                    "source": src_key,
                    "url": location(repo) if repo else "",
                    "revision": state.get("lastAppliedRevision", ""),
                    "file": state.get("files", {}).get(f"{kind} {key}", ""),
                    "ready": cond.condition(state, "Ready"),
                }
        stored = self.store.get_object(kind, key)
        if stored is not None and stored.source == BOOTSTRAP:
            return {
                "object": f"{kind} {key}",
                "kustomization": "",
                "source": "",
                "url": "",
                "revision": "",
                "file": "",
                "ready": None,
                "note": "made by `rheostat run --repo` itself",
            }
        raise LookupError(f"{kind} {key} is not managed by any Kustomization")

    def sources(self) -> list[Source]:
        return [o for kind in SOURCE_KINDS for o in self._objects(kind) if isinstance(o, SOURCE_TYPES)]

    def kustomizations(self) -> list[Kustomization]:
        return [o for o in self._objects(KUSTOMIZATION) if isinstance(o, Kustomization)]

    def _objects(self, kind: str) -> list[Manifest]:
        out = []
        for stored in self.store.list_objects(kind):
            try:
                out.append(parse_object(stored.body, stored.source))
            except ManifestError:
                log.warning("stored %s %s no longer parses", kind, stored.key)
        return out

    def state(self, kind: str, key: str) -> dict[str, Any]:
        return self.store.get_state(kind, key) or {}

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self, tick_s: float = 0.5) -> None:
        while True:
            try:
                await self.reconcile_once()
            except Exception:  # one bad pass is logged; the loop and the last good state go on
                log.exception("gitops pass failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), tick_s)

    async def reconcile_once(self, *, force: bool = False) -> None:
        """One pass; sources and Kustomizations that the pass itself applied are reconciled in it too."""
        seen: set[Ident] = set()
        for depth in range(MAX_NESTING):
            kinds = {
                (o.kind, o.key) for k in (*SOURCE_KINDS, KUSTOMIZATION) for o in self.store.list_objects(k)
            }
            new = kinds - seen
            if not new:
                return
            if depth:
                self._requested |= new  # applied by the previous pass: reconcile them now, not next time
            seen |= kinds
            await self._pass(force=force and not depth)

    def _flag_sources(self, except_owner: str) -> list[FlagSource]:
        out = []
        for kind in ("FlagSet", "FeatureFlag"):
            for stored in self.store.list_objects(kind):
                if stored.source.split("@")[0] == except_owner:
                    continue
                obj = parse_object(stored.body, stored.source)
                if isinstance(obj, FlagSet | FeatureFlag):
                    out.append(source_of(obj))
        return out

    def _index(self) -> Index:
        """Workloads and Canary ports of everything applied, by owner; built once per pass."""
        if self._index_cache is None:
            index = Index()
            for kind in ("Workload", "Canary"):
                for stored in self.store.list_objects(kind):
                    try:
                        index.add(parse_object(stored.body, stored.source), stored.source.split("@")[0])
                    except ManifestError:
                        continue
            self._index_cache = index
        return self._index_cache

    async def _pass(self, *, force: bool) -> None:
        self._index_cache = None
        requested, self._requested = self._requested, set()
        now = self.clock()
        changed_sources: set[Ident] = set()
        for repo in self.sources():
            ident = (repo.kind, str(repo.metadata.key))
            if await self._reconcile_source(repo, force or ident in requested, now):
                changed_sources.add(ident)
        for ks in self._ordered():
            key = ks.metadata.key
            ref = ks.spec.sourceRef
            src = (ref.kind, f"{ref.namespace or ks.metadata.namespace}/{ref.name}")
            by_hand = force or (KUSTOMIZATION, key) in requested
            await self._reconcile_kustomization(ks, by_hand or src in changed_sources, now, asked=by_hand)
        if self.helm is not None:
            await self.helm.reconcile(requested, now, force=force)
        if requested:  # `rheostat reconcile` waits for this
            with self.store.transaction():
                for kind, asked in requested:
                    state = self.state(kind, asked)
                    state["lastHandledReconcileAt"] = now
                    self.store.put_state(kind, asked, state)

    # -- sources ----------------------------------------------------------------------------------------

    async def _reconcile_source(self, repo: Source, requested: bool, now: float) -> bool:
        """Fetch when due; True when a new artifact was stored."""
        key = repo.metadata.key
        state = self.state(repo.kind, key)
        if repo.spec.suspend or state.get("suspended"):
            return False
        if not requested and now < state.get("nextAt", 0):
            return False
        last = state.get("artifact")
        last_fetched = (
            Fetched(last["revision"], _path(last["path"]), last.get("message", ""), last.get("verifiedBy"))
            if last
            else None
        )
        interval = parse_duration(repo.spec.interval)
        try:
            fetched = await asyncio.wait_for(
                self.fetcher.fetch(repo, last_fetched), parse_duration(repo.spec.timeout) + 5
            )
        except (FetchError, TimeoutError, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
                exc = unreadable(repo, exc)  # a fetcher used without SourceFetchers
            reason = exc.reason if isinstance(exc, FetchError) else "Timeout"
            failures = int(state.get("failures", 0)) + 1
            cond.failed(state, reason, str(exc) or "fetch timed out", now)
            if reason == "VerificationFailed":
                cond.set_condition(state, "SourceVerified", "False", "Failed", str(exc), now)
            state.update(failures=failures, nextAt=now + min(interval, 2.0 * 2 ** min(failures, 6)))
            self._save(repo.kind, key, state, "FetchFailed", f"{reason}: {exc}", warning=True, once=True)
            return False
        new = last is None or last["revision"] != fetched.revision
        state["artifact"] = {
            "revision": fetched.revision,
            "path": str(fetched.path),
            "message": fetched.message,
            "verifiedBy": fetched.verified_by,
            "previous": fetched.previous,
            "changed": list(fetched.changed) if fetched.changed is not None else None,
        }
        msg = f"stored artifact for revision '{fetched.revision}'"
        if fetched.verified_by:
            cond.set_condition(
                state,
                "SourceVerified",
                "True",
                "Succeeded",
                f"verified signature of revision {fetched.revision} with {fetched.verified_by}",
                now,
            )
        cond.ready(state, "Succeeded", msg, now)
        state.update(failures=0, nextAt=now + interval, lastFetch=now)
        self._save(repo.kind, key, state, "NewArtifact" if new else "", msg if new else "")
        return new

    # -- kustomizations ---------------------------------------------------------------------------------

    def _ordered(self) -> list[Kustomization]:
        """dependsOn first; members of a cycle are Stalled and left out."""
        items: dict[str, Kustomization] = {str(k.metadata.key): k for k in self.kustomizations()}
        deps = {
            key: [f"{d.namespace or k.metadata.namespace}/{d.name}" for d in k.spec.dependsOn]
            for key, k in items.items()
        }
        order: list[Kustomization] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done
        cyclic: set[str] = set()

        def visit(key: str, path: list[str]) -> None:
            if state.get(key) == 2:
                return
            if state.get(key) == 1:
                cyclic.update(path[path.index(key) :])
                return
            state[key] = 1
            for d in deps.get(key, []):
                if d in items:
                    visit(d, [*path, d])
            state[key] = 2
            if key not in cyclic:
                order.append(items[key])

        for key in sorted(items):
            visit(key, [key])
        now = self.clock()
        for key in sorted(cyclic):
            st = self.state(KUSTOMIZATION, key)
            msg = f"dependsOn cycle: {' -> '.join(sorted(cyclic))}"
            if cond.condition(st, "Stalled") is None:
                cond.failed(st, "DependencyCycle", msg, now, stalled=True)
                self._save(KUSTOMIZATION, key, st, "DependencyCycle", msg, warning=True)
        return [k for k in order if k.metadata.key not in cyclic]

    async def _reconcile_kustomization(
        self, ks: Kustomization, due: bool, now: float, *, asked: bool = False
    ) -> None:
        key = ks.metadata.key
        state = self.state(KUSTOMIZATION, key)
        if ks.spec.suspend or state.get("suspended"):
            return
        if state.get("awaitingHealth"):
            await self._check_health(ks, state, now)
        if not due and now < state.get("nextAt", 0):
            return
        interval = parse_duration(ks.spec.interval)
        retry = parse_duration(ks.spec.retryInterval) if ks.spec.retryInterval else interval
        for d in ks.spec.dependsOn:
            dep = f"{d.namespace or ks.metadata.namespace}/{d.name}"
            if not cond.is_ready(self.state(KUSTOMIZATION, dep)):
                msg = f"dependency '{dep}' is not ready"
                cond.failed(state, "DependencyNotReady", msg, now)
                state["nextAt"] = now + min(retry, 5.0)
                self._save(KUSTOMIZATION, key, state, "DependencyNotReady", msg, once=True)
                return
        src_key = f"{ks.spec.sourceRef.namespace or ks.metadata.namespace}/{ks.spec.sourceRef.name}"
        artifact = self.state(ks.spec.sourceRef.kind, src_key).get("artifact")
        if artifact is None:
            msg = f"source {ks.spec.sourceRef.kind} {src_key} has no artifact"
            cond.failed(state, "ArtifactFailed", msg, now)
            state["nextAt"] = now + min(retry, 5.0)
            self._save(KUSTOMIZATION, key, state, "ArtifactFailed", msg, warning=True, once=True)
            return
        revision = artifact["revision"]
        if not asked and now < state.get("nextAt", 0) and self._untouched(ks, state, artifact):
            # A new commit that changed nothing under this path: the applied objects are this revision's.
            state.update(lastAppliedRevision=revision, lastAttemptedRevision=revision)
            cond.ready(state, "ReconciliationSucceeded", f"Applied revision: {revision}", now)
            self._save(KUSTOMIZATION, key, state, "", "")
            return
        state["lastAttemptedRevision"] = revision
        try:
            plan, objects = await self.plan(ks, artifact)
        except (BuildError, ManifestError) as exc:
            failures = int(state.get("failures", 0)) + 1
            msg = f"revision {revision}: {exc}; the last good revision keeps running"
            cond.failed(state, "BuildFailed", msg, now, stalled=isinstance(exc, ManifestError))
            state.update(failures=failures, nextAt=now + retry)
            first = state.get("lastEvent") != f"BuildFailed: {msg}"
            self._save(KUSTOMIZATION, key, state, "BuildFailed", msg, warning=True, once=True)
            if first and isinstance(exc, ManifestError):
                kind, _, okey = exc.obj.partition(" ")
                if okey:  # also on the object itself, so `rheostat events` for it says why
                    with self.store.transaction():
                        self.store.add_event(kind, okey, "InvalidSpec", f"revision {revision}: {exc}", True)
            return
        owner = Owner(
            KUSTOMIZATION,
            key,
            ks.spec.prune,
            ks.spec.wait or bool(ks.spec.healthChecks),
            force=ks.spec.force,
            retry_s=retry,
        )
        try:
            await self.target.observe(plan)
        except (TargetError, ManifestError) as exc:
            self._refused(owner, state, revision, exc, now)
            return
        if self.hooks.gate is not None and not plan.empty:
            verdict = await self.hooks.gate(objects, key, revision, plan.files)
            if not verdict.allowed:
                msg = f"revision {revision} blocked by policy: {verdict.message}"
                cond.failed(state, "PolicyViolation", msg, now)
                state["nextAt"] = now + retry
                self._save(KUSTOMIZATION, key, state, "PolicyViolation", msg, warning=True, once=True)
                return
            if verdict.message:
                self._save(
                    KUSTOMIZATION,
                    key,
                    state,
                    "PolicyWarning",
                    f"revision {revision} applied with policy warnings: {verdict.message}",
                    warning=True,
                    once=True,
                )
        try:
            if not plan.empty:
                await self.target.dry_run(plan)
        except (TargetError, ManifestError) as exc:
            self._refused(owner, state, revision, exc, now)
            return
        state.update(failures=0, nextAt=now + interval)
        await self.apply_plan(owner, plan, objects, state, revision, now)

    def _refused(
        self, owner: Owner, state: dict[str, Any], revision: str, exc: Exception, now: float
    ) -> None:
        """The target refused the revision or could not be reached: the last good revision keeps running."""
        failures = int(state.get("failures", 0)) + 1
        msg = f"revision {revision} not applied: {exc}; the last good revision keeps running"
        if isinstance(exc, TargetError) and exc.applied:
            msg = f"revision {revision} applied in part: {exc}"
            state["inventory"] = sorted({tuple(i) for i in state.get("inventory", [])} | set(exc.applied))
            state["inventory"] = [list(i) for i in state["inventory"]]
        cond.failed(state, "ReconciliationFailed", msg, now, stalled=False)
        state.update(failures=failures, nextAt=now + owner.retry_s)
        self._save(owner.kind, owner.key, state, "ReconciliationFailed", msg, warning=True, once=True)
        if isinstance(exc, ManifestError):
            kind, _, okey = exc.obj.partition(" ")
            if okey:
                with self.store.transaction():
                    self.store.add_event(kind, okey, "ApplyRefused", f"revision {revision}: {exc}", True)

    @staticmethod
    def _untouched(ks: Kustomization, state: dict[str, Any], artifact: dict[str, Any]) -> bool:
        """True when git says no file under the path changed since the revision this Kustomization applied.

        Only for plain folders: a kustomization.yaml may pull files from anywhere in the source; and not with
        substituteFrom, whose variables live in other objects."""
        if ks.spec.postBuild is not None and ks.spec.postBuild.substituteFrom:
            return False
        changed = artifact.get("changed")
        if changed is None or artifact.get("previous") != state.get("lastAppliedRevision"):
            return False
        if cond.condition(state, "Ready") is None or not cond.is_ready(state):
            return False
        prefix = posixpath.normpath(ks.spec.path).lstrip("/")
        prefix = "" if prefix == "." else prefix
        if any(p.rsplit("/", 1)[-1] in KUSTOMIZE_FILES for p in changed):
            return False
        root = _path(artifact["path"]) / prefix
        if root.is_dir() and uses_kustomize(root, ks.spec):
            return False
        return not any(prefix == "" or p == prefix or p.startswith(prefix + "/") for p in changed)

    async def plan(self, ks: Kustomization, artifact: dict[str, Any]) -> tuple[Plan, list[Manifest]]:
        """Build and compare with the store; BuildError or ManifestError if the revision cannot be used."""
        timeout = parse_duration(ks.spec.timeout or ks.spec.interval)
        root = _path(artifact["path"])
        try:
            variables = variables_for(ks, self._configmap, self._secret)
            decryptor = decryptor_for(ks, root, self.hooks.secrets, timeout)
        except (VariablesError, DecryptionError) as exc:
            raise BuildError(str(exc)) from None
        built = await build(
            root,
            ks.spec.path,
            cache=self._builds,
            revision=artifact["revision"],
            variables=variables,
            timeout_s=timeout,
            spec=ks.spec,
            decryptor=decryptor,
        )
        return self.compare(Owner(KUSTOMIZATION, ks.metadata.key, ks.spec.prune), built), built.objects

    def compare(self, who: Owner, built: Built) -> Plan:
        """What applying these objects for this owner would change; ManifestError if they cannot be used."""
        owner = f"{who.kind} {who.key}"
        inventory = {(k, n) for k, n in self.state(who.kind, who.key).get("inventory", [])}
        digests: dict[str, str] = self.state(who.kind, who.key).get("digests", {})
        plan = Plan(
            secret_values=built.secret_values,
            notes=built.notes,
            deprecated=built.deprecated,
            files=built.files,
            bodies={
                f"{o.kind} {o.metadata.key}": text
                for o, text in zip(built.objects, built.bodies, strict=True)
            },
        )
        wanted: set[Ident] = set()
        for obj, text in zip(built.objects, built.bodies, strict=True):
            ident = (str(obj.kind), str(obj.metadata.key))
            wanted.add(ident)
            stored = self.store.get_object_text(*ident)
            if stored is None:
                plan.created.append(obj)
            elif ident not in inventory and stored[1] != BOOTSTRAP and stored[1] not in self.target.adopts:
                raise ManifestError(
                    built.files[f"{obj.kind} {obj.metadata.key}"],
                    f"{obj.kind} {obj.metadata.key}",
                    [_owned_by(stored[1])],
                )
            elif stored[0] == text:
                plan.unchanged.append(obj)
            elif digests.get(f"{ident[0]} {ident[1]}") == _digest_text(text):
                plan.drifted.append(obj)
            else:
                plan.updated.append(obj)
        check_references(
            built.objects, owner, self._index(), owner, files=built.files, catalogue=self.catalogue
        )
        check_flags(built.objects, self._flag_sources(owner))
        if who.prune:
            plan.pruned = sorted(inventory - wanted)
        return plan

    def _configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap applied from Git (postBuild.substituteFrom)."""
        found = self.store.get_object("ConfigMap", f"{namespace}/{name}")
        if found is None:
            return None
        data = found.body.get("data")
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """A Secret built from Git in this run, else one of Rheostat's secret files (postBuild.substituteFrom)."""
        if (found := self._git_secrets.get(f"{namespace}/{name}")) is not None:
            return found
        return None if self.hooks.secrets is None else self.hooks.secrets(namespace, name)

    async def apply_plan(
        self,
        owner: Owner,
        plan: Plan,
        objects: list[Manifest],
        state: dict[str, Any],
        revision: str,
        now: float,
    ) -> None:
        key, kind = owner.key, owner.kind
        source = f"{kind} {key}@{revision}"
        if not plan.empty:
            try:
                await self.target.apply(plan, revision, force=owner.force)
            except (TargetError, ManifestError) as exc:
                self._refused(owner, state, revision, exc, now)
                return
        kept = (
            []
            if owner.prune
            else [
                list(i)
                for i in state.get("inventory", [])
                if tuple(i) not in {(str(o.kind), str(o.metadata.key)) for o in objects}
            ]
        )
        with self.store.transaction():
            self._index().replace(source.split("@")[0], objects)
            for obj in [*plan.created, *plan.updated, *plan.drifted]:
                self.store.put_object(obj.kind, obj.metadata.key, body_of(obj), source=source)
            for pk, okey in plan.pruned:
                stored = self.store.get_object(pk, okey)
                # a copy the cluster's watch keeps (adopted) is removed by that watch, with what it releases
                if stored is None or stored.source not in self.target.adopts:
                    self.store.delete_object(pk, okey)
                    if pk == "Canary":
                        self.store.delete_status(okey)
                self.store.add_event(kind, key, "Pruned", f"{pk}/{okey} deleted (revision {revision})")
            for obj in plan.drifted:
                self.store.add_event(
                    obj.kind,
                    obj.metadata.key,
                    "DriftRepaired",
                    f"{obj.kind} {obj.metadata.key} set back to what Git says at {revision}",
                    warning=True,
                )
            state["inventory"] = sorted([[str(o.kind), str(o.metadata.key)] for o in objects] + kept)
            state["digests"] = {ident: _digest_text(text) for ident, text in plan.bodies.items()}
            state["files"] = plan.files
            first = state.get("lastAppliedRevision") != revision
            state["lastAppliedRevision"] = revision
            changes = (
                f"{len(plan.created)} created, {len(plan.updated)} updated, {len(plan.drifted)} repaired, "
                f"{len(plan.pruned)} pruned"
            )
            if owner.wait and (first or not plan.empty):
                state["awaitingHealth"] = {"since": now, "revision": revision}
                cond.progressing(
                    state, f"applied revision {revision} ({changes}); waiting for health checks", now
                )
            elif state.get("awaitingHealth"):
                pass  # still waiting on an earlier apply
            else:
                cond.ready(state, "ReconciliationSucceeded", f"Applied revision: {revision}", now)
            if first or not plan.empty:
                self.store.add_event(
                    kind, key, "ReconciliationSucceeded", f"applied revision {revision}: {changes}"
                )
            for reason, notes in (("NotRun", plan.notes), ("Deprecated", plan.deprecated)):
                if first and notes:  # once per revision
                    text = f"revision {revision}: {'; '.join(notes)}"
                    self.store.add_event(kind, key, reason, text, reason == "Deprecated")
            self.store.put_state(kind, key, state)
        for pruned_kind, okey in plan.pruned:
            if pruned_kind == "Secret":
                self._git_secrets.pop(okey, None)
        self._git_secrets.update(plan.secret_values)
        if self.hooks.on_applied is not None and not plan.empty:
            await self.hooks.on_applied([*plan.created, *plan.updated, *plan.drifted], plan.pruned)

    async def _check_health(self, ks: Kustomization, state: dict[str, Any], now: float) -> None:
        waiting = state["awaitingHealth"]
        if ks.spec.wait:
            targets: list[Ident] = [(k, n) for k, n in state.get("inventory", [])]
        else:
            targets = [
                (h.kind, f"{h.namespace or ks.metadata.namespace}/{h.name}") for h in ks.spec.healthChecks
            ]
        if self.hooks.health is None and not self.target.reads_health:  # the engine alone: what it knows
            targets = [t for t in targets if t[0] == "HelmRelease"]
        failing = []
        pending = []
        for kind, okey in targets:
            if kind == "HelmRelease" and not self.target.reads_health:  # Flux waits for it to be Ready
                h = self._release_health(okey)
            elif self.target.reads_health:
                h = await self.target.health(kind, okey)
            else:
                h = self.hooks.health(kind, okey) if self.hooks.health else Health(True)
            if h.ready is False:
                failing.append(f"{kind}/{okey}: {h.message}")
            elif h.ready is None:
                pending.append(f"{kind}/{okey}")
        timeout = parse_duration(ks.spec.timeout or ks.spec.interval)
        if not failing and not pending:
            state.pop("awaitingHealth")
            cond.ready(state, "ReconciliationSucceeded", f"Applied revision: {waiting['revision']}", now)
            self._save(
                KUSTOMIZATION,
                ks.metadata.key,
                state,
                "HealthCheckSucceeded",
                f"health checks passed for revision {waiting['revision']}",
            )
        elif failing or now - waiting["since"] > timeout:
            state.pop("awaitingHealth")
            why = "; ".join(failing) or f"timed out after {timeout:g}s waiting for {', '.join(pending)}"
            cond.failed(state, "HealthCheckFailed", why, now)
            self._save(KUSTOMIZATION, ks.metadata.key, state, "HealthCheckFailed", why, warning=True)

    def _release_health(self, key: str) -> Health:
        state = self.state("HelmRelease", key)
        ready = cond.condition(state, "Ready")
        if ready is not None and ready["status"] == "True":
            return Health(True)
        if ready is not None and cond.condition(state, "Stalled") is not None:
            return Health(False, ready["message"])
        return Health(None, ready["message"] if ready else "not reconciled yet")

    # -- recording --------------------------------------------------------------------------------------

    def _save(
        self,
        kind: str,
        key: str,
        state: dict[str, Any],
        reason: str,
        message: str,
        *,
        warning: bool = False,
        once: bool = False,
    ) -> None:
        """Persist the state; with `once`, an event that repeats the last one is not written again."""
        with self.store.transaction():
            if reason and not (once and state.get("lastEvent") == f"{reason}: {message}"):
                self.store.add_event(kind, key, reason, message, warning)
                state["lastEvent"] = f"{reason}: {message}"
            self.store.put_state(kind, key, state)


def _digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _owned_by(source: str) -> FieldError:
    owner = source.split("@")[0] if source else "another owner"
    return FieldError("metadata.name", f"already managed by {owner}")


def _path(p: str) -> Path:
    return Path(p)
