"""One controller per data plane, and a data plane that outlives its controller: real `rheostat run`
processes, a real Envoy, real replicas, and traffic counted request by request."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rheostat.plugins.platforms.local import procfs
from tests.servers import free_port
from tests.test_run_cli import (
    KEY,
    Cluster,
    Runner,
    cli,
    data_plane,
    describe,
    kill_all,
    new_runner,
    wait_for,
)

pytestmark = pytest.mark.e2e


class CountedTraffic:
    """Steady requests (about 40 a second) through the Envoy listener; every answer is counted."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.results: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="counted-traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=5, trust_env=False) as http:
            while not self._stop.is_set():
                try:
                    resp = http.get(self.url)
                    if resp.status_code == 200:
                        self.results[str(resp.json()["version"])] += 1
                    else:
                        self.failures.append(f"{resp.status_code}: {resp.text[:100]}")
                except httpx.HTTPError as exc:
                    self.failures.append(repr(exc))
                self._stop.wait(0.025)

    def __enter__(self) -> CountedTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def total(self) -> int:
        return sum(self.results.values()) + len(self.failures)


@contextlib.contextmanager
def cleaned(*runners: Runner) -> Iterator[None]:
    """Whatever happens, every controller and data plane of these runners is ended afterwards."""
    try:
        yield
    finally:
        for r in runners:
            r.stop()
            r.down()
            kill_all(r.leftovers(within_s=5))


def started(tmp: Path, *, stop_data_plane: bool = True) -> Cluster:
    runner = new_runner(tmp)
    runner.stop_data_plane = stop_data_plane
    c = Cluster(runner=runner, svc_port=free_port())
    c.commit(c.manifests("1.0.0", replicas=2), "podinfo 1.0.0")
    return c


def envoy_pid(data: Path) -> int | None:
    return procfs.read_pidfile(data / "envoy" / "envoy.pid")


def replica_pids(c: Cluster) -> list[int]:
    item = c.get("/workloads")["items"][0]
    groups = [item["status"]["primary"], item["status"]["canary"]]
    return sorted(r["pid"] for g in groups for r in g.get("replicas") or [] if r["pid"] is not None)


def test_kill_9_then_restart_drops_no_request_and_adopts_the_same_processes(tmp_path: Path) -> None:
    c = started(tmp_path, stop_data_plane=False)
    runner = c.runner
    with cleaned(runner):
        runner.start()
        c.wait_phase(("Initialized",), 60)
        envoy, replicas = envoy_pid(c.data), replica_pids(c)
        assert envoy is not None and len(replicas) == 2
        status = c.status()
        with CountedTraffic(c.svc_port) as traffic:
            wait_for("traffic", lambda: traffic.total() > 20, 20)
            runner.stop(signal.SIGKILL)
            served_before = traffic.total()
            wait_for("traffic without a controller", lambda: traffic.total() > served_before + 40, 20)
            runner.start()
            restarted_at = traffic.total()
            wait_for("traffic after the restart", lambda: traffic.total() > restarted_at + 40, 20)
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.results == Counter({"1.0.0": traffic.total()})
        print(f"{traffic.total()} requests through a kill -9 and a restart, none failed")

        # The same Envoy and the same replicas, adopted; the canary kept its state.
        assert envoy_pid(c.data) == envoy
        assert replica_pids(c) == replicas
        after = c.status()
        assert after["phase"] == status["phase"] == "Initialized"
        assert after["lastAppliedSpec"] == status["lastAppliedSpec"]
        assert "adopted Envoy" in runner.stderr() and "ending processes" not in runner.stderr()

        # `down` is refused while a controller holds the data dir, and names it.
        out = runner.down()
        assert out.returncode != 0
        assert f"data dir {c.data} is in use by another controller (pid {runner.pid()})" in out.stderr

        # SIGTERM leaves the data plane serving and says how to end it; `down` then ends all of it.
        assert runner.stop() == 0
        assert "rheostat down --data-dir" in runner.stderr()
        assert sorted([envoy, *replicas]) == data_plane(c.data)
        out = runner.down()
        assert out.returncode == 0, out.stderr
        assert f"ended Envoy (pid {envoy}) and 2 replica(s)" in out.stdout, out.stdout
        left = runner.leftovers(within_s=5)
        assert data_plane(c.data) == [] and left == [], describe(left)
        out = runner.down()
        assert out.returncode == 0 and "nothing was running" in out.stdout


