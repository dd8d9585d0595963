"""Leader election on a coordination.k8s.io/v1 Lease (plugins/kube/lease.py), through the real client against
the kmock API server of tests/kubeapi.py: one leader among racing replicas, the fence that stops a leader's
writes once its renewals fail, takeover after expiry and at once after a release.

Timings are shortened (a 1 s Lease); where a test must show that nothing happens before the Lease expires,
the standby runs on a clock the test moves."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.model.base import ObjectKey
from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.api import Kind, NotLeader, Obj
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.errors import Retry
from rheostat.plugins.kube.lease import Fenced, LeaderElector, LeaseConfig
from rheostat.plugins.kube.memory import MemoryKube
from rheostat.reactor.controller import Controller
from rheostat.reactor.leader import elector
from rheostat.reactor.settings import ClusterSettings, LeaderElection, Settings
from tests import kubeapi
from tests import test_cluster_controller as cluster
from tests.kube_schemas import assert_valid
from tests.kubeapi import KubeServer
from tests.kubelet import kubelet
from tests.test_run_cli import rheostat_bin

kube_server = kubeapi.kube_server  # the fixtures, made visible here
kubeconfig = kubeapi.kubeconfig

NS = "rheostat"
NAME = "rheostat-leader"
KEY = ObjectKey(f"{cluster.NS}/podinfo")
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def config(identity: str, duration_s: int = 1) -> LeaseConfig:
    return LeaseConfig(NAME, NS, identity, duration_s, renew_deadline_s=0.6, retry_s=0.1)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def client(kubeconfig: Path, **kw: object) -> AsyncIterator[LightkubeAPI]:
    api = LightkubeAPI.from_kubeconfig(str(kubeconfig), None, **kw)  # type: ignore[arg-type]
    try:
        yield api
    finally:
        await api.close()


def lease(server: KubeServer) -> Obj:
    found = server.object(kinds.LEASE, NS, NAME)
    assert found is not None, "no Lease"
    return found


def configmap(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NS}, "data": {}}


def edit_lease(server: KubeServer, **spec: object) -> None:
    """What another replica's write does to the Lease."""
    key = server._key(kinds.LEASE, NS, NAME)
    old = server.store[key]
    server._write(kinds.LEASE, key, old, {**old, "spec": {**old["spec"], **spec}}, "other")


def writes(server: KubeServer, kind: object) -> int:
    return sum(
        1 for c in server.calls if c.kind == kind and c.verb in ("create", "update", "patch", "delete")
    )


