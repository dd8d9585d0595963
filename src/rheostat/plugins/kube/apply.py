"""A revision's objects into a cluster, as Flux's kustomize-controller applies them.

- Server-side apply with field manager `rheostat`, taking ownership of conflicting fields (Flux's ssa
  package applies with ForceOwnership: what Git says wins over a field another manager set). With
  `spec.force` or the object's `kustomize.toolkit.fluxcd.io/force: enabled`, an object whose immutable field
  changed is deleted and created again, as Flux does; without it, the refusal is reported.
- All or nothing: every object is dry-run on the server before anything is written; one refused and none is
  applied, with a message naming file, object and field. Objects in a Namespace or of a CRD that the same
  revision brings are dry-run once those exist, and those Namespaces and CRDs are removed again if one is
  refused.
- CustomResourceDefinitions and Namespaces first (a CRD waited for until it is Established), then the rest.
- Drift: the fields Git sets are compared with the live object (from a watch-fed copy, so a pass at rest asks
  the server nothing); a difference is confirmed by a dry-run before it is repaired.
- Health as kstatus reads it (health.py): Deployments, StatefulSets, DaemonSets, Jobs, Canaries, and any
  object with a Ready (or Stalled) condition.

Plain JSON objects in, plain answers out: gitops knows nothing of Kubernetes (reactor/cluster_gitops.py
connects the two).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from rheostat.model.load import FieldError, ManifestError
from rheostat.plugins.kube import ssa
from rheostat.plugins.kube.api import Kind, KubeAPI, KubeError, NotInstalled, Obj
from rheostat.plugins.kube.health import health_of
from rheostat.plugins.kube.kinds import ALL
from rheostat.util.backoff import Backoff

log = logging.getLogger(__name__)
FORCE_ANNOTATION = "kustomize.toolkit.fluxcd.io/force"
CRD = Kind("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False, True)
# (group, kind) -> (plural, namespaced, status subresource): what GitOps applies beside kinds.ALL
_KNOWN: dict[tuple[str, str], tuple[str, bool, bool]] = {
    **{(k.group, k.kind): (k.plural, k.namespaced, k.status) for k in ALL},
    ("", "ServiceAccount"): ("serviceaccounts", True, False),
    ("", "PersistentVolumeClaim"): ("persistentvolumeclaims", True, True),
    ("apps", "StatefulSet"): ("statefulsets", True, True),
    ("batch", "Job"): ("jobs", True, True),
    ("batch", "CronJob"): ("cronjobs", True, True),
    ("autoscaling", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True, True),
    ("rbac.authorization.k8s.io", "Role"): ("roles", True, False),
    ("rbac.authorization.k8s.io", "RoleBinding"): ("rolebindings", True, False),
    ("rbac.authorization.k8s.io", "ClusterRole"): ("clusterroles", False, False),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): ("clusterrolebindings", False, False),
    ("policy", "PodDisruptionBudget"): ("poddisruptionbudgets", True, True),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): ("customresourcedefinitions", False, True),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"): (
        "validatingadmissionpolicies",
        False,
        True,
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"): (
        "validatingadmissionpolicybindings",
        False,
        False,
    ),
    ("templates.gatekeeper.sh", "ConstraintTemplate"): ("constrainttemplates", False, True),
    ("source.toolkit.fluxcd.io", "GitRepository"): ("gitrepositories", True, True),
    ("source.toolkit.fluxcd.io", "HelmRepository"): ("helmrepositories", True, True),
    ("source.toolkit.fluxcd.io", "OCIRepository"): ("ocirepositories", True, True),
    ("source.toolkit.fluxcd.io", "Bucket"): ("buckets", True, True),
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): ("kustomizations", True, True),
    ("helm.toolkit.fluxcd.io", "HelmRelease"): ("helmreleases", True, True),
    ("notification.toolkit.fluxcd.io", "Receiver"): ("receivers", True, True),
    ("core.openfeature.dev", "FeatureFlag"): ("featureflags", True, True),
    ("rheostat.dev", "FlagSet"): ("flagsets", True, True),
}
_FIRST = {("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "Namespace")}
_VOLATILE = ("resourceVersion", "managedFields", "generation", "creationTimestamp", "uid")


class ApplyAPI(KubeAPI, Protocol):
    """The port, plus server-side apply of any kind with a dry-run (LightkubeAPI has both)."""

    async def apply_as(self, kind: Kind, obj: Obj, *, force: bool = False, dry_run: bool = False) -> Obj: ...


class PartlyApplied(Exception):
    """A write failed after the dry-run passed (the cluster changed meanwhile, or the server went away):
    says exactly which objects were written before it."""

    def __init__(self, applied: list[str], cause: Exception) -> None:
        self.applied = applied
        done = ", ".join(applied) if applied else "nothing"
        super().__init__(f"{cause}; applied before the failure: {done}")


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def ident(obj: Obj) -> str:
    """ "Kind ns/name" as the reconciler names objects (cluster-scoped ones under "default", as its model)."""
    meta = obj["metadata"]
    return f"{obj['kind']} {meta.get('namespace') or 'default'}/{meta['name']}"


def inventory_id(kind: Kind, namespace: str, name: str) -> str:
    """Flux's inventory entry id: `<namespace>_<name>_<group>_<kind>` (no namespace when cluster-scoped)."""
    return f"{namespace if kind.namespaced else ''}_{name}_{kind.group}_{kind.kind}"


