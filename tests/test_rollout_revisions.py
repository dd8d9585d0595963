"""A target that changes in every phase, tick by tick: no release is lost, none is promoted unanalysed.

The invariants, checked after every tick of every test here:
* the status never records as promoted a revision the primary was not given;
* a revision reaches the primary only after an analysis of that revision put traffic on its canary;
and at the end the newest revision is analysed and promoted.
"""

from __future__ import annotations

import pytest

from rheostat.plugins.platforms.base import Group, TargetMoved
from rheostat.plugins.platforms.memory import MemoryPlatform
from rheostat.rollout.types import Phase
from tests.harness import Harness, canary_yaml

ANALYSIS = """
interval: 10s
threshold: 2
stepWeight: 25
maxWeight: 50
stepWeightPromotion: 50
webhooks:
- {name: rollout-gate, type: confirm-rollout, url: "http://gate/"}
- {name: promotion-gate, type: confirm-promotion, url: "http://promotion/"}
metrics:
- {name: request-success-rate, thresholdRange: {min: 99}, interval: 10s}
"""


class Watched(Harness):
    """The harness, with the invariants checked after each tick."""

    def __init__(self) -> None:
        super().__init__(canary_yaml(ANALYSIS))
        self.analysed: set[str] = set()  # revisions whose canary got traffic under analysis
        self.promoted: list[str] = []

    @property
    def workload(self) -> object:
        return self.platform.workloads[self.target]

    async def step(self) -> None:
        await self.tick()
        st = self.state()
        w = self.platform.workloads[self.target]
        if st.phase is Phase.PROGRESSING and st.canary_weight > 0:
            self.analysed.add(st.last_applied_spec)
        if st.last_promoted_spec:
            assert st.last_promoted_spec == w.primary_revision or st.phase is not Phase.SUCCEEDED, st
        if w.primary_revision is not None and (not self.promoted or self.promoted[-1] != w.primary_revision):
            self.promoted.append(w.primary_revision)
        first = self.promoted[0] if self.promoted else None
        for rev in self.promoted:
            assert rev == first or rev in self.analysed, f"{rev} reached the primary unanalysed"

    async def until(self, phase: Phase, ticks: int = 20) -> None:
        for _ in range(ticks):
            if self.state().phase is phase:
                return
            await self.step()
        assert self.state().phase is phase, self.state()

    async def settle(self, ticks: int = 30) -> None:
        """Open every gate and run until at rest with nothing new to roll out."""
        self.hooks.answers.clear()
        self.platform.set_ready(self.target, Group.PRIMARY, True)
        for _ in range(ticks):
            await self.step()
            st = self.state()
            w = self.platform.workloads[self.target]
            if st.phase is Phase.SUCCEEDED and w.primary_revision == w.revision:
                return
        raise AssertionError(f"did not settle: {self.state()}")

    def change(self, revision: str) -> None:
        self.platform.set_revision(self.target, revision)


async def check_new_revision_is_released(h: Watched, revision: str) -> None:
    await h.settle()
    w = h.platform.workloads[h.target]
    assert w.primary_revision == revision and h.state().last_promoted_spec == revision
    assert revision in h.analysed


async def test_changed_while_initializing_is_not_recorded_as_promoted() -> None:
    # The case: a commit a few seconds after start, while the primary is still starting.
    h = Watched()
    h.platform.set_ready(h.target, Group.PRIMARY, False)
    await h.step()
    assert h.state().phase is Phase.INITIALIZING
    h.change("rev-2")
    h.platform.set_ready(h.target, Group.PRIMARY, True)
    await h.step()
    st = h.state()
    assert st.phase is Phase.INITIALIZED
    assert st.last_promoted_spec == "rev-1"  # what the primary runs, not what was committed meanwhile
    assert "NewRevision" in [e.reason for e in h.store.events(key=h.key)]
    await h.step()
    assert (h.state().phase, h.state().last_applied_spec) == (Phase.PROGRESSING, "rev-2")
    await check_new_revision_is_released(h, "rev-2")


@pytest.mark.parametrize("phase", [Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED])
async def test_changed_at_rest_starts_a_run(phase: Phase) -> None:
    h = Watched()
    await h.until(Phase.INITIALIZED)
    if phase is Phase.SUCCEEDED:
        h.change("rev-2")
        await h.settle()
    if phase is Phase.FAILED:
        h.change("rev-2")
        h.metrics.values["request-success-rate"] = 50.0
        await h.until(Phase.FAILED)
        h.metrics.values["request-success-rate"] = 100.0
    assert h.state().phase is phase
    h.change("rev-3")
    await h.step()
    assert (h.state().phase, h.state().last_applied_spec) == (Phase.PROGRESSING, "rev-3")
    await check_new_revision_is_released(h, "rev-3")