async def test_the_first_replica_creates_the_lease_and_leads(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    async with client(kubeconfig, retry=Retry(tries=1)) as api:
        a = LeaderElector(api, config("a"))
        await a.acquire()
        assert a.leading and a.holder == "a"
    spec = lease(kube_server)["spec"]
    assert spec["holderIdentity"] == "a"
    assert spec["leaseDurationSeconds"] == 1 and spec["leaseTransitions"] == 0
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    assert_valid(lease(kube_server))


async def test_two_replicas_racing_for_the_lease_make_exactly_one_leader(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    """Both try at once on a missing Lease (the second create: 409 AlreadyExists); then both loop (acquire,
    renew) for a while and are never both leaders."""
    async with (
        client(kubeconfig, retry=Retry(tries=1)) as api_a,
        client(kubeconfig, retry=Retry(tries=1)) as api_b,
    ):
        a, b = LeaderElector(api_a, config("a")), LeaderElector(api_b, config("b"))
        won = await asyncio.gather(a.try_acquire_or_renew(), b.try_acquire_or_renew())
        assert sorted(won) == [False, True]
        assert a.leading != b.leading
        leader = a if a.leading else b
        assert lease(kube_server)["spec"]["holderIdentity"] == leader.config.identity

        # both run their loops (acquire, then renew): at no instant are both leaders
        async def replica(e: LeaderElector) -> None:
            while True:
                await e.acquire()
                await e.hold()

        tasks = [asyncio.create_task(replica(e)) for e in (a, b)]
        try:
            for _ in range(100):
                await asyncio.sleep(0.02)
                assert not (a.leading and b.leading)
            assert a.leading or b.leading
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class Overtaken:
    """b's API: before b's update goes out, a renews (the Lease's resourceVersion moves under b)."""

    def __init__(self, api: LightkubeAPI, first: LeaderElector) -> None:
        self.api = api
        self.first = first

    def __getattr__(self, name: str) -> object:
        return getattr(self.api, name)

    async def replace(self, obj: Obj) -> Obj:
        assert await self.first.try_acquire_or_renew()
        return await self.api.replace(obj)


async def test_an_update_on_a_stale_resource_version_is_refused_and_does_not_lead(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    """Both see the Lease expired; b's update carries the resourceVersion it read, a's lands first: 409."""
    async with client(kubeconfig, retry=Retry(tries=1)) as api:
        a_clock, b_clock = Clock(), Clock()
        a = LeaderElector(api, config("a"), clock=a_clock)
        b = LeaderElector(Overtaken(api, a), config("b"), clock=b_clock)  # type: ignore[arg-type]
        assert await LeaderElector(api, config("gone")).try_acquire_or_renew()  # then "gone" dies
        for e, clock in ((a, a_clock), (b, b_clock)):
            assert not await e.try_acquire_or_renew()  # just seen: not expired yet
            clock.now += 2.0  # unchanged for 2 s: past its 1 s duration
        assert not await b.try_acquire_or_renew()  # a took it meanwhile: b's update answered 409
        assert a.leading and not b.leading
        spec = lease(kube_server)["spec"]
        assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 1
        updates = [c for c in kube_server.calls if c.kind == kinds.LEASE and c.verb == "update"]
        assert len(updates) == 2  # a's, then b's (refused)


async def test_a_leader_whose_renewals_fail_stops_writing(kube_server: KubeServer, kubeconfig: Path) -> None:
    async with client(kubeconfig, retry=Retry(tries=1)) as lease_api:
        a = LeaderElector(lease_api, config("a"))
        await a.acquire()
        async with client(kubeconfig, fence=a.fence.check) as api:
            writer = Fenced(api, a.fence)
            await writer.apply(configmap("before"))  # the leader writes
            kube_server.fail(500, 10_000, kind=kinds.LEASE)  # from now on no renewal goes through
            await a.hold()  # returns once the renew deadline has passed without a renewal
            assert not a.leading
            sent = writes(kube_server, kinds.CONFIGMAP)
            for write in (
                writer.apply(configmap("after")),
                writer.patch_status(kinds.DEPLOYMENT, NS, "x", {}),
                writer.delete(kinds.CONFIGMAP, NS, "before"),
                writer.event(configmap("before"), "Reason", "message"),
                api.apply(configmap("after")),  # the client itself asks the fence too
            ):
                with pytest.raises(NotLeader, match=f"does not hold the leader Lease {NS}/{NAME}"):
                    await write
            assert writes(kube_server, kinds.CONFIGMAP) == sent  # nothing went out
            assert kube_server.object(kinds.CONFIGMAP, NS, "after") is None


async def test_a_write_waiting_for_its_retry_when_leadership_is_lost_does_not_go_out(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    """The real client asks the fence before every attempt: the Lease lost during a write's backoff (after a
    500), the retry is not sent."""
    async with client(kubeconfig, retry=Retry(tries=1)) as lease_api:
        a = LeaderElector(lease_api, config("a"))
        await a.acquire()

        async def backoff(_: float) -> None:
            a.fence.drop()  # the renew deadline passes while the write waits

        async with client(kubeconfig, fence=a.fence.check, retry=Retry(sleep=backoff)) as api:
            kube_server.fail(500, 1, kind=kinds.CONFIGMAP)
            with pytest.raises(NotLeader):
                await api.apply(configmap("retried"))
        assert writes(kube_server, kinds.CONFIGMAP) == 1  # the first attempt, refused by the server
        assert kube_server.object(kinds.CONFIGMAP, NS, "retried") is None


async def test_a_leader_that_sees_another_holder_stops_at_once(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    async with client(kubeconfig, retry=Retry(tries=1)) as api:
        a = LeaderElector(api, LeaseConfig(NAME, NS, "a", 60, renew_deadline_s=30, retry_s=0.05))
        await a.acquire()
        edit_lease(kube_server, holderIdentity="b")
        await asyncio.wait_for(a.hold(), 5)  # well before its 30 s renew deadline
        assert not a.leading and a.holder == "b"
        assert lease(kube_server)["spec"]["holderIdentity"] == "b"  # and it did not write it back


async def test_the_standby_takes_over_only_once_the_lease_has_expired(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    async with client(kubeconfig, retry=Retry(tries=1)) as api:
        a = LeaderElector(api, config("a", duration_s=10))
        await a.acquire()  # and then dies: it never renews
        first = lease(kube_server)["spec"]
        clock = Clock()
        b = LeaderElector(api, config("b", duration_s=10), clock=clock)
        assert not await b.try_acquire_or_renew()
        assert b.holder == "a"
        clock.now += 9.9  # the same record for 9.9 s: still a's
        assert not await b.try_acquire_or_renew() and not b.leading
        clock.now += 0.2  # 10.1 s: expired
        assert await b.try_acquire_or_renew() and b.leading
        spec = lease(kube_server)["spec"]
        assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == first["leaseTransitions"] + 1
        assert spec["acquireTime"] > first["acquireTime"]
        # a, back from the dead, finds b holding it and does not lead
        assert not await a.try_acquire_or_renew() and not a.leading
        assert lease(kube_server)["spec"]["holderIdentity"] == "b"


async def test_a_released_lease_is_taken_at_the_standbys_next_look(
    kube_server: KubeServer, kubeconfig: Path
) -> None:
    async with client(kubeconfig, retry=Retry(tries=1)) as api:
        a = LeaderElector(api, config("a", duration_s=10))
        await a.acquire()
        clock = Clock()
        b = LeaderElector(api, config("b", duration_s=10), clock=clock)
        assert not await b.try_acquire_or_renew()
        assert await a.release()
        assert not a.leading and lease(kube_server)["spec"]["holderIdentity"] == ""
        assert await b.try_acquire_or_renew()  # at once: no waiting for the 10 s to pass
        assert lease(kube_server)["spec"]["holderIdentity"] == "b"
        assert not await a.release()  # a holds it no more: it leaves b's Lease alone
        assert lease(kube_server)["spec"]["holderIdentity"] == "b"


def test_the_timings_must_leave_the_fence_a_margin() -> None:
    with pytest.raises(ValueError, match=r"renew deadline \(10s\) < lease duration \(10s\)"):
        LeaseConfig(NAME, NS, "a", 10, renew_deadline_s=10, retry_s=2)
    with pytest.raises(ValueError, match="a name, a namespace and an identity"):
        LeaseConfig(NAME, "", "a")


# -- two controllers in one process, on the in-memory API server -------------------------------------------


class Counting:
    """One replica's view of the shared MemoryKube: the writes it sent (verb, kind), reads pass through."""

    def __init__(self, api: MemoryKube) -> None:
        self.api = api
        self.sent: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.api, name)
        verb = {"create": "create", "apply": "patch", "replace": "update", "patch_status": "patch"}.get(name)
        verb = verb or {"delete": "delete", "event": "create"}.get(name)
        if verb is None:
            return attr

        async def write(*args: Any, **kw: Any) -> Any:
            first = args[0]
            kind = first.kind if isinstance(first, Kind) else first.get("kind", "")
            self.sent.append((verb, "Event" if name == "event" else kind))
            return await attr(*args, **kw)

        return write


def replica(api: Counting, data: Path) -> Controller:
    election = LeaderElection(NAME, NS, duration_s=1, renew_deadline_s=0.6, retry_s=0.1)
    settings = Settings(
        repo=None,
        data_dir=data,
        sync_interval_s=0.05,
        cluster=ClusterSettings(mesh_provider="istio", leader_election=election),
    )
    return Controller(settings, kube=api)


async def test_the_standby_writes_nothing_but_reads_the_status_and_takes_over_on_a_clean_stop(
    tmp_path: Path,
) -> None:
    kube = MemoryKube()
    await kube.apply(cluster.deployment("6.0.0"))
    kube.add(cluster.canary())
    a_api, b_api = Counting(kube), Counting(kube)
    a, b = replica(a_api, tmp_path / "a"), replica(b_api, tmp_path / "b")
    async with kubelet(kube, kube):
        await a.start()
        try:
            await cluster.until(lambda: a.leadership is not None and a.leadership.leading)
            await b.start()
            try:
                await cluster.until(lambda: cluster.status(kube).get("phase") == "Initialized")
                await kube.apply(cluster.deployment("6.0.1"))
                await cluster.until(lambda: cluster.status(kube).get("canaryWeight", 0) >= 25)
                # the standby follows the status the leader writes, and writes nothing itself
                await cluster.until(lambda: b.engine.status(KEY).canary_weight >= 25)
                assert b_api.sent == [] and a_api.sent != []
                assert b.standby_reason() is not None and "held by" in (b.standby_reason() or "")
            finally:
                await a.stop()  # clean: the Lease is released, b takes it at its next look
            assert ("update", "Lease") in a_api.sent[-1:]
            await cluster.until(lambda: b.leadership is not None and b.leadership.leading)
            await cluster.until(lambda: cluster.status(kube).get("phase") == "Succeeded")
            assert {k for _, k in b_api.sent} >= {"Lease", "Canary"}
        finally:
            await b.stop()
    primary = await kube.get(kinds.DEPLOYMENT, cluster.NS, "podinfo-primary")
    assert primary is not None
    assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")


def test_leader_election_is_for_a_cluster(tmp_path: Path) -> None:
    out = subprocess.run(
        [rheostat_bin(), "run", "--repo", str(tmp_path), "--leader-elect", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        out.returncode == 1 and "--leader-elect is for a cluster (--kubeconfig, or no --repo)" in out.stderr
    )
    assert not (tmp_path / "d").exists()  # refused before anything started


async def test_a_leader_that_cannot_renew_stops_writing_mid_rollout_and_resumes_once_it_leads_again(
    tmp_path: Path,
) -> None:
    kube = MemoryKube()
    await kube.apply(cluster.deployment("6.0.0"))
    slow = {"interval": "200ms", "threshold": 2, "stepWeight": 5, "maxWeight": 50, "metrics": []}
    kube.add(cluster.canary(analysis=slow))  # ten steps: well past the 0.6 s renew deadline
    api = Counting(kube)
    a = replica(api, tmp_path / "a")
    async with kubelet(kube, kube):
        await a.start()
        try:
            await cluster.until(lambda: cluster.status(kube).get("phase") == "Initialized")
            await kube.apply(cluster.deployment("6.0.1"))
            await cluster.until(lambda: cluster.status(kube).get("canaryWeight", 0) >= 10)
            kube.fail(500, 1_000_000, kind=kinds.LEASE)  # the API server refuses every renewal from now on
            assert a.leadership is not None
            await cluster.until(lambda: a.leadership is not None and not a.leadership.leading)
            sent = len(api.sent)
            held = copy.deepcopy(cluster.status(kube))
            await asyncio.sleep(1.0)  # five analysis intervals
            assert [w for w in api.sent[sent:] if w[1] != "Lease"] == []  # nothing but tries for the Lease
            assert cluster.status(kube) == held and held["phase"] == "Progressing"
            said = [e.reason for e in a.store.events(kind="Lease")]
            assert said == ["Standby", "Leading", "LeaderLost", "Standby"], said
            kube._faults.clear()  # the API server is back: the only replica leads again and goes on
            await cluster.until(lambda: cluster.status(kube).get("phase") == "Succeeded")
        finally:
            await a.stop()


async def test_the_lease_is_in_the_kubeconfig_contexts_namespace_unless_named(tmp_path: Path) -> None:
    """In a pod the client's namespace is the pod's own (lightkube reads the service account's)."""
    path = tmp_path / "kubeconfig"
    context = {"cluster": "c", "user": "u", "namespace": "team-a"}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": context}],
                "current-context": "x",
            }
        )
    )
    async with client(path) as api:
        assert elector(api, LeaderElection()).config.key == "team-a/rheostat-leader"
        named = elector(api, LeaderElection("ours", "rheostat-system")).config
        assert named.key == "rheostat-system/ours" and named.identity.count("_") >= 1