class Kinds:
    """The resource of each apiVersion and kind: known ones, CRDs of the revision, CRDs in the cluster."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._crds: dict[tuple[str, str], tuple[str, bool, bool]] = {}
        self._listed = False

    def learn(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        status = any(
            ((v.get("subresources") or {}).get("status") is not None) for v in spec.get("versions") or []
        )
        self._crds[(str(spec.get("group", "")), str(names.get("kind", "")))] = (
            str(names.get("plural", "")),
            spec.get("scope", "Namespaced") == "Namespaced",
            status,
        )

    def known(self, api_version: str, kind: str) -> Kind | None:
        group = group_of(api_version)
        found = _KNOWN.get((group, kind)) or self._crds.get((group, kind))
        if found is None and group == "constraints.gatekeeper.sh":  # Gatekeeper makes one kind per template
            found = (kind.lower(), False, True)
        return Kind(api_version, kind, *found) if found is not None else None

    async def of(self, obj: Obj) -> Kind:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        found = self.known(api_version, kind)
        if found is None and not self._listed:
            self._listed = True
            try:
                for crd in await self.api.list(CRD):
                    self.learn(crd)
            except KubeError as exc:
                log.warning("cannot list CustomResourceDefinitions: %s", exc)
            found = self.known(api_version, kind)
        if found is None:
            raise LookupError(
                f"no CustomResourceDefinition serves {kind} ({api_version}): not in the cluster, "
                "not in this revision"
            )
        return found


def _key(kind: Kind, obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata", {})
    return (meta.get("namespace", "") if kind.namespaced else "", meta["name"])


def _rv(obj: Obj) -> int:
    found = obj.get("metadata", {}).get("resourceVersion")
    return int(found) if isinstance(found, str) and found.isdigit() else -1


class Live:
    """The cluster's objects of each kind applied: one LIST, then a watch (a pass at rest reads nothing)."""

    def __init__(self, api: KubeAPI) -> None:
        self.api = api
        self._objects: dict[Kind, dict[tuple[str, str], Obj]] = {}
        self._tasks: dict[Kind, asyncio.Task[None]] = {}

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        if kind not in self._objects:
            try:
                items = await self.api.list(kind)
            except NotInstalled:
                return None  # its CRD comes with this revision
            self._objects[kind] = {_key(kind, o): o for o in items}
            self._tasks[kind] = asyncio.get_running_loop().create_task(self._watch(kind), name=f"live:{kind}")
        return self._objects[kind].get((namespace if kind.namespaced else "", name))

    def put(self, kind: Kind, obj: Obj) -> None:
        objects = self._objects.get(kind)
        if objects is not None:
            have = objects.get(_key(kind, obj))
            if have is None or _rv(have) <= _rv(obj):
                objects[_key(kind, obj)] = obj

    def forget(self, kind: Kind, namespace: str, name: str) -> None:
        self._objects.get(kind, {}).pop((namespace if kind.namespaced else "", name), None)

    async def _watch(self, kind: Kind) -> None:
        backoff = Backoff()
        while True:
            try:
                async for event, obj in self.api.watch(kind):
                    backoff.reset()
                    if event == "DELETED":
                        self.forget(kind, *_key(kind, obj))
                    else:
                        self.put(kind, obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await backoff.wait(log, f"watch of {kind}", exc)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._objects.clear()


def _leaf(obj: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = obj
    for k in path:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


def differs(desired: Obj, live: Obj) -> bool:
    """Whether a field Git sets has another value in the live object (fields others set are theirs)."""
    return any(
        _leaf(live, path) != value for path, value in ssa.applied_leaves(desired, status_apart=True).items()
    )


def _comparable(obj: Obj) -> Obj:
    out = {k: v for k, v in obj.items() if k != "status"}
    out["metadata"] = {k: v for k, v in obj.get("metadata", {}).items() if k not in _VOLATILE}
    return out


_INVALID = re.compile(r"is invalid: (?:\[)?([A-Za-z0-9_.\[\]\-/]+): (.*)$", re.S)


def refusal(file: str, obj: Obj, exc: Exception) -> ManifestError:
    """The API server's refusal as a manifest error: the field from its `is invalid: <field>: why`."""
    message = str(exc)
    status = getattr(exc, "status", 0)
    m = _INVALID.search(message)
    if m:
        path, why = m[1], f"{m[2].strip()} (refused by the API server, {status})"
    else:
        path, why = "", f"refused by the API server: {message}"
    return ManifestError(file, ident(obj), [FieldError(path, why)])


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)  # idents written
    recreated: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)


