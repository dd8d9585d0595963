"""LocalPlatform with real processes on loopback ports. Every process a test starts is ended by it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.model.workload import Workload
from rheostat.plugins.platforms.base import Group, PlatformError
from rheostat.plugins.platforms.local import LocalPlatform
from rheostat.plugins.platforms.local.procfs import alive, session_members
from rheostat.plugins.routers.base import Upstream

KEY = ObjectKey("default/podinfo")


def workload(
    version: str = "v1",
    *,
    replicas: int = 2,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    probe: bool = True,
) -> Workload:
    template: dict[str, Any] = {
        "command": command or ["python", "-m", "rheostat.demo.app", "--port", "{port}", "--version", version],
        "env": env or {},
    }
    if probe:
        template["readinessProbe"] = {"path": "/readyz", "periodSeconds": 0.2}
    return Workload.model_validate(
        {
            "apiVersion": "rheostat.dev/v1alpha1",
            "kind": "Workload",
            "metadata": {"name": "podinfo"},
            "spec": {"replicas": replicas, "template": template},
        }
    )


@dataclass
class Recorder:
    platform: LocalPlatform | None = None
    events: list[tuple[ObjectKey, str, str]] = field(default_factory=list)
    published: list[tuple[Upstream, ...]] = field(default_factory=list)

    def on_event(self, key: ObjectKey, reason: str, message: str) -> None:
        self.events.append((key, reason, message))

    async def on_endpoints(self, key: ObjectKey) -> None:
        assert self.platform is not None
        self.published.append(await self.platform.endpoints(key, Group.PRIMARY))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def platform(tmp_path: Path, recorder: Recorder) -> AsyncIterator[LocalPlatform]:
    p = LocalPlatform(
        tmp_path / "data", on_event=recorder.on_event, on_endpoints=recorder.on_endpoints, drain_s=0.2
    )
    recorder.platform = p
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


async def ready(p: LocalPlatform, group: Group = Group.PRIMARY, within: float = 10.0) -> None:
    async def check() -> bool:
        return (await p.is_ready(KEY, group)).ready

    await eventually(check, within, f"{group} ready")


async def versions(client: httpx.AsyncClient, endpoints: tuple[Upstream, ...]) -> list[str]:
    out = []
    for ep in endpoints:
        response = await client.get(f"http://{ep.host}:{ep.port}/")
        out.append(response.json()["version"])
    return out


def pids(p: LocalPlatform, group: Group = Group.PRIMARY) -> list[int]:
    status = p.status(KEY)
    replicas = status.primary.replicas if group is Group.PRIMARY else status.canary.replicas
    return [r.pid for r in replicas if r.pid is not None]


async def managed(p: LocalPlatform, w: Workload) -> None:
    p.set_managed(KEY, True)
    p.apply(w)
    await p.ensure_primary(KEY)


async def test_ensure_primary_starts_ready_replicas_of_the_target_version(platform: LocalPlatform) -> None:
    await managed(platform, workload("v1", replicas=3))
    await ready(platform)
    endpoints = await platform.endpoints(KEY, Group.PRIMARY)
    assert len(endpoints) == 3
    async with httpx.AsyncClient() as client:
        assert await versions(client, endpoints) == ["v1"] * 3
    assert await platform.revision(KEY) == workload("v1").spec.template.revision()
    assert await platform.endpoints(KEY, Group.CANARY) == ()
    assert (await platform.is_ready(KEY, Group.CANARY)).ready  # scaled to 0: trivially ready


async def test_canary_scales_up_follows_the_target_and_scales_down(platform: LocalPlatform) -> None:
    await managed(platform, workload("v1"))
    platform.apply(workload("v2"))
    await platform.scale(KEY, Group.CANARY, None)
    await ready(platform, Group.CANARY)
    async with httpx.AsyncClient() as client:
        assert await versions(client, await platform.endpoints(KEY, Group.CANARY)) == ["v2", "v2"]
        platform.apply(workload("v3"))  # a new template while the canary runs replaces its replicas
        assert not (await platform.is_ready(KEY, Group.CANARY)).ready
        await ready(platform, Group.CANARY)
        assert await versions(client, await platform.endpoints(KEY, Group.CANARY)) == ["v3", "v3"]
        assert await versions(client, await platform.endpoints(KEY, Group.PRIMARY)) == ["v1", "v1"]
    canary_pids = pids(platform, Group.CANARY)
    await platform.scale(KEY, Group.CANARY, 0)
    assert (await platform.is_ready(KEY, Group.CANARY)).ready

    async def canary_gone() -> bool:
        return platform.status(KEY).canary.replicas == () and not any(alive(pid) for pid in canary_pids)

    await eventually(canary_gone, what="canary processes gone")
    assert await platform.endpoints(KEY, Group.CANARY) == ()


async def test_promote_replaces_primary_one_by_one_without_dropping_requests(
    platform: LocalPlatform, recorder: Recorder
) -> None:
    await managed(platform, workload("v1"))
    await ready(platform)
    platform.apply(workload("v2"))
    old_pids = pids(platform)
    recorder.published.clear()
    failures = 0
    fewest = 99
    seen: set[str] = set()
    stop = asyncio.Event()

    async def poll(client: httpx.AsyncClient) -> None:
        nonlocal failures, fewest
        while not stop.is_set():
            endpoints = await platform.endpoints(KEY, Group.PRIMARY)
            fewest = min(fewest, len(endpoints))
            for ep in endpoints:
                try:
                    response = await client.get(f"http://{ep.host}:{ep.port}/")
                    seen.add(response.json()["version"])
                except httpx.TransportError:
                    failures += 1
            await asyncio.sleep(0.01)

    async with httpx.AsyncClient(timeout=2) as client:
        poller = asyncio.create_task(poll(client))
        await platform.promote(KEY, await platform.revision(KEY))
        assert not (await platform.is_ready(KEY, Group.PRIMARY)).ready  # the engine waits on this
        await ready(platform, within=20)
        stop.set()
        await poller
        assert await versions(client, await platform.endpoints(KEY, Group.PRIMARY)) == ["v2", "v2"]
    assert failures == 0
    assert fewest >= 2  # maxUnavailable 0: a replica leaves only once its replacement is ready
    assert seen == {"v1", "v2"}
    assert not any(alive(pid) for pid in old_pids)
    # The router heard of each replacement before the old process was stopped, and never got too few.
    assert len(recorder.published) >= 2
    assert min(len(eps) for eps in recorder.published) >= 2
    assert recorder.published[-1] == await platform.endpoints(KEY, Group.PRIMARY)

    current = pids(platform)
    await platform.promote(KEY, await platform.revision(KEY))  # the same revision again: nothing happens
    assert (await platform.is_ready(KEY, Group.PRIMARY)).ready
    assert pids(platform) == current


async def test_unmanaged_workload_rolls_new_template_out_to_primary(platform: LocalPlatform) -> None:
    platform.apply(workload("v1", replicas=1))
    await ready(platform)
    platform.apply(workload("v2", replicas=1))
    await ready(platform, within=20)
    async with httpx.AsyncClient() as client:
        assert await versions(client, await platform.endpoints(KEY, Group.PRIMARY)) == ["v2"]
    assert platform.status(KEY).canary.replicas == ()


async def test_killed_process_is_restarted_on_its_port_and_reported(
    platform: LocalPlatform, recorder: Recorder
) -> None:
    await managed(platform, workload("v1", replicas=1))
    await ready(platform)
    before = platform.status(KEY).primary.replicas[0]
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)

    async def restarted() -> bool:
        after = platform.status(KEY).primary.replicas[0]
        return after.restarts == 1 and after.ready and after.pid != before.pid

    await eventually(restarted, what="restart")
    after = platform.status(KEY).primary.replicas[0]
    assert after.port == before.port
    reasons = [(key, reason) for key, reason, _ in recorder.events]
    assert (KEY, "ProcessRestarted") in reasons
    message = next(m for _, r, m in recorder.events if r == "ProcessRestarted")
    assert "SIGKILL" in message


async def test_command_not_found_is_fatal_and_names_the_command(platform: LocalPlatform) -> None:
    await managed(platform, workload(command=["no-such-server-xyz", "--port", "{port}"], replicas=1))

    async def fatal() -> bool:
        return (await platform.is_ready(KEY, Group.PRIMARY)).fatal

    await eventually(fatal, what="fatal readiness")
    readiness = await platform.is_ready(KEY, Group.PRIMARY)
    assert not readiness.ready
    assert "'no-such-server-xyz' not found" in readiness.message


async def test_crash_loop_is_fatal_with_the_last_output(platform: LocalPlatform) -> None:
    crash = ["python", "-c", "import sys; print('cannot bind', sys.argv[1]); sys.exit(3)", "{port}"]
    await managed(platform, workload(command=crash, replicas=1))

    async def fatal() -> bool:
        return (await platform.is_ready(KEY, Group.PRIMARY)).fatal

    await eventually(fatal, within=15, what="crash loop")
    message = (await platform.is_ready(KEY, Group.PRIMARY)).message
    assert "crash-looping" in message
    assert "exited with code 3" in message
    assert "cannot bind" in message


async def test_process_that_never_gets_ready_is_not_ready_since_it_started(platform: LocalPlatform) -> None:
    sleeper = ["python", "-c", "import time; time.sleep(60)", "{port}"]
    begun = time.time()
    await managed(platform, workload(command=sleeper, replicas=1))
    await asyncio.sleep(0.8)
    readiness = await platform.is_ready(KEY, Group.PRIMARY)
    assert not readiness.ready
    assert not readiness.fatal
    assert readiness.not_ready_since is not None
    assert begun - 1 <= readiness.not_ready_since <= time.time()
    assert await platform.endpoints(KEY, Group.PRIMARY) == ()


async def test_logs_return_the_app_output(platform: LocalPlatform) -> None:
    await managed(platform, workload("v1", replicas=1))
    await ready(platform)
    text = platform.logs(KEY, Group.PRIMARY)
    assert "==> primary-0 <==" in text
    assert "version v1 listening on 127.0.0.1" in text
    assert platform.logs(KEY, Group.CANARY) == ""
    with pytest.raises(PlatformError, match="not found"):
        platform.logs(ObjectKey("default/nothing"))


async def test_stop_leaves_no_process_behind(platform: LocalPlatform) -> None:
    await managed(platform, workload("v1"))
    await platform.scale(KEY, Group.CANARY, 1)
    await ready(platform)
    await ready(platform, Group.CANARY)
    started = pids(platform) + pids(platform, Group.CANARY)
    assert len(started) == 3
    await platform.stop()
    assert not any(alive(pid) for pid in started)
    assert asyncio.all_tasks() == {asyncio.current_task()}  # no supervisor outlives stop()
    with pytest.raises(PlatformError, match="not started"):
        await platform.is_ready(KEY, Group.PRIMARY)


async def test_delete_stops_the_workload(platform: LocalPlatform) -> None:
    await managed(platform, workload("v1", replicas=1))
    await ready(platform)
    started = pids(platform)
    await platform.delete(KEY)
    assert not any(alive(pid) for pid in started)
    with pytest.raises(PlatformError, match="not found"):
        await platform.is_ready(KEY, Group.PRIMARY)


CONTROLLER = """
import asyncio, json, sys
from pathlib import Path
from rheostat.model.workload import Workload
from rheostat.plugins.platforms.base import Group
from rheostat.plugins.platforms.local import LocalPlatform

