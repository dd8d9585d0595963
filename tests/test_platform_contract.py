"""One contract every Platform honours (src/rheostat/plugins/platforms/base.py), run over `local` (real
processes of the demo app) and `kubernetes` (over MemoryKube and over LightkubeAPI against the kmock server,
the test playing the kubelet). Each platform's adapters are in tests/contract_platforms.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rheostat.plugins.platforms.base import Group, PlatformError, TargetMoved
from tests.contract_platforms import Rig, eventually, kube_rig, local_rig

PRIMARY, CANARY = Group.PRIMARY, Group.CANARY


@pytest.fixture(params=["local", "kubernetes@memory", "kubernetes@lightkube"])
async def rig(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Rig]:
    if request.param == "local":
        async with local_rig(tmp_path) as r:
            yield r
    else:
        async with kube_rig(request.param.partition("@")[2], tmp_path) as k:
            yield k


async def ready(rig: Rig, group: Group, want: bool = True) -> None:
    async def check() -> bool:
        return (await rig.platform.is_ready(rig.target, group)).ready == want

    await eventually(check, f"{group} is {'ready' if want else 'not ready'}")


async def initialized(rig: Rig, version: str = "v1") -> None:
    """The first ticks: the target declared, bound, its primary made and ready."""
    await rig.declare(version)
    await rig.platform.bind(rig.canary)

    async def check() -> bool:
        await rig.platform.bind(rig.canary)
        await rig.platform.ensure_primary(rig.target)
        return (await rig.platform.is_ready(rig.target, PRIMARY)).ready

    await eventually(check, "the primary is ready")


async def canary_up(rig: Rig, version: str) -> None:
    await rig.declare(version)
    await rig.platform.scale(rig.target, CANARY, None)
    await ready(rig, CANARY)


async def test_the_primary_is_made_at_the_target_revision_and_serves_it(rig: Rig) -> None:
    await rig.declare("v1")
    await rig.platform.bind(rig.canary)
    assert await rig.platform.primary_revision(rig.target) is None
    await initialized(rig, "v1")
    assert await rig.platform.primary_revision(rig.target) == await rig.platform.revision(rig.target)
    assert await rig.serves(PRIMARY) == "v1"


async def test_a_new_target_revision_differs_and_leaves_the_primary_alone(rig: Rig) -> None:
    await initialized(rig, "v1")
    first = await rig.platform.revision(rig.target)
    await rig.declare("v2")
    second = await rig.platform.revision(rig.target)
    assert second != first
    assert await rig.platform.primary_revision(rig.target) == first
    await rig.platform.ensure_primary(rig.target)  # a later tick does not roll the primary
    assert await rig.platform.primary_revision(rig.target) == first
    assert await rig.serves(PRIMARY) == "v1"


async def test_scaling_the_canary_to_its_declared_replicas_then_to_zero(rig: Rig) -> None:
    await initialized(rig, "v1")
    assert await rig.desired(CANARY) == 0, "the target runs nothing between rollouts"
    await canary_up(rig, "v2")
    assert await rig.desired(CANARY) == rig.replicas
    await rig.platform.scale(rig.target, CANARY, 0)
    assert await rig.desired(CANARY) == 0
    assert await rig.serves(PRIMARY) == "v1"


async def test_each_group_endpoints_reach_its_own_version(rig: Rig) -> None:
    await initialized(rig, "v1")
    await canary_up(rig, "v2")
    assert await rig.serves(PRIMARY) == "v1"
    assert await rig.serves(CANARY) == "v2"


@pytest.mark.parametrize("group", [PRIMARY, CANARY])
async def test_readiness_of_each_group_follows_its_replicas(rig: Rig, group: Group) -> None:
    await initialized(rig, "v1")
    await canary_up(rig, "v2")
    rig.hold(group, True)
    try:
        await ready(rig, group, False)
        found = await rig.platform.is_ready(rig.target, group)
        assert found.message and found.not_ready_since is not None
        other = CANARY if group is PRIMARY else PRIMARY
        assert (await rig.platform.is_ready(rig.target, other)).ready
    finally:
        rig.hold(group, False)
    await ready(rig, group)


async def test_promote_gives_the_primary_the_analysed_revision_once(rig: Rig) -> None:
    await initialized(rig, "v1")
    await canary_up(rig, "v2")
    analysed = await rig.platform.revision(rig.target)
    await rig.platform.promote(rig.target, analysed)
    assert await rig.platform.primary_revision(rig.target) == analysed
    await rig.platform.promote(rig.target, analysed)  # idempotent
    assert await rig.platform.primary_revision(rig.target) == analysed
    await ready(rig, PRIMARY)
    assert await rig.serves(PRIMARY) == "v2"


async def test_promote_of_a_revision_the_target_no_longer_declares_is_refused(rig: Rig) -> None:
    await initialized(rig, "v1")
    await canary_up(rig, "v2")
    analysed = await rig.platform.revision(rig.target)
    before = await rig.platform.primary_revision(rig.target)
    await rig.declare("v3")  # the target moved on after the analysis
    with pytest.raises(TargetMoved):
        await rig.platform.promote(rig.target, analysed)
    assert await rig.platform.primary_revision(rig.target) == before
    assert await rig.serves(PRIMARY) == "v1"


async def test_release_leaves_the_target_serving(rig: Rig) -> None:
    await initialized(rig, "v1")
    await canary_up(rig, "v2")
    await rig.platform.promote(rig.target, await rig.platform.revision(rig.target))
    await ready(rig, PRIMARY)
    await rig.platform.scale(rig.target, CANARY, 0)

    async def released() -> bool:
        with contextlib.suppress(PlatformError):  # "call again": the target is not ready yet
            await rig.platform.release(rig.canary)
            return True
        return False

    await eventually(released, "the release is done")
    assert await rig.serving_after_release() == "v2"
