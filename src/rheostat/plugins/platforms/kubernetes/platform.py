"""The `kubernetes` platform: Flagger's primary/canary pair of an apps/v1 Deployment or DaemonSet.

The target is the canary group; `<target>-primary` is created from it and given each analysed revision.
Objects Rheostat owns (the primary, its Services, config copies, HPA copy) are written with server-side
apply; objects the user owns (the target, an adopted apex Service) are changed with a read-modify-PUT, so
Rheostat takes over only the fields it changes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.plugins.kube.api import Conflict, Kind, KubeAPI, KubeError, Obj
from rheostat.plugins.kube.kinds import CONFIGMAP, DAEMONSET, HPA, SECRET, SERVICE
from rheostat.plugins.platforms.base import Group, PlatformError, Readiness, TargetMoved
from rheostat.plugins.platforms.kubernetes import readiness
from rheostat.plugins.platforms.kubernetes.configs import (
    ConfigRef,
    checksum,
    is_tracked,
    primary_copy,
    references,
)
from rheostat.plugins.platforms.kubernetes.hpa import primary_hpa
from rheostat.plugins.platforms.kubernetes.labels import (
    CANARY_ANNOTATION,
    INITIALIZED_ANNOTATION,
    MANAGED_BY,
    ORIGINAL_SELECTOR_ANNOTATION,
    REVISION_ANNOTATION,
    is_ours,
    marks,
    selector_label,
)
from rheostat.plugins.platforms.kubernetes.services import discovered_ports, service_of
from rheostat.plugins.platforms.kubernetes.settings import Bound, bound
from rheostat.plugins.platforms.kubernetes.workload import (
    SCALE_TO_ZERO,
    declared_replicas,
    primary_of,
    revision_of,
)
from rheostat.plugins.routers.base import Upstream

UNKNOWN_REVISION = "unknown"  # the revision of a primary Rheostat did not create
UPDATE_ATTEMPTS = 3  # a PUT that meets a concurrent change is read and tried again


@contextlib.contextmanager
def _kube_errors() -> Iterator[None]:
    try:
        yield
    except KubeError as exc:
        raise PlatformError(str(exc)) from exc


def contains(have: Any, want: Any) -> bool:
    """Whether `have` already says everything `want` says (the server may add defaults)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(contains(have.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(contains, have, want))
    return bool(have == want)


@dataclass(frozen=True)
class Snapshot:
    """The target and the configs it tracks, read once so the revision and the copies agree."""

    target: Obj
    configs: dict[ConfigRef, Obj] = field(default_factory=dict)

    @property
    def tracked(self) -> set[ConfigRef]:
        return set(self.configs)

    @property
    def revision(self) -> str:
        return revision_of(self.target, {ref: checksum(obj) for ref, obj in self.configs.items()})


class KubernetesPlatform:
    """Deployments and DaemonSets in a cluster, through the `KubeAPI` port.

    `scale(target, CANARY, None)` follows Flagger's choice of replicas (the target is at 0 between runs):
    the target's own `spec.replicas` when above 0, else the primary's replicas when there is no
    autoscaler, else the HPA's `minReplicas` when above 1, else 1. A DaemonSet "scales" to 0 by a node
    selector no node has (Flagger's `flagger.app/scale-to-zero`); any other count removes it.
    """

    def __init__(self, api: KubeAPI, *, clock: Callable[[], float] = time.time) -> None:
        self.api = api
        self.clock = clock
        self._bound: dict[ObjectKey, Bound] = {}
        # (target, group) -> (generation, when first seen not ready): a new generation restarts the wait.
        self._since: dict[tuple[ObjectKey, Group], tuple[int, float]] = {}
        self._tracked: dict[ObjectKey, dict[str, str]] = {}  # target -> its tracked configs' checksums

    # -- the Canary --------------------------------------------------------------------------------

    async def bind(self, canary: Canary) -> None:
        b = bound(canary)
        self._bound[b.key] = b

    async def release(self, canary: Canary) -> None:
        """With `revertOnDeletion`: the target back at its replicas and serving under the apex name, then
        the primary, the `-primary`/`-canary` Services and the config and HPA copies deleted. The apex
        Service stays (pointing at the target's pods), so clients keep the name they use. Raises
        PlatformError while the target is not ready yet (call again), unless its progress deadline passed.
        """
        try:
            b = bound(canary)
        except PlatformError:
            return  # never bound: nothing was created
        if b.revert:
            with _kube_errors():
                await self._hand_back(b)
        self._bound.pop(b.key, None)
        self._since.pop((b.key, Group.CANARY), None)
        self._since.pop((b.key, Group.PRIMARY), None)

    def _of(self, target: ObjectKey) -> Bound:
        try:
            return self._bound[target]
        except KeyError:
            raise PlatformError(f"no Canary is bound to {target} (bind comes first in a tick)") from None

    # -- reading -----------------------------------------------------------------------------------

    async def _target(self, b: Bound) -> Obj:
        obj = await self.api.get(b.kind, b.namespace, b.target)
        if obj is None:
            raise PlatformError(f"{b.what} not found")
        return obj

    async def _snapshot(self, b: Bound) -> Snapshot:
        target = await self._target(b)
        pod = (target["spec"].get("template") or {}).get("spec") or {}
        configs: dict[ConfigRef, Obj] = {}
        for ref, required in sorted(references(pod).items()):
            obj = await self.api.get(ref.api_kind, b.namespace, ref.name)
            if obj is None:
                if required:
                    raise PlatformError(
                        f"{b.what} uses {ref.api_kind.kind} {b.namespace}/{ref.name}, which does not exist"
                    )
                continue
            if is_tracked(ref, obj):
                configs[ref] = obj
        return Snapshot(target, configs)

    async def _hpa(self, b: Bound) -> Obj:
        assert b.autoscaler is not None
        obj = await self.api.get(HPA, b.namespace, b.autoscaler.name)
        if obj is None:
            raise PlatformError(
                f"HorizontalPodAutoscaler {b.namespace}/{b.autoscaler.name} not found (autoscalerRef)"
            )
        return obj

    # -- writing -----------------------------------------------------------------------------------

    async def _update(
        self, kind: Kind, namespace: str, name: str, change: Callable[[Obj], bool]
    ) -> Obj | None:
        """Read, `change` in place (False: nothing to do), PUT; again on a concurrent write."""
        for attempt in range(UPDATE_ATTEMPTS):
            obj = await self.api.get(kind, namespace, name)
            if obj is None or not change(obj):
                return obj
            try:
                return await self.api.replace(obj)
            except Conflict:
                if attempt == UPDATE_ATTEMPTS - 1:
                    raise
        return None  # not reached

    async def _copy_configs(self, b: Bound, snap: Snapshot) -> None:
        labels, annotations = marks(b.canary)
        for obj in snap.configs.values():
            await self.api.apply(primary_copy(obj, b.canary, labels, annotations), force=True)

    async def _services(self, b: Bound, target: Obj) -> None:
        key, value = selector_label(target, b.what)
        pod = (target["spec"].get("template") or {}).get("spec") or {}
        ports = discovered_ports(b.service, pod)
        primary = {key: f"{value}-primary"}
        s = b.service
        for name, selector, meta in (
            (b.canary_service, {key: value}, s.canary),
            (b.primary_service, primary, s.primary),
            (b.apex, primary, s.apex),
        ):
            want = service_of(b, name, selector, meta, ports)
            have = await self.api.get(SERVICE, b.namespace, name)
            if name == b.apex and have is not None and _settled(have):
                # Once made (or adopted), the apex's selector is the router's: the kubernetes provider
                # switches it to the canary for a blue/green cut-over, and a tick must not switch it back.
                want["spec"]["selector"] = have["spec"]["selector"]
            if have is None or (is_ours(have) and not contains(have, want)):
                await self.api.apply(want, force=True)
            elif not is_ours(have):
                await self._adopt(have, want)

    async def _adopt(self, have: Obj, want: Obj) -> None:
        """A Service the user made under the apex name: point it at the primary, remembering its selector."""
        if contains(have["spec"], {"selector": want["spec"]["selector"], "ports": want["spec"]["ports"]}):
            return

        def change(obj: Obj) -> bool:
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations.setdefault(
                ORIGINAL_SELECTOR_ANNOTATION, json.dumps(obj["spec"].get("selector") or {})
            )
            annotations.setdefault(CANARY_ANNOTATION, want["metadata"]["annotations"][CANARY_ANNOTATION])
            obj["spec"]["selector"] = want["spec"]["selector"]
            obj["spec"]["ports"] = want["spec"]["ports"]
            return True

        meta = have["metadata"]
        await self._update(SERVICE, meta["namespace"], meta["name"], change)

    async def _set_replicas(self, b: Bound, name: str, replicas: int) -> None:
        def change(obj: Obj) -> bool:
            if obj["spec"].get("replicas") == replicas:
                return False
            obj["spec"]["replicas"] = replicas
            return True

        if await self._update(b.kind, b.namespace, name, change) is None:
            raise PlatformError(f"{b.kind.kind} {b.namespace}/{name} not found")

    async def _park_daemonset(self, b: Bound, name: str, parked: bool) -> None:
        def change(obj: Obj) -> bool:
            pod = obj["spec"]["template"].setdefault("spec", {})
            selector = pod.get("nodeSelector") or {}
            if (SCALE_TO_ZERO[0] in selector) == parked:
                return False
            if parked:
                pod["nodeSelector"] = {**selector, SCALE_TO_ZERO[0]: SCALE_TO_ZERO[1]}
            else:
                rest = {k: v for k, v in selector.items() if k != SCALE_TO_ZERO[0]}
                if rest:
                    pod["nodeSelector"] = rest
                else:
                    del pod["nodeSelector"]
            return True

        if await self._update(DAEMONSET, b.namespace, name, change) is None:
            raise PlatformError(f"DaemonSet {b.namespace}/{name} not found")

    async def _declared(self, b: Bound, target: Obj) -> int:
        """Flagger's replicas for a target scaled up from 0 (see the class docstring)."""
        own = declared_replicas(target)
        if own:
            return own
        if b.autoscaler is None:
            primary = await self.api.get(b.kind, b.namespace, b.primary)
            n = declared_replicas(primary) if primary else None
            return n if n else 1
        hpa = await self.api.get(HPA, b.namespace, b.autoscaler.name)
        least = int((hpa or {}).get("spec", {}).get("minReplicas") or 1)
        return least if least > 1 else 1

    # -- the Platform ------------------------------------------------------------------------------

    async def ensure_primary(self, target: ObjectKey) -> None:
        b = self._of(target)
        with _kube_errors():
            snap = await self._snapshot(b)
            if b.kind is DAEMONSET:
                strategy = (snap.target["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
                if strategy != "RollingUpdate":
                    raise PlatformError(
                        f"{b.what} must have the RollingUpdate updateStrategy, not {strategy}"
                    )
            primary = await self.api.get(b.kind, b.namespace, b.primary)
            if primary is None:
                await self._copy_configs(b, snap)
                replicas = declared_replicas(snap.target) or 1
                want = primary_of(
                    b, snap.target, snap.tracked, snap.revision, replicas=replicas, initialized=False
                )
                primary = await self.api.apply(want, force=True)
            elif REVISION_ANNOTATION not in (primary["metadata"].get("annotations") or {}):
                primary = await self._adopt_primary(b)
            await self._services(b, snap.target)
            hpa = b.primary_hpa
            if hpa is not None and await self.api.get(HPA, b.namespace, hpa) is None:
                await self.api.apply(primary_hpa(b, await self._hpa(b)), force=True)
            if (primary["metadata"].get("annotations") or {}).get(INITIALIZED_ANNOTATION) != "true":
                await self._initialize(b, primary)

    async def _adopt_primary(self, b: Bound) -> Obj:
        """A primary made before Rheostat (by Flagger): its revision is unknown, so the target's next
        revision is analysed before it replaces it; the target was already scaled down by its maker."""

        def mark(obj: Obj) -> bool:
            annotations = obj["metadata"].setdefault("annotations", {})
            annotations.update({REVISION_ANNOTATION: UNKNOWN_REVISION, INITIALIZED_ANNOTATION: "true"})
            annotations.setdefault(CANARY_ANNOTATION, b.canary)
            return True

        adopted = await self._update(b.kind, b.namespace, b.primary, mark)
        if adopted is None:
            raise PlatformError(f"{b.kind.kind} {b.namespace}/{b.primary} vanished while being adopted")
        return adopted

    async def _initialize(self, b: Bound, primary: Obj) -> None:
        """Once the new primary is ready, the target goes to 0 (Flagger: scaled to 0 between runs)."""
        if not self._readiness(b, primary, Group.PRIMARY).ready:
            return
        await self._scale(b, Group.CANARY, 0)

        def mark(obj: Obj) -> bool:
            obj["metadata"].setdefault("annotations", {})[INITIALIZED_ANNOTATION] = "true"
            return True

        await self._update(b.kind, b.namespace, b.primary, mark)

    async def revision(self, target: ObjectKey) -> str:
        b = self._of(target)
        with _kube_errors():
            snap = await self._snapshot(b)
        self._tracked[target] = {str(ref): checksum(obj) for ref, obj in sorted(snap.configs.items())}
        return snap.revision

    def tracked_configs(self, target: ObjectKey) -> dict[str, str]:
        return dict(self._tracked.get(target, {}))

    async def primary_revision(self, target: ObjectKey) -> str | None:
        b = self._of(target)
        with _kube_errors():
            primary = await self.api.get(b.kind, b.namespace, b.primary)
        if primary is None:
            return None
        value = (primary["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
        return str(value) if value is not None else None

    def _readiness(self, b: Bound, obj: Obj, group: Group) -> Readiness:
        primary = group is Group.PRIMARY
        threshold = b.primary_threshold if primary else b.canary_threshold
        if b.kind is DAEMONSET:
            found = readiness.daemonset(obj, threshold)
        else:
            found = readiness.deployment(obj, threshold, primary=primary)
        key = (b.key, group)
        if found.ready:
            self._since.pop(key, None)
            return found
        generation = int(obj["metadata"].get("generation") or 0)
        seen = self._since.get(key)
        if seen is None or seen[0] != generation:
            seen = self._since[key] = (generation, self.clock())
        return replace(found, not_ready_since=seen[1])

    async def is_ready(self, target: ObjectKey, group: Group) -> Readiness:
        b = self._of(target)
        name = b.primary if group is Group.PRIMARY else b.target
        with _kube_errors():
            obj = await self.api.get(b.kind, b.namespace, name)
        if obj is None:
            if group is Group.PRIMARY:
                return Readiness(False, f"{b.kind.kind} {b.namespace}/{name} not created yet")
            raise PlatformError(f"{b.what} not found")
        return self._readiness(b, obj, group)

    async def promote(self, target: ObjectKey, revision: str) -> None:
        b = self._of(target)
        with _kube_errors():
            primary = await self.api.get(b.kind, b.namespace, b.primary)
            if primary is None:
                raise PlatformError(f"{b.kind.kind} {b.namespace}/{b.primary} not found (not initialized)")
            if (primary["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION) == revision:
                return
            snap = await self._snapshot(b)
            if snap.revision != revision:
                raise TargetMoved(f"{b.what} declares revision {snap.revision} now, not {revision}")
            await self._copy_configs(b, snap)
            # With an autoscaler the primary's replicas are the HPA's; they are re-applied as they are, so
            # server-side apply neither drops the field nor fights the HPA.
            replicas = declared_replicas(primary)
            if b.autoscaler is None:
                replicas = declared_replicas(snap.target) or replicas
            want = primary_of(b, snap.target, snap.tracked, revision, replicas=replicas, initialized=True)
            await self.api.apply(want, force=True)
            if b.autoscaler is not None:  # Flagger: HPA changes reach the primary with a promotion
                await self.api.apply(primary_hpa(b, await self._hpa(b)), force=True)

    async def _scale(self, b: Bound, group: Group, replicas: int | None) -> None:
        name = b.primary if group is Group.PRIMARY else b.target
        if b.kind is DAEMONSET:
            await self._park_daemonset(b, name, parked=replicas == 0)
            return
        if replicas is None:
            replicas = await self._declared(b, await self._target(b))
        await self._set_replicas(b, name, replicas)

    async def scale(self, target: ObjectKey, group: Group, replicas: int | None) -> None:
        b = self._of(target)
        with _kube_errors():
            await self._scale(b, group, replicas)

    async def endpoints(self, target: ObjectKey, group: Group) -> tuple[Upstream, ...]:
        b = self._of(target)
        host = b.primary_service if group is Group.PRIMARY else b.canary_service
        return (Upstream(host=host, port=b.service.port),)

    # -- revertOnDeletion --------------------------------------------------------------------------

    async def _hand_back(self, b: Bound) -> None:
        target = await self.api.get(b.kind, b.namespace, b.target)
        if target is not None:
            if b.kind is DAEMONSET:
                await self._park_daemonset(b, b.target, parked=False)
            else:
                primary = await self.api.get(b.kind, b.namespace, b.primary)
                n = declared_replicas(primary) if primary else None
                await self._set_replicas(b, b.target, n or await self._declared(b, target))
            target = await self._target(b)
            ready = self._readiness(b, target, Group.CANARY)
            since = ready.not_ready_since
            waited = since is not None and self.clock() - since >= b.deadline_s
            if not ready.ready and not ready.fatal and not waited:
                raise PlatformError(
                    f"{b.what} scaled back up; the primary stays until it is ready: {ready.message}"
                )
            await self._give_back_apex(b, target)
        for kind, name in (
            (SERVICE, b.primary_service),
            (SERVICE, b.canary_service),
            (b.kind, b.primary),
            (HPA, b.primary_hpa),
        ):
            if name is not None:
                await self._delete_ours(b, kind, name)
        for kind in (CONFIGMAP, SECRET):
            for obj in await self.api.list(kind, b.namespace, labels={MANAGED_BY: "rheostat"}):
                if (obj["metadata"].get("annotations") or {}).get(CANARY_ANNOTATION) == b.canary:
                    await self.api.delete(kind, b.namespace, obj["metadata"]["name"])

    async def _delete_ours(self, b: Bound, kind: Kind, name: str) -> None:
        obj = await self.api.get(kind, b.namespace, name)
        if obj is not None and is_ours(obj):
            await self.api.delete(kind, b.namespace, name)

    async def _give_back_apex(self, b: Bound, target: Obj) -> None:
        """The apex Service selects the target's pods again: its own selector if it was adopted, else the
        target's selector label; Rheostat's marks are taken off, the Service is the user's now."""
        key, value = selector_label(target, b.what)

        def change(obj: Obj) -> bool:
            meta = obj["metadata"]
            annotations = meta.get("annotations") or {}
            original = annotations.pop(ORIGINAL_SELECTOR_ANNOTATION, None)
            obj["spec"]["selector"] = json.loads(original) if original else {key: value}
            annotations.pop(CANARY_ANNOTATION, None)
            (meta.get("labels") or {}).pop(MANAGED_BY, None)
            return True

        await self._update(SERVICE, b.namespace, b.apex, change)


def _settled(service: Obj) -> bool:
    """An apex Service this platform made, or one it already adopted (its original selector is kept)."""
    annotations = service["metadata"].get("annotations") or {}
    return bool(service["spec"].get("selector")) and (
        is_ours(service) or ORIGINAL_SELECTOR_ANNOTATION in annotations
    )
