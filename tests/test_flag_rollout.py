"""A flag rolled out by a Canary, tick by tick: the real FlagStore, FlagRollouts and engine, fake metrics.

The end-to-end run with real processes, OFREP and the stock client is in tests/test_flag_rollout_e2e.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from rheostat.flags.evaluate import Context
from rheostat.flags.kill import KillSwitch
from rheostat.flags.rollout import FlagRollouts
from rheostat.flags.store import FlagSource, FlagStore, bucket
from rheostat.model.canary import Canary
from rheostat.model.flags import FlagdConfig
from rheostat.model.load import ManifestError, parse_object
from rheostat.plugins.metrics.memory import MemoryMetrics
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.plugins.routers.memory import MemoryRouter
from rheostat.rollout.analysis import Checker
from rheostat.rollout.engine import CANARY, Engine
from rheostat.rollout.types import CanaryStatus, Event, Phase
from rheostat.store import Store
from tests.harness import Clock, FakeHooks

USERS = [f"user-{i}" for i in range(2000)]


def flag_set(default: str, state: str = "ENABLED") -> FlagSource:
    config = FlagdConfig.model_validate(
        {
            "flags": {
                "new-checkout": {
                    "state": state,
                    "variants": {"on": True, "off": False},
                    "defaultVariant": default,
                },
                "color": {"state": "ENABLED", "variants": {"red": "red"}, "defaultVariant": "red"},
            }
        }
    )
    return FlagSource("FeatureFlag shop/checkout", config, f"main@sha1:{default}")


def canary_doc(**flag: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "checkout", "namespace": "shop"},
        "spec": {
            "targetRef": {
                "apiVersion": "core.openfeature.dev/v1beta1",
                "kind": "FeatureFlag",
                "name": "checkout",
            },
            "flag": {"key": "new-checkout", **flag},
            "analysis": yaml.safe_load(
                "interval: 10s\nthreshold: 2\nstepWeight: 25\nmaxWeight: 50\n"
                "metrics: [{name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}]"
            ),
        },
    }


class FlagRig:
    def __init__(self, db: Store | None = None) -> None:
        self.db = db or Store(":memory:")
        self.clock = Clock()
        self.flags = FlagStore()
        self.rollouts = FlagRollouts(self.flags, self.db)
        self.metrics = MemoryMetrics({"request-success-rate": 100.0})
        checker = Checker(FakeHooks(), {"builtin": self.metrics}, lambda ns, name: None)
        self.alerts: list[tuple[str, str]] = []

        async def alert(canary: Canary, event: Event, status: CanaryStatus) -> None:
            self.alerts.append((event.reason, str(event.alert)))

        self.engine = Engine(
            self.db,
            MemoryRouter(),
            MemoryPlatform(self.clock),
            checker,
            clock=self.clock.now,
            flags=(self.rollouts, self.rollouts),
            alerts=alert,
        )
        canary = parse_object(canary_doc())
        assert isinstance(canary, Canary)
        self.key = canary.metadata.key
        with self.db.transaction():
            self.db.put_object(CANARY, self.key, canary.model_dump(mode="json", exclude_none=True), "test")

    async def tick(self) -> Phase:
        await self.engine.tick(self.key)
        self.clock.t += 10
        return self.engine.status(self.key).phase

    def share_on(self) -> float:
        on = sum(self.flags.evaluate("new-checkout", Context(u)).value is True for u in USERS)
        return on / len(USERS)

    def value_for(self, user: str) -> Any:
        return self.flags.evaluate("new-checkout", Context(user)).value


def test_the_split_is_sticky_and_only_moves_users_from_old_to_new() -> None:
    flags = FlagStore()
    flags.replace([flag_set("off")])
    flags.pin("new-checkout")
    flags.replace([flag_set("on")])  # Git moves on; the pinned primary still serves everyone
    assert all(flags.evaluate("new-checkout", Context(u)).value is False for u in USERS)
    before: set[str] = set()
    for share in (10, 25, 50, 80):
        flags.set_split("new-checkout", share)
        now = {u for u in USERS if flags.evaluate("new-checkout", Context(u)).value is True}
        assert before <= now  # nobody who had the new definition loses it when the share grows
        assert abs(len(now) / len(USERS) - share / 100) < 0.04
        assert now == {u for u in USERS if bucket("new-checkout", u) < share}
        before = now
    # no targeting key: no bucket, so the primary answers; other flags are untouched
    assert flags.evaluate("new-checkout", Context()).value is False
    assert flags.evaluate("color", Context("x")).value == "red"
    # the rollout answers reach OFREP's bulk evaluation too
    bulk = {r.key: r.value for r in flags.evaluate_all(Context(next(iter(before))))}
    assert bulk["new-checkout"] is True


async def test_a_new_definition_in_git_is_rolled_out_step_by_step_and_promoted() -> None:
    rig = FlagRig()
    rig.flags.replace([flag_set("off")])
    assert await rig.tick() is Phase.INITIALIZED  # first sight: Git's definition is adopted as the primary
    assert rig.flags.primary("new-checkout") is not None
    assert await rig.tick() is Phase.INITIALIZED

    rig.flags.replace([flag_set("on")])
    assert rig.share_on() == 0.0  # nobody gets the new definition before the engine says so
    shares = []
    for _ in range(8):
        phase = await rig.tick()
        shares.append((phase.value, round(rig.share_on(), 1)))
        if phase is Phase.SUCCEEDED:
            break
    assert shares[0] == ("Progressing", 0.0)
    assert ("Progressing", 0.2) in shares or ("Progressing", 0.3) in shares  # 25%
    assert ("Progressing", 0.5) in shares
    assert shares[-1] == ("Succeeded", 1.0)
    assert rig.flags.split("new-checkout") == 0 and not rig.flags.rolling_out("new-checkout")
    events = [e.reason for e in rig.db.events(kind=CANARY, key=rig.key)]
    assert events == [
        "Initialized",
        "NewRevision",
        "Advance",
        "Advance",
        "Promoting",
        "Finalising",
        "Promoted",
    ]
    history = rig.db.history(rig.key)
    assert max(int(h.body["canaryWeight"]) for h in history) == 50


async def test_errors_of_the_new_variant_roll_the_flag_back_to_zero() -> None:
    rig = FlagRig()
    rig.flags.replace([flag_set("off")])
    await rig.tick()
    rig.flags.replace([flag_set("on")])
    await rig.tick()
    await rig.tick()
    assert rig.flags.split("new-checkout") == 25 and 0.2 < rig.share_on() < 0.3
    rig.metrics.values["request-success-rate"] = 80.0
    phases = [await rig.tick() for _ in range(3)]
    assert Phase.FAILED in phases
    assert rig.flags.split("new-checkout") == 0
    assert rig.share_on() == 0.0  # everyone is back on the primary definition, though Git says "on"
    assert rig.flags.get("new-checkout").default_variant == "on"  # type: ignore[union-attr]
    warnings = [e for e in rig.db.events(kind=CANARY, key=rig.key) if e.warning]
    assert any("Rolling back" in e.message for e in warnings)
    await rig.engine.drain()
    assert ("Rollback", "error") in rig.alerts  # the Canary's alert providers hear of it
    # Git reverting to the primary's definition ends the drift: nothing to roll out any more
    rig.flags.replace([flag_set("off")])
    assert not rig.flags.rolling_out("new-checkout")
    assert await rig.tick() is Phase.FAILED and rig.share_on() == 0.0


async def test_primary_and_split_survive_a_restart() -> None:
    db = Store(":memory:")
    rig = FlagRig(db)
    rig.flags.replace([flag_set("off")])
    await rig.tick()
    rig.flags.replace([flag_set("on")])
    await rig.tick()
    await rig.tick()
    before = {u: rig.value_for(u) for u in USERS[:300]}
    assert any(before.values()) and not all(before.values())

    again = FlagRig(db)  # a new controller on the same state store: Git's flags load after the restore
    again.rollouts.restore()
    again.flags.replace([flag_set("on")])
    assert {u: again.value_for(u) for u in USERS[:300]} == before
    assert again.engine.status(again.key).phase is Phase.PROGRESSING


async def test_deleting_the_canary_hands_the_flag_back_to_git() -> None:
    rig = FlagRig()
    rig.flags.replace([flag_set("off")])
    await rig.tick()
    rig.flags.replace([flag_set("on")])
    await rig.tick()
    await rig.rollouts.finalize(rig.key)
    assert rig.share_on() == 1.0 and rig.flags.primary("new-checkout") is None


async def test_a_canary_moved_to_another_flag_hands_the_first_back_to_git() -> None:
    rig = FlagRig()
    rig.flags.replace([flag_set("off")])
    await rig.tick()
    rig.flags.replace([flag_set("on")])
    await rig.tick()
    doc = canary_doc()
    doc["spec"]["flag"]["key"] = "color"
    with rig.db.transaction():
        rig.db.put_object(CANARY, rig.key, doc, "test")
    await rig.tick()
    assert rig.flags.primary("new-checkout") is None and rig.share_on() == 1.0
    assert rig.flags.primary("color") is not None


def test_kill_switch_turns_a_flag_off_for_everyone_until_git_agrees() -> None:
    db = Store(":memory:")
    flags = FlagStore()
    flags.replace([flag_set("on")])
    kill = KillSwitch(flags, db)
    seen = []
    flags.subscribe(lambda change: seen.append(change.changed))
    kill.disable("new-checkout", "checkout is broken")
    answer = flags.evaluate("new-checkout", Context("u1"))
    assert (answer.reason, answer.has_value) == ("DISABLED", False)
    assert ("new-checkout",) in seen  # OFREP subscribers are told, so clients refetch
    assert flags.evaluate("color", Context("u1")).value == "red"
    assert [e.reason for e in db.events(key="new-checkout")] == ["KillSwitch"]

    flags.replace([flag_set("off")])  # another Git change, still ENABLED: the kill holds
    kill.reconcile()
    assert flags.evaluate("new-checkout", Context("u1")).reason == "DISABLED"
    flags.replace([flag_set("off", state="DISABLED")])  # Git agrees: the override is dropped
    kill.reconcile()
    assert not flags.killed("new-checkout") and kill.killed() == {}
    assert "KillSwitchInGit" in [e.reason for e in db.events(key="new-checkout")]

    flags.replace([flag_set("on")])
    kill.disable("new-checkout")
    assert kill.enable("new-checkout") and flags.evaluate("new-checkout", Context("u1")).value is True
    assert not kill.enable("new-checkout")
    with pytest.raises(KeyError):
        kill.disable("no-such-flag")


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"flag": None}, "spec", "flag: field required"),
        (
            {"targetRef": {"apiVersion": "v1", "kind": "FeatureFlag", "name": "x"}},
            "spec",
            "core.openfeature.dev",
        ),
        ({"analysis": {"iterations": 5, "metrics": []}}, "spec", "share of users"),
        ({"analysis": {"stepWeight": 10, "mirror": True}}, "spec", "share of users"),
    ],
)
def test_bad_flag_canaries_are_refused_with_the_field(
    change: dict[str, Any], field: str, message: str
) -> None:
    doc = canary_doc()
    doc["spec"].update(change)
    doc["spec"] = {k: v for k, v in doc["spec"].items() if v is not None}
    with pytest.raises(ManifestError) as err:
        parse_object(doc, "canary.yaml")
    assert "canary.yaml" in str(err.value) and message in str(err.value)


def test_a_workload_canary_still_needs_its_service() -> None:
    doc = canary_doc()
    doc["spec"]["targetRef"] = {"apiVersion": "rheostat.dev/v1alpha1", "kind": "Workload", "name": "w"}
    with pytest.raises(ManifestError, match="service: field required"):
        parse_object(doc, "canary.yaml")
    doc["spec"]["service"] = {"port": 9000}
    with pytest.raises(ManifestError, match="flag: only for"):
        parse_object(doc, "canary.yaml")


FLAGS_YAML = """apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {name: checkout, namespace: shop}
spec:
  flagSpec:
    flags:
      new-checkout: {state: ENABLED, variants: {"on": true, "off": false}, defaultVariant: "off"}