async def test_changed_while_waiting_for_confirm_rollout_runs_the_newest() -> None:
    h = Watched()
    await h.until(Phase.INITIALIZED)
    h.hooks.answers["rollout-gate"] = False
    h.change("rev-2")
    await h.until(Phase.WAITING)
    h.change("rev-3")
    await h.step()
    assert h.state().phase is Phase.WAITING
    await check_new_revision_is_released(h, "rev-3")
    assert "rev-2" not in h.promoted


@pytest.mark.parametrize("phase", [Phase.PROGRESSING, Phase.WAITING_PROMOTION])
async def test_changed_mid_analysis_restarts_on_the_newest(phase: Phase) -> None:
    h = Watched()
    await h.until(Phase.INITIALIZED)
    h.hooks.answers["promotion-gate"] = False
    h.change("rev-2")
    await h.until(phase)
    h.change("rev-3")
    await h.step()
    st = h.state()
    assert (st.phase, st.last_applied_spec, st.canary_weight, h.weights) == (
        Phase.PROGRESSING,
        "rev-3",
        0,
        (100, 0),
    )
    await check_new_revision_is_released(h, "rev-3")
    assert "rev-2" not in h.promoted


@pytest.mark.parametrize("phase", [Phase.PROMOTING, Phase.FINALISING])
async def test_changed_while_promoting_finishes_the_analysed_one_then_runs_the_new(phase: Phase) -> None:
    h = Watched()
    await h.until(Phase.INITIALIZED)
    h.change("rev-2")
    await h.until(Phase.PROMOTING)
    if phase is Phase.FINALISING:
        await h.until(Phase.FINALISING)
        h.platform.set_ready(h.target, Group.PRIMARY, False)  # the primary still rolling rev-2 out
    assert h.platform.workloads[h.target].primary_revision == "rev-2"
    h.change("rev-3")
    await h.step()
    st = h.state()
    assert st.phase is Phase.FINALISING and h.weights == (100, 0)  # the canary no longer runs rev-2
    h.platform.set_ready(h.target, Group.PRIMARY, True)
    await h.until(Phase.SUCCEEDED)
    assert h.state().last_promoted_spec == "rev-2"
    await h.step()
    assert (h.state().phase, h.state().last_applied_spec) == (Phase.PROGRESSING, "rev-3")
    await check_new_revision_is_released(h, "rev-3")
    assert h.promoted == ["rev-1", "rev-2", "rev-3"]


async def test_a_promotion_the_primary_lost_is_made_again_before_it_is_recorded() -> None:
    h = Watched()
    await h.until(Phase.INITIALIZED)
    h.change("rev-2")
    h.platform.set_ready(h.target, Group.PRIMARY, True)
    await h.until(Phase.PROMOTING)
    h.platform.workloads[h.target].primary_revision = "rev-1"  # e.g. the platform's state was lost
    await h.until(Phase.SUCCEEDED)
    assert h.platform.workloads[h.target].primary_revision == "rev-2"
    assert h.state().last_promoted_spec == "rev-2"


async def test_the_platform_refuses_to_promote_a_revision_the_target_no_longer_declares() -> None:
    platform = MemoryPlatform()
    platform.set_revision("ns/app", "rev-1")  # type: ignore[arg-type]
    await platform.ensure_primary("ns/app")  # type: ignore[arg-type]
    platform.set_revision("ns/app", "rev-3")  # type: ignore[arg-type]
    with pytest.raises(TargetMoved, match="rev-3"):
        await platform.promote("ns/app", "rev-2")  # type: ignore[arg-type]
    await platform.promote("ns/app", "rev-3")  # type: ignore[arg-type]
    assert platform.workloads["ns/app"].primary_revision == "rev-3"  # type: ignore[index]


async def test_the_end_of_a_run_is_announced_once_so_its_load_tests_stop() -> None:
    h = Watched()
    ended: list[str] = []
    h.engine.on_run_end = lambda c: ended.append(h.state().last_applied_spec)
    await h.until(Phase.INITIALIZED)
    h.change("rev-2")
    await h.until(Phase.PROGRESSING)
    await h.step()
    h.change("rev-3")  # replaced by another run
    await h.step()
    assert ended == ["rev-3"]  # the status is recorded before the announcement
    h.metrics.values["request-success-rate"] = 10.0
    await h.until(Phase.FAILED)
    await h.step()
    assert len(ended) == 2
