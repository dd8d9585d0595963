"""How GitOps hands over to the platform and the rollout engine, and how it learns about health."""

from __future__ import annotations

from rheostat.gitops.reconciler import Health, Ident
from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.load import Manifest, parse_object
from rheostat.model.workload import Workload
from rheostat.plugins.platforms.local import LocalPlatform
from rheostat.plugins.routers.base import Router
from rheostat.rollout.engine import Engine
from rheostat.rollout.scheduler import Scheduler
from rheostat.rollout.types import Phase
from rheostat.util.errors import describe_error


class Handover:
    """A new Workload revision goes to the platform; a Canary decides how it goes live."""

    def __init__(self, engine: Engine, platform: LocalPlatform, router: Router, scheduler: Scheduler) -> None:
        self.engine = engine
        self.platform = platform
        self.router = router
        self.scheduler = scheduler

    def managed(self) -> set[ObjectKey]:
        """Workloads that a Canary drives, across every Kustomization."""
        out = set()
        for stored in self.engine.store.list_objects("Canary"):
            c = parse_object(stored.body, stored.source)
            if isinstance(c, Canary) and not c.spec.is_flag:
                out.add(object_key(c.metadata.namespace, c.spec.targetRef.name))
        return out

    async def applied(self, objects: list[Manifest], deleted: list[Ident]) -> None:
        managed = self.managed()
        for kind, key in deleted:
            if kind == "Canary":  # whichever router it had: each forgets what it does not know
                for router in self.engine.backends.all_routers():
                    await router.finalize(ObjectKey(key))
        for obj in objects:
            if isinstance(obj, Workload):
                self.platform.set_managed(obj.metadata.key, obj.metadata.key in managed)
                self.platform.apply(obj)
        for kind, key in deleted:
            if kind == "Workload":
                await self.platform.delete(ObjectKey(key))
        for stored in self.engine.store.list_objects("Workload"):
            self.platform.set_managed(ObjectKey(stored.key), ObjectKey(stored.key) in managed)
        for obj in objects:
            if isinstance(obj, Canary):
                self.scheduler.kick(obj.metadata.key)
        self.scheduler.kick()  # targets may have changed revision

    def health(self, kind: str, key: str) -> Health:
        if kind == "Workload":
            try:
                primary = self.platform.status(ObjectKey(key)).primary
            except Exception as exc:
                return Health(False, describe_error(exc))
            return Health(True) if primary.ready else Health(None, primary.message or "primary not ready")
        if kind == "Canary":
            phase = self.engine.status(ObjectKey(key)).phase
            if phase in (Phase.INITIALIZED, Phase.SUCCEEDED):
                return Health(True)
            if phase is Phase.FAILED:
                return Health(False, self.engine.status(ObjectKey(key)).message)
            return Health(None, phase.value)
        return Health(True)