"""


def canary_yaml(name: str = "checkout", **flag: Any) -> str:
    doc = canary_doc(**flag)
    doc["metadata"]["name"] = name
    return yaml.safe_dump(doc)


@pytest.mark.parametrize(
    ("docs", "field", "message"),
    [
        ([canary_yaml()], "spec.targetRef.name", "FeatureFlag shop/checkout is not declared"),
        ([FLAGS_YAML, canary_yaml(key="nope")], "spec.flag.key", "has no flag 'nope'"),
        ([FLAGS_YAML, canary_yaml(), canary_yaml("again")], "spec.flag.key", "already rolled out by Canary"),
        ([FLAGS_YAML, canary_yaml(appRef={"name": "shop"})], "spec.flag.appRef.name", "Workload shop/shop"),
    ],
)
def test_a_revision_with_a_bad_flag_target_is_refused_naming_the_field(
    docs: list[str], field: str, message: str
) -> None:
    from rheostat.gitops.checks import check_references
    from rheostat.model.load import parse_text

    objects = parse_text("---\n".join(docs), "flags.yaml")
    with pytest.raises(ManifestError) as err:
        check_references(objects, "flags.yaml")
    text = str(err.value)
    assert "flags.yaml" in text and field in text and message in text, text


def test_a_good_flag_target_passes_the_checks() -> None:
    from rheostat.gitops.checks import check_references
    from rheostat.model.load import parse_text

    check_references(parse_text(FLAGS_YAML + "---\n" + canary_yaml(), "flags.yaml"), "flags.yaml")