async def main() -> None:
    platform = LocalPlatform(Path(sys.argv[1]), drain_s=0.1)
    await platform.start()
    workload = Workload.model_validate(json.loads(sys.argv[2]))
    platform.apply(workload)
    key = workload.metadata.key
    while not (await platform.is_ready(key, Group.PRIMARY)).ready:
        await asyncio.sleep(0.05)
    print(json.dumps([r.pid for r in platform.status(key).primary.replicas]), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


async def crashed_controller(data_dir: Path, w: Workload) -> list[int]:
    """Run CONTROLLER in its own process until the primary is ready, then SIGKILL it; the app pids."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONTROLLER,
        str(data_dir),
        json.dumps(w.model_dump(mode="json")),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        app_pids: list[int] = json.loads(line)
    finally:
        child.kill()  # SIGKILL: the controller gets no chance to clean up
        await child.wait()
    return app_pids


async def test_replicas_outlive_a_controller_crash_and_are_adopted_by_the_next(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # The shell forks a sleeper, then becomes the app: the whole session is the replica.
    app = f"sleep 30 & exec {sys.executable} -m rheostat.demo.app --port $PORT --version v5"
    w = workload("v5", command=["sh", "-c", app, "{port}"])
    app_pids = await crashed_controller(data_dir, w)
    assert len(app_pids) == 2
    await asyncio.sleep(0.5)
    assert all(alive(pid) for pid in app_pids), "replicas must survive the controller's SIGKILL"
    sleepers = [pid for app_pid in app_pids for pid in session_members(app_pid) if pid != app_pid]
    assert len(sleepers) == 2

    resumed = LocalPlatform(data_dir, drain_s=0.1)
    await resumed.start()
    try:
        # Adopted, not restarted: the same processes, ready at once, serving the same version.
        assert (await resumed.is_ready(KEY, Group.PRIMARY)).ready
        assert sorted(pids(resumed)) == sorted(app_pids)
        async with httpx.AsyncClient() as client:
            assert await versions(client, await resumed.endpoints(KEY, Group.PRIMARY)) == ["v5", "v5"]
        assert await resumed.revision(KEY) == w.spec.template.revision()

        # An adopted replica that dies is noticed without being our child, and replaced.
        os.kill(app_pids[0], signal.SIGKILL)

        async def replaced() -> bool:
            now = pids(resumed)
            return (
                app_pids[0] not in now
                and len(now) == 2
                and (await resumed.is_ready(KEY, Group.PRIMARY)).ready
            )

        await eventually(replaced, within=15, what="the dead adopted replica to be replaced")
    finally:
        await resumed.stop()
    assert not any(alive(pid) for pid in [*app_pids, *sleepers]), "stop() ends adopted sessions too"


async def test_a_recycled_pid_is_ended_and_an_older_revision_serves_until_replaced(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    app_pids = await crashed_controller(data_dir, workload("v6"))
    state_path = data_dir / "state.json"
    state = json.loads(state_path.read_text())
    records = sorted(state["processes"], key=lambda r: r["index"])
    records[0]["start_ticks"] += 1  # as if the pid had been recycled by another process
    records[1]["revision"] = "older"  # as if the crash came in the middle of a rolling update
    state_path.write_text(json.dumps(state))
    recycled, older = records[0]["pid"], records[1]["pid"]
    assert sorted(app_pids) == sorted([recycled, older])

    resumed = LocalPlatform(data_dir, drain_s=0.1)
    await resumed.start()
    try:
        # The first is not adopted but ended (found through its environment marker). The second is
        # adopted and keeps serving, so the group is never left without an endpoint...
        assert not alive(recycled) and alive(older)
        assert len(await resumed.endpoints(KEY, Group.PRIMARY)) >= 1
        # ...until the rolling update has replaced it by a replica of the revision the group runs.

        async def replaced() -> bool:
            return not alive(older)

        await ready(resumed)
        await eventually(replaced, within=15, what="the older replica to be replaced")
        assert set(pids(resumed)).isdisjoint(app_pids)
    finally:
        await resumed.stop()


async def test_stop_without_ending_processes_leaves_them_for_the_next_start(tmp_path: Path) -> None:
    first = LocalPlatform(tmp_path / "data", drain_s=0.1)
    await first.start()
    await managed(first, workload("v7", replicas=1))
    await ready(first)
    kept = pids(first)
    await first.stop(end_processes=False)
    assert all(alive(pid) for pid in kept)
    second = LocalPlatform(tmp_path / "data", drain_s=0.1)
    await second.start()
    try:
        assert pids(second) == kept
        assert (await second.is_ready(KEY, Group.PRIMARY)).ready
    finally:
        await second.stop()
    assert not any(alive(pid) for pid in kept)


async def test_a_second_controller_cannot_take_a_data_dir_in_use(
    platform: LocalPlatform, tmp_path: Path
) -> None:
    other = LocalPlatform(tmp_path / "data")
    with pytest.raises(PlatformError, match="in use by another controller"):
        await other.start()
