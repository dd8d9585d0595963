"""End to end on the embedded default: a Git repository, real processes, a real Envoy, the builtin metrics."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import httpx

from rheostat.plugins.metrics.base import MetricQuery
from rheostat.rollout.types import Phase
from tests.rig import KEY, Rig, Traffic, canary, workload


def analysis(
    rig_api: str,
    port: int,
    *,
    path: str = "/",
    extra: str = "",
    hey: str = "-host web-canary",
    interval: str = "1s",
    steps: str = "stepWeight: 25\nmaxWeight: 50",
) -> str:
    return f"""
interval: {interval}
threshold: 2
{steps}
{extra}
metrics:
- {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 5s}}
- {{name: request-duration, thresholdRange: {{max: 500}}, interval: 5s}}
webhooks:
- name: load-test
  url: {rig_api}/loadtester/
  timeout: 5s
  metadata: {{cmd: "hey -z 1m -q 10 -c 2 {hey} http://127.0.0.1:{port}{path}"}}
"""


async def fresh(tmp_path: Path, **kw: str) -> tuple[Rig, str]:
    rig = Rig(tmp_path)
    spec = analysis(rig.api, rig.port, **kw)
    rig.commit(workload("6.0.0", replicas=2), canary(rig.port, spec), message="6.0.0")
    await rig.start()
    await rig.wait(Phase.INITIALIZED)
    return rig, spec


async def test_good_release_promoted_without_dropping_a_request_then_500s_roll_back(tmp_path: Path) -> None:
    rig, spec = await fresh(tmp_path)
    traffic = Traffic(rig.service + "/")
    try:
        traffic.start()
        tick = rig.status().tick
        rig.commit(workload("6.0.1", replicas=2), canary(rig.port, spec), message="6.0.1")
        await rig.wait(Phase.SUCCEEDED, after_tick=tick)
        await asyncio.sleep(1.0)
        assert traffic.errors == 0  # weights moved and primaries were replaced one by one under load
        assert {"6.0.0", "6.0.1"} <= set(traffic.versions)
        assert await rig.versions(20) == {"6.0.1": 20}

        bad = analysis(rig.api, rig.port, path="/status/500")
        tick = rig.status().tick
        rig.commit(workload("6.0.2", replicas=2), canary(rig.port, bad), message="6.0.2 with 500s")
        st = await rig.wait(Phase.FAILED, after_tick=tick)
        assert "request-success-rate" in st.message
        assert await rig.versions(20) == {"6.0.1": 20}
        assert rig.server is not None
        group = rig.server.controller.platform.status(KEY).canary
        assert all(r.pid is None for r in group.replicas) or group.desired == 0
    finally:
        await traffic.stop()
        await rig.stop()


async def test_slow_release_rolls_back_on_p99(tmp_path: Path) -> None:
    rig, _ = await fresh(tmp_path)
    try:
        slow = analysis(rig.api, rig.port, path="/delay/1")
        rig.commit(workload("6.0.1"), canary(rig.port, slow), message="slow")
        st = await rig.wait(Phase.FAILED, after_tick=rig.status().tick)
        assert "request-duration" in st.message
        assert await rig.versions(10) == {"6.0.0": 10}
    finally:
        await rig.stop()


async def test_blue_green_keeps_users_on_primary_then_switches(tmp_path: Path) -> None:
    rig, _ = await fresh(tmp_path, steps="iterations: 4")
    try:
        bg = analysis(rig.api, rig.port, steps="iterations: 4")
        rig.commit(workload("6.0.1"), canary(rig.port, bg), message="6.0.1")
        await rig.wait_for("an iteration", lambda: rig.status().iterations >= 1)
        assert await rig.versions(20) == {"6.0.0": 20}  # users stay on blue while green is checked
        await rig.wait(Phase.SUCCEEDED, after_tick=rig.status().tick)
        assert await rig.versions(10) == {"6.0.1": 10}
        assert rig.server is not None
        hist = rig.server.controller.store.history(KEY)
        assert any(h.body["canaryWeight"] == 100 for h in hist)  # the switch
    finally:
        await rig.stop()


async def test_ab_routes_only_matching_requests_to_the_canary(tmp_path: Path) -> None:
    steps = (
        "iterations: 6\nmatch:\n- headers: {x-canary: {exact: insider}}\n"
        '- headers: {cookie: {regex: "^(.*?;)?(canary=always)(;.*)?$"}}'
    )
    rig, _ = await fresh(tmp_path, steps=steps)
    try:
        ab = analysis(rig.api, rig.port, steps=steps, hey="-H 'x-canary: insider'")
        rig.commit(workload("6.0.1"), canary(rig.port, ab), message="6.0.1")
        await rig.wait_for("A/B routes", lambda: rig.status().iterations >= 1)
        assert await rig.versions(10, **{"x-canary": "insider"}) == {"6.0.1": 10}
        assert await rig.versions(10, cookie="canary=always") == {"6.0.1": 10}  # as `curl -b canary=always`
        assert await rig.versions(10, **{"x-canary": "outsider"}) == {"6.0.0": 10}
        assert await rig.versions(10) == {"6.0.0": 10}
        await rig.wait(Phase.SUCCEEDED, after_tick=rig.status().tick)
        assert await rig.versions(10) == {"6.0.1": 10}
    finally:
        await rig.stop()


async def test_mirroring_shadows_traffic_before_shifting_it(tmp_path: Path) -> None:
    steps = "stepWeight: 50\nmaxWeight: 50\nmirror: true"
    rig, _ = await fresh(tmp_path, steps=steps, interval="3s")
    traffic = Traffic(rig.service + "/")
    try:
        traffic.start()
        rig.commit(
            workload("6.0.1"),
            canary(rig.port, analysis(rig.api, rig.port, steps=steps, interval="3s", hey="")),
            message="6.0.1",
        )
        assert rig.server is not None
        ctl = rig.server.controller

        async def mirrored() -> bool:
            return (await ctl.router.get_routes(KEY)).mirror

        for _ in range(300):
            if await mirrored():
                break
            await asyncio.sleep(0.05)
        assert await mirrored()
        before = sum(traffic.versions.values())
        await asyncio.sleep(1.5)
        answered = traffic.versions.copy()
        assert await mirrored()  # still in the shadow stage
        assert answered["6.0.1"] == 0 and sum(answered.values()) > before  # users only see the primary...
        value = await ctl.metrics.query(MetricQuery(KEY, "request-success-rate", 2.0, group="canary"))
        assert value == 100.0  # ...while the canary receives a copy of their requests
        await rig.wait(Phase.SUCCEEDED, after_tick=rig.status().tick)
    finally:
        await traffic.stop()
        await rig.stop()


async def test_session_affinity_keeps_a_canary_client_on_the_canary(tmp_path: Path) -> None:
    steps = "stepWeight: 20\nmaxWeight: 60\nsessionAffinity: {cookieName: canary-session, maxAge: 120}"
    rig, _ = await fresh(tmp_path, steps=steps, interval="3s")
    try:
        rig.commit(
            workload("6.0.1"),
            canary(rig.port, analysis(rig.api, rig.port, steps=steps, interval="3s")),
            message="6.0.1",
        )
        await rig.wait_for("canary weight", lambda: rig.status().canary_weight > 0)
        cookie = None
        async with httpx.AsyncClient(timeout=5) as client:
            for _ in range(200):
                r = await client.get(rig.service + "/")
                if "canary-session=" in r.headers.get("set-cookie", ""):
                    assert r.json()["version"] == "6.0.1"
                    cookie = r.headers["set-cookie"].split(";")[0]
                    break
            assert cookie is not None
            answers = [
                (await client.get(rig.service + "/", headers={"cookie": cookie})).json()["version"]
                for _ in range(20)
            ]
        assert answers == ["6.0.1"] * 20
    finally:
        await rig.stop()


async def test_envoy_killed_mid_rollout_is_restored_and_the_rollout_finishes(tmp_path: Path) -> None:
    rig, _ = await fresh(tmp_path)
    try:
        assert rig.server is not None
        router = rig.server.controller.router
        rig.commit(workload("6.0.1"), canary(rig.port, analysis(rig.api, rig.port)), message="6.0.1")
        await rig.wait_for("canary weight", lambda: rig.status().canary_weight > 0)
        pid = router.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await rig.wait(Phase.SUCCEEDED, after_tick=rig.status().tick)
        assert router.pid != pid
        assert any("EnvoyRestarted" in e for e in rig.events(kind="Router"))
        assert await rig.versions(10) == {"6.0.1": 10}
    finally:
        await rig.stop()


async def test_canary_processes_killed_mid_rollout_lead_to_rollback(tmp_path: Path) -> None:
    rig, _ = await fresh(tmp_path)
    traffic = Traffic(rig.service + "/")
    try:
        traffic.start()
        assert rig.server is not None
        platform = rig.server.controller.platform
        rig.commit(workload("6.0.1"), canary(rig.port, analysis(rig.api, rig.port)), message="6.0.1")
        await rig.wait_for("canary weight", lambda: rig.status().canary_weight > 0)
        for _ in range(3):
            for replica in platform.status(KEY).canary.replicas:
                if replica.pid:
                    os.kill(replica.pid, signal.SIGKILL)
            await asyncio.sleep(0.7)
        st = await rig.wait(Phase.FAILED, timeout=40)
        assert "request-success-rate" in st.message or "not ready" in st.message
        assert await rig.versions(10) == {"6.0.0": 10}
        assert any("ProcessRestarted" in e for e in rig.events(kind="Workload"))
    finally:
        await traffic.stop()
        await rig.stop()


async def test_command_not_found_rolls_back_naming_the_command(tmp_path: Path) -> None:
    rig, spec = await fresh(tmp_path)
    try:
        broken = workload("6.0.1", command=["no-such-command-xyz", "--port", "{port}"])
        rig.commit(broken, canary(rig.port, spec), message="typo")
        st = await rig.wait(Phase.FAILED, after_tick=rig.status().tick)
        assert "no-such-command-xyz" in st.message
        assert await rig.versions(10) == {"6.0.0": 10}
    finally:
        await rig.stop()


async def test_a_process_that_never_gets_ready_rolls_back_at_the_progress_deadline(tmp_path: Path) -> None:
    rig, spec = await fresh(tmp_path)
    try:
        rig.commit(workload("6.0.1", probe="/nope"), canary(rig.port, spec, deadline=4), message="bad probe")
        st = await rig.wait(Phase.FAILED, after_tick=rig.status().tick, timeout=30)
        assert "progress deadline" in st.message
        assert await rig.versions(10) == {"6.0.0": 10}
    finally:
        await rig.stop()


async def test_a_taken_listener_port_is_a_clear_event_and_nothing_half_applied(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", rig.port))
    blocker.listen()
    try:
        rig.commit(workload("6.0.0"), canary(rig.port, analysis(rig.api, rig.port)), message="first")
        await rig.start()
        await rig.wait_for(
            "a TickFailed event", lambda: any("TickFailed" in e and str(rig.port) in e for e in rig.events())
        )
        assert rig.status().phase is Phase.INITIALIZING
        blocker.close()
        await rig.wait(Phase.INITIALIZED, timeout=30)
        assert await rig.versions(5) == {"6.0.0": 5}
    finally:
        blocker.close()
        await rig.stop()


async def test_a_good_release_right_after_a_rolled_back_one_is_judged_on_its_own_traffic(
    tmp_path: Path,
) -> None:
    # The bad release's 5xx are still inside the 10 s window when the good one starts: they must not count.
    rig = Rig(tmp_path)
    spec = analysis(rig.api, rig.port).replace("interval: 5s", "interval: 10s")
    rig.commit(workload("6.0.0", replicas=1), canary(rig.port, spec), message="6.0.0")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        bad = workload("6.0.1", env={"ERROR_RATE": "1"})
        rig.commit(bad, canary(rig.port, spec), message="6.0.1 answers 500")
        await rig.wait(Phase.FAILED, after_tick=rig.status().tick)
        tick = rig.status().tick
        rig.commit(workload("6.0.2"), canary(rig.port, spec), message="6.0.2, good")
        await rig.wait(Phase.SUCCEEDED, Phase.FAILED, after_tick=tick)
        assert rig.status().phase is Phase.SUCCEEDED, rig.events()[-10:]
        assert await rig.versions(10) == {"6.0.2": 10}
        assert rig.server is not None
        run = [e for e in rig.server.controller.store.events(key=KEY, limit=200) if e.ts > 0]
        last_start = max(e.id for e in run if e.reason == "NewRevision")
        failed = [e.message for e in run if e.id > last_start and e.reason == "CheckFailed"]
        assert failed == []  # not even one failed check: the window began with this run
    finally:
        await rig.stop()