class ClusterApplier:
    """Applies a revision's objects all or nothing; one per identity (a Kustomization's serviceAccountName
    gets its own, impersonating it)."""

    def __init__(
        self, api: ApplyAPI, *, kinds: Kinds | None = None, live: Live | None = None, wait_s: float = 30.0
    ) -> None:
        self.api = api
        self.kinds = kinds or Kinds(api)
        self.live = live or Live(api)
        self.wait_s = wait_s
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        # (kind, ns, name) -> (desired text, live resourceVersion) last found equal: not compared again
        self._same: dict[tuple[Kind, str, str], tuple[str, int]] = {}

    async def _kind(self, file: str, obj: Obj) -> Kind:
        try:
            return await self.kinds.of(obj)
        except LookupError as exc:
            raise ManifestError(file, ident(obj), [FieldError("apiVersion", str(exc))]) from None

    @staticmethod
    def body(kind: Kind, obj: Obj) -> Obj:
        """What is sent: no namespace on a cluster-scoped object, no status, no server-kept metadata."""
        out = {k: v for k, v in obj.items() if k != "status"}
        meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in _VOLATILE}
        if not kind.namespaced:
            meta.pop("namespace", None)
        out["metadata"] = meta
        return out

    # -- reading ---------------------------------------------------------------------------------------

    async def drifted(self, objs: list[tuple[str, Obj]], texts: list[str] | None = None) -> list[bool]:
        """For each (file, object) Git has not changed: whether the cluster's copy differs (or is gone).
        With `texts` (each object's text), a pair found equal before is not compared again."""
        out = []
        for i, (file, obj) in enumerate(objs):
            kind = await self._kind(file, obj)
            meta = obj["metadata"]
            ns = meta.get("namespace", "") if kind.namespaced else ""
            live = await self.live.get(kind, ns, meta["name"])
            seen = (texts[i], _rv(live)) if texts is not None and live is not None else None
            if live is None:
                out.append(True)
            elif seen is not None and self._same.get((kind, ns, meta["name"])) == seen:
                out.append(False)
            elif not differs(body := self.body(kind, obj), live):
                if seen is not None:
                    self._same[(kind, ns, meta["name"])] = seen
                out.append(False)
            else:  # a server default may explain it: what would an apply change?
                body = self.body(kind, obj)
                try:
                    after = await self.api.apply_as(kind, body, force=True, dry_run=True)
                except KubeError:
                    out.append(True)  # the apply will say why
                    continue
                out.append(_comparable(after) != _comparable(live))
        return out

    async def health(
        self, api_version: str, kind_name: str, namespace: str, name: str
    ) -> tuple[bool | None, str]:
        kind = self.kinds.known(api_version, kind_name)
        if kind is None:
            return False, f"{kind_name} ({api_version}) is not served by the cluster"
        return health_of(await self.live.get(kind, namespace, name))

    # -- writing ---------------------------------------------------------------------------------------

    async def dry_run(self, objs: list[tuple[str, Obj]]) -> None:
        """ManifestError for the first object the server would refuse; nothing is written."""
        await self._dry_run(objs, later=self._brought(objs))

    def _brought(self, objs: list[tuple[str, Obj]]) -> set[str]:
        """Namespaces and CRD kinds ("group/Kind") this revision brings: their objects are dry-run later."""
        out = set()
        for _, obj in objs:
            if obj.get("kind") == "Namespace":
                out.add(f"ns:{obj['metadata']['name']}")
            elif obj.get("kind") == "CustomResourceDefinition":
                self.kinds.learn(obj)
                spec = obj.get("spec") or {}
                out.add(f"kind:{spec.get('group')}/{(spec.get('names') or {}).get('kind')}")
        return out

    async def _dry_run(
        self, objs: list[tuple[str, Obj]], later: set[str], *, final: bool = False
    ) -> list[tuple[str, Obj]]:
        """Dry-run each object; those that wait for a Namespace or CRD of the revision are returned (with
        `final`, after those exist, a missing one is a refusal)."""
        deferred = []
        for file, obj in objs:
            kind = await self._kind(file, obj)
            ns = obj["metadata"].get("namespace", "")
            if f"kind:{kind.group}/{kind.kind}" in later or (kind.namespaced and f"ns:{ns}" in later):
                deferred.append((file, obj))
                continue
            try:
                await self.api.apply_as(kind, self.body(kind, obj), force=True, dry_run=True)
            except KubeError as exc:
                if not final and (isinstance(exc, NotInstalled) or exc.status == 404):
                    deferred.append(
                        (file, obj)
                    )  # a namespace or CRD not there yet: tried after the first stage
                    continue
                raise refusal(file, obj, exc) from None
        return deferred

    async def apply(
        self,
        objs: list[tuple[str, Obj]],
        *,
        force: bool = False,
        on_written: Callable[[str], None] | None = None,
    ) -> Outcome:
        """CRDs and Namespaces, then (after a dry-run of what needed them) the rest. ManifestError: refused,
        nothing of it left; PartlyApplied: a write failed after the dry-run, naming what was written."""
        outcome = Outcome()
        later = self._brought(objs)
        first = [(f, o) for f, o in objs if (group_of(o["apiVersion"]), o["kind"]) in _FIRST]
        rest = [(f, o) for f, o in objs if (group_of(o["apiVersion"]), o["kind"]) not in _FIRST]
        created: list[tuple[Kind, Obj]] = []
        try:
            for file, obj in first:
                kind = await self._kind(file, obj)
                meta = obj["metadata"]
                existed = await self.live.get(kind, meta.get("namespace", ""), meta["name"]) is not None
                await self._write(file, kind, obj, force, outcome)
                if not existed:
                    created.append((kind, obj))
                if kind == CRD or kind.kind == "CustomResourceDefinition":
                    await self._established(obj)
        except ManifestError:
            raise
        except Exception as exc:
            raise PartlyApplied(outcome.applied, exc) from exc
        if later:
            try:
                await self._dry_run(rest, set(), final=True)
            except (ManifestError, KubeError):
                for kind, obj in reversed(
                    created
                ):  # what this revision brought goes again: nothing half-applied
                    meta = obj["metadata"]
                    await self.api.delete(kind, meta.get("namespace", ""), meta["name"])
                    self.live.forget(kind, meta.get("namespace", ""), meta["name"])
                raise
        try:
            for file, obj in rest:
                await self._write(file, await self._kind(file, obj), obj, force, outcome)
        except Exception as exc:
            raise PartlyApplied(outcome.applied, exc) from exc
        return outcome

    async def _write(self, file: str, kind: Kind, obj: Obj, force: bool, outcome: Outcome) -> None:
        body = self.body(kind, obj)
        meta = body["metadata"]
        try:
            stored = await self.api.apply_as(kind, body, force=True)
        except KubeError as exc:
            immutable = exc.status == 422 and "immutable" in str(exc)
            wanted = force or (meta.get("annotations") or {}).get(FORCE_ANNOTATION) == "enabled"
            if not (immutable and wanted):
                raise refusal(file, obj, exc) from exc
            await self.api.delete(kind, meta.get("namespace", ""), meta["name"])
            stored = await self.api.apply_as(kind, body, force=True)
            outcome.recreated.append(ident(obj))
        self.live.put(kind, stored)
        outcome.applied.append(ident(obj))

    async def _established(self, crd: Obj) -> None:
        """A CRD's kind is served once the CRD says Established (what Flux waits for before the rest)."""
        name = crd["metadata"]["name"]
        waited = 0.0
        while waited < self.wait_s:
            found = await self.api.get(CRD, "", name)
            conditions = ((found or {}).get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return
            await self.sleep(0.5)
            waited += 0.5
        log.warning("CustomResourceDefinition %s not Established after %gs; applying on", name, self.wait_s)

    async def prune(self, refs: list[Obj]) -> list[str]:
        """Delete what the inventory had and the revision has not (apiVersion, kind and metadata each)."""
        out = []
        for ref in refs:
            kind = self.kinds.known(ref["apiVersion"], ref["kind"])
            if kind is None:
                continue  # its CRD went: so did it
            meta = ref["metadata"]
            ns = meta.get("namespace", "") if kind.namespaced else ""
            if await self.api.delete(kind, ns, meta["name"]):
                out.append(ident(ref))
            self.live.forget(kind, ns, meta["name"])
        return out