def test_stop_data_plane_ends_everything(tmp_path: Path) -> None:
    c = started(tmp_path)
    with cleaned(c.runner):
        c.runner.start()
        c.wait_phase(("Initialized",), 60)
        assert len(data_plane(c.data)) == 3
        assert c.runner.stop() == 0
        assert "keep serving" not in c.runner.stderr()
        assert c.runner.leftovers(within_s=10) == []
        assert data_plane(c.data) == []


def test_a_second_run_on_the_same_data_dir_is_refused_before_it_touches_anything(tmp_path: Path) -> None:
    c = started(tmp_path)
    with cleaned(c.runner):
        c.runner.start()
        c.wait_phase(("Initialized",), 60)
        socket_inode = (c.data / "envoy" / "admin.sock").stat().st_ino
        xds = {p: p.stat().st_mtime_ns for p in (c.data / "envoy" / "xds").rglob("*.json")}
        with CountedTraffic(c.svc_port) as traffic:
            wait_for("traffic", lambda: traffic.total() > 10, 20)
            out = cli(
                "run",
                "--repo",
                str(c.repo),
                "--data-dir",
                str(c.data),
                "--listen",
                f"127.0.0.1:{free_port()}",
                timeout=60,
            )
            seen = traffic.total()
            wait_for("more traffic", lambda: traffic.total() > seen + 20, 20)
        assert out.returncode != 0
        lines = out.stderr.strip().splitlines()
        expected = f"error: data dir {c.data} is in use by another controller (pid {c.runner.pid()})"
        assert lines == [expected], out.stderr
        assert traffic.failures == [], traffic.failures[:5]
        assert (c.data / "envoy" / "admin.sock").stat().st_ino == socket_inode
        assert {p: p.stat().st_mtime_ns for p in xds} == xds
        assert httpx.get(f"{c.api}/healthz", timeout=5).status_code == 200
        assert c.status()["phase"] == "Initialized"


def test_a_second_run_on_another_data_dir_cannot_take_the_listener_port(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    first = started(tmp_path / "first")
    second = Runner(
        repo=first.repo,  # the same repository, so the same Canary on the same port
        data=tmp_path / "second" / "data",
        api_port=free_port(),
        mark=first.runner.mark + "-2",
        logs=first.runner.logs,
    )
    second.starts = 10  # its logs beside the first's, under other names
    other = Cluster(runner=second, svc_port=first.svc_port)
    with cleaned(first.runner, second):
        first.runner.start()
        first.wait_phase(("Initialized",), 60)
        envoy = envoy_pid(first.data)
        assert envoy is not None
        with CountedTraffic(first.svc_port) as traffic:
            second.start()

            def refused() -> list[str]:
                events = other.events(kind="Canary", key=KEY)
                return [e["message"] for e in events if e["reason"] == "TickFailed"]

            messages = wait_for("the second controller's Canary to say the port is taken", refused, 60)
            seen = traffic.total()
            wait_for("more traffic", lambda: traffic.total() > seen + 40, 20)
        pattern = rf"port 127\.0\.0\.1:{first.svc_port} is held by pid {envoy} \(\S*envoy"
        assert any(re.search(pattern, m) for m in messages), messages
        # All traffic still reaches the first controller's Envoy, and only it holds the port.
        assert traffic.failures == [], traffic.failures[:5]
        assert [pid for pid, _ in procfs.port_holders(first.svc_port)] == [envoy]
        assert other.status()["phase"] != "Initialized"
