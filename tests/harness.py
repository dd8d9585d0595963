"""A canary on in-memory fakes, ticked by hand with fake time: the seam for state-machine tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary, Webhook
from rheostat.model.load import parse_object
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.rollout.analysis import Checker
from rheostat.rollout.engine import CANARY, Engine, TickResult
from rheostat.rollout.types import CanaryStatus
from rheostat.rollout.webhooks import HookResult
from rheostat.store import Store


@dataclass
class FakeHooks:
    """Answers each hook by name: True = 200, False = 403; unnamed hooks answer 200 (rollback: 403)."""

    answers: dict[str, bool] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult:
        self.calls.append((hook.name, body))
        ok = self.answers.get(hook.name, hook.kind != "rollback")
        return HookResult(
            hook.name, ok, 200 if ok else 403, "" if ok else f"webhook {hook.name} returned 403"
        )

    def called(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def now(self) -> float:
        return self.t


def canary_yaml(analysis: str, **spec: Any) -> Canary:
    doc = {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": yaml.safe_load(analysis),
            **spec,
        },
    }
    obj = parse_object(doc)
    assert isinstance(obj, Canary)
    return obj


class Harness:
    def __init__(
        self, canary: Canary, store: Store | None = None, metrics: dict[str, float | None] | None = None
    ):
        self.canary = canary
        self.key = canary.metadata.key
        self.target: ObjectKey = object_key(canary.metadata.namespace, canary.spec.targetRef.name)
        self.store = store or Store(":memory:")
        self.clock = Clock()
        self.platform = MemoryPlatform(self.clock)
        self.router = MemoryRouter()
        self.metrics = MemoryMetrics(
            metrics if metrics is not None else {"request-success-rate": 100.0, "request-duration": 100.0}
        )
        self.hooks = FakeHooks()
        self.checker = Checker(
            self.hooks, {"builtin": self.metrics, "prometheus": self.metrics}, self._template
        )
        self.engine = Engine(self.store, self.router, self.platform, self.checker, clock=self.clock.now)
        self.platform.set_revision(self.target, "rev-1", replicas=2)
        self.put(canary)

    def _template(self, ns: str, name: str) -> Any:
        return self.engine.template(ns, name)

    def put(self, canary: Canary) -> None:
        self.canary = canary
        with self.store.transaction():
            self.store.put_object(CANARY, self.key, canary.model_dump(mode="json", exclude_none=True), "test")

    async def tick(self) -> TickResult:
        result = await self.engine.tick(self.key)
        assert result is not None
        self.clock.t += self.canary.spec.the_analysis.interval_s
        return result

    async def initialized(self) -> None:
        """First install, then a new revision: the state every run test starts from."""
        await self.tick()
        self.platform.set_revision(self.target, "rev-2")

    def state(self) -> CanaryStatus:
        return self.engine.status(self.key)

    @property
    def weights(self) -> tuple[int, int]:
        r = self.router.routes[self.key]
        return r.primary, r.canary

    async def run(self, n: int) -> list[tuple[str, int, int]]:
        """(phase, primary, canary) after each of n ticks."""
        out = []
        for _ in range(n):
            await self.tick()
            out.append((self.state().phase.value, *self.weights))
        return out
