"""End to end through the `rheostat` command: real git, a real Envoy, real app processes, the HTTP API.

Every process these tests start is ended by them: `rheostat run` gets SIGTERM (then SIGKILL), and whatever it
started (Envoy, the app replicas) is found by a marker in its environment or the data dir in its command line
and must be gone afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from rheostat.plugins.platforms.local import procfs
from tests.servers import free_port, git

pytestmark = pytest.mark.e2e

RHEOSTAT = shutil.which("rheostat", path=os.path.dirname(sys.executable))
NS, NAME = "test", "podinfo"
KEY = f"{NS}/{NAME}"
AT_REST = ("Initialized", "Succeeded", "Failed")
NUL = b"\0"


def rheostat_bin() -> str:
    assert RHEOSTAT is not None, f"the `rheostat` console script is not installed beside {sys.executable}"
    return RHEOSTAT


def wait_for(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.1) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` (and the last value) otherwise."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what} (last: {last!r})")


# -- the Git repository -------------------------------------------------------------------------------


def manifests(
    version: str,
    *,
    svc_port: int,
    api_port: int,
    mark: str,
    step_weight: int = 25,
    max_weight: int = 50,
    replicas: int = 1,
) -> str:
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  replicas: {replicas}
  template:
    command: [python, -m, rheostat.demo.app, --port, "{{port}}", --version, "{version}"]
    env: {{E2E_MARK: "{mark}"}}
    readinessProbe: {{path: /readyz}}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: {NAME}}}
  progressDeadlineSeconds: 60
  service: {{port: {svc_port}}}
  analysis:
    interval: 1s
    threshold: 2
    maxWeight: {max_weight}
    stepWeight: {step_weight}
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 5s}}
    - {{name: request-duration, thresholdRange: {{max: 500}}, interval: 5s}}
    webhooks:
    - name: load-test
      url: http://127.0.0.1:{api_port}/loadtester/
      timeout: 5s
      metadata: {{cmd: "hey -z 1m -q 10 -c 2 http://127.0.0.1:{svc_port}/"}}
"""


# -- processes ----------------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def started_by(env_entry: str, path: Path) -> list[int]:
    """Live processes of one test: `env_entry` in their environment, or `path` in their command line."""
    found = []
    needle_env, needle_cmd = env_entry.encode(), str(path).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        status = _read(proc / "stat")
        if not status or b") Z " in status:  # zombies are not running
            continue
        if needle_env in _read(proc / "environ").split(NUL) or needle_cmd in _read(proc / "cmdline"):
            found.append(int(proc.name))
    return found


def data_plane(data: Path) -> list[int]:
    """Envoy and the replicas of one data dir (each carries it in RHEOSTAT_DATA_PLANE)."""
    return sorted(procfs.marked("RHEOSTAT_DATA_PLANE", f"{data.absolute()}/"))


def describe(pids: list[int]) -> str:
    lines = [f"{p}: {_read(Path(f'/proc/{p}/cmdline')).replace(NUL, b' ').decode()}" for p in pids]
    return "; ".join(lines)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [rheostat_bin(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


@dataclass
class Runner:
    """One `rheostat run` process, its output in files (a pipe nobody reads could block it)."""

    repo: Path
    data: Path
    api_port: int
    mark: str
    logs: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # Tests end the data plane with the controller, so CI is never left with Envoy or replicas running.
    stop_data_plane: bool = True
    extra: tuple[str, ...] = ()  # more options of `rheostat run`

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        assert self.proc is None
        self.starts += 1
        out = open(self.logs / f"run-{self.starts}.out", "wb")  # noqa: SIM115  # the child holds it
        err = open(self.logs / f"run-{self.starts}.err", "wb")  # noqa: SIM115
        with out, err:
            self.proc = subprocess.Popen(
                [
                    rheostat_bin(),
                    "run",
                    "--repo",
                    str(self.repo),
                    "--data-dir",
                    str(self.data),
                    "--listen",
                    f"127.0.0.1:{self.api_port}",
                    *(["--stop-data-plane"] if self.stop_data_plane else []),
                    *self.extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "E2E_MARK": self.mark, "COLUMNS": "200"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"`rheostat run` exited with {self.proc.returncode}: {self.stderr()}")
            with contextlib.suppress(httpx.HTTPError):
                healthy = httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200
                # the token line is printed right after the API listens
                if healthy and "serving" in self.stderr():
                    return
            time.sleep(0.1)
        pytest.fail(f"`rheostat run` did not serve within 60s: {self.stderr()}")

    def stderr(self, start: int | None = None) -> str:
        return (self.logs / f"run-{start or self.starts}.err").read_text(errors="replace")

    def stdout(self, start: int | None = None) -> str:
        return (self.logs / f"run-{start or self.starts}.out").read_text(errors="replace")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """End `rheostat run` (SIGTERM, then SIGKILL) and reap it; returns its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def down(self) -> subprocess.CompletedProcess[str]:
        """`rheostat down` on this data dir: ends a data plane left running."""
        return cli("down", "--data-dir", str(self.data))

    def leftovers(self, within_s: float) -> list[int]:
        """What it started that is still alive after `within_s`."""
        deadline = time.monotonic() + within_s
        while True:
            left = started_by(f"E2E_MARK={self.mark}", self.data)
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)


@contextlib.contextmanager
def running(runner: Runner) -> Iterator[Runner]:
    """`rheostat run` for the duration; afterwards nothing it started may be left running."""
    try:
        runner.start()
        yield runner
    finally:
        code = runner.stop()
        if not runner.stop_data_plane:
            runner.down()
        left = runner.leftovers(within_s=10)
        kill_all(left)
    assert code == 0, f"`rheostat run` exited with {code} on SIGTERM: {runner.stderr()}"
    assert not left, f"`rheostat run` left processes behind: {describe(left)}"


class Traffic:
    """Steady user traffic through the Envoy listener, so the canary always has metrics."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="e2e-traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self.stop_event.is_set():
                # not listening yet, or a replica being replaced: keep going
                with contextlib.suppress(Exception):
                    http.get(self.url)
                self.stop_event.wait(0.05)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


@dataclass
class Cluster:
    """A repository, a running `rheostat run` on it, traffic to its service, and ways to look at it."""

    runner: Runner
    svc_port: int
    versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    deployed: str = "1.0.0"

    @property
    def repo(self) -> Path:
        return self.runner.repo

    @property
    def data(self) -> Path:
        return self.runner.data

    @property
    def api(self) -> str:
        return self.runner.api

    @property
    def token(self) -> str:
        return (self.data / "token").read_text().strip()

    def next_version(self) -> str:
        return f"1.{next(self.versions)}.0"

    def manifests(self, version: str, **kw: Any) -> str:
        return manifests(
            version, svc_port=self.svc_port, api_port=self.runner.api_port, mark=self.runner.mark, **kw
        )

    def commit(self, text: str, message: str, file: str = "podinfo.yaml") -> str:
        (self.repo / file).write_text(text)
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "-m", message)
        return git(self.repo, "rev-parse", "HEAD")

    def get(self, path: str, **params: Any) -> Any:
        resp = httpx.get(f"{self.api}/api/v1{path}", params=params, timeout=10)
        resp.raise_for_status()
        return resp.json()

    def canary(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get(f"/canaries/{KEY}")
        return body

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.canary()["status"]
        return st

    def history(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(f"/canaries/{KEY}/history")["items"]
        return items

    def events(self, **params: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get("/events", limit=1000, **params)["items"]
        return items

    def last_event_id(self) -> int:
        return max((int(e["id"]) for e in self.events()), default=0)

    def served_versions(self, n: int = 10) -> set[str]:
        """What users get from the service port right now."""
        seen = set()
        with httpx.Client(timeout=5) as http:
            for _ in range(n):
                resp = http.get(f"http://127.0.0.1:{self.svc_port}/")
                assert resp.status_code == 200, resp.text
                seen.add(str(resp.json()["version"]))
        return seen

    def wait_phase(self, phases: tuple[str, ...], timeout_s: float, since_tick: int = 0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            hist = self.history()
            st = self.status()
            tick = int(hist[-1]["tick"]) if hist else 0
            return st if st["phase"] in phases and tick > since_tick else None

        st: dict[str, Any] = wait_for(f"{KEY} to reach {'/'.join(phases)}", reached, timeout_s, every_s=0.2)
        return st

    def last_tick(self) -> int:
        hist = self.history()
        return int(hist[-1]["tick"]) if hist else 0

    def wait_at_rest(self, timeout_s: float = 90) -> dict[str, Any]:
        return self.wait_phase(AT_REST, timeout_s)


def new_runner(tmp: Path) -> Runner:
    repo, data, logs = tmp / "repo", tmp / "data", tmp / "logs"
    repo.mkdir()
    logs.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return Runner(repo=repo, data=data, api_port=free_port(), mark=f"e2e-{uuid.uuid4().hex}", logs=logs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    runner = new_runner(tmp_path_factory.mktemp("cluster"))
    c = Cluster(runner=runner, svc_port=free_port())
    c.commit(c.manifests("1.0.0"), "podinfo 1.0.0")
    with running(runner), Traffic(c.svc_port):
        c.wait_phase(("Initialized",), 60)
        yield c


# -- 1. run, token, a commit picked up and promoted --------------------------------------------------


def test_run_serves_prints_token_once_and_promotes_a_commit(cluster: Cluster) -> None:
    c = cluster
    token_file = c.data / "token"
    assert token_file.is_file()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = c.token
    first = c.runner.stderr(1)
    assert first.count(token) == 1, first
    assert "API token" in first
    assert token not in (c.runner.logs / "run-1.out").read_text(), "the token belongs on stderr only"
    assert c.served_versions() == {"1.0.0"}

    c.wait_at_rest()
    before = c.status()
    tick = c.last_tick()
    version = c.next_version()
    sha = c.commit(c.manifests(version), f"podinfo {version}")
    committed = time.monotonic()

    def picked_up() -> bool:
        st = c.status()
        return (
            st["phase"] not in ("Initialized", "Succeeded")
            or st["lastAppliedSpec"] != before["lastAppliedSpec"]
        )

    wait_for("the commit to be picked up", picked_up, timeout_s=5, every_s=0.05)
    pickup_s = time.monotonic() - committed
    assert c.get("/source")["appliedRevision"].endswith(f"@sha1:{sha}")
    print(f"commit picked up in {pickup_s:.2f}s")

    st = c.wait_phase(("Succeeded", "Failed"), 90, since_tick=tick + 1)
    assert st["phase"] == "Succeeded", st
    assert st["canaryWeight"] == 0 and st["primaryWeight"] == 100
    assert st["lastPromotedSpec"] == st["lastAppliedSpec"] != before["lastAppliedSpec"]
    c.deployed = version
    assert c.served_versions() == {version}
    phases = [row["phase"] for row in c.history() if row["tick"] > tick]
    assert "Progressing" in phases and "Promoting" in phases, phases
    assert max(row["canaryWeight"] for row in c.history() if row["tick"] > tick) == 50


def test_run_tells_each_change_of_a_release_in_one_line(cluster: Cluster) -> None:
    c = cluster
    c.wait_at_rest()
    tick = c.last_tick()
    told = len(c.runner.stdout().splitlines())
    version = c.next_version()
    sha = c.commit(c.manifests(version), f"podinfo {version}")
    st = c.wait_phase(("Succeeded", "Failed"), 90, since_tick=tick + 1)
    assert st["phase"] == "Succeeded", st
    c.deployed = version
    wait_for("the promotion to be told", lambda: "promoted" in c.runner.stdout(), 5)
    lines = [
        line.split(" ", 1)[1]  # without the time
        for line in c.runner.stdout().splitlines()[told:]
        if "waiting for traffic" not in line  # a first check with no request yet: told once, if at all
    ]
    assert lines == [
        f"Kustomization flux-system/flux-system: applied revision main@{sha[:7]}: 0 created, 1 updated, "
        "0 repaired, 0 pruned",
        f"Canary {KEY}: rollout started: New revision detected! Scaling up {NAME}",
        f"Canary {KEY}: step: canary weight 25%",
        f"Canary {KEY}: step: canary weight 50%",
        f"Canary {KEY}: promoting: Copying {NAME} template to the primary",
        f"Canary {KEY}: promoted",
    ], lines
    assert "Traceback" not in c.runner.stderr()


# -- 2. get / logs / events --------------------------------------------------------------------------


def test_get_logs_and_events_through_the_cli(cluster: Cluster) -> None:
    c = cluster
    c.wait_at_rest()
    server = ["--server", c.api]

    out = cli("get", "canaries", "-o", "json", *server)
    assert out.returncode == 0, out.stderr
    items = json.loads(out.stdout)
    assert [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in items] == [(NS, NAME)]
    st = items[0]["status"]
    for name in ("phase", "canaryWeight", "failedChecks", "iterations", "message"):
        assert name in st, (name, st)
    assert st["phase"] in AT_REST
    assert isinstance(st["canaryWeight"], int) and isinstance(st["failedChecks"], int)

    table = cli("get", "canaries", *server)
    assert table.returncode == 0, table.stderr
    assert NAME in table.stdout and st["phase"] in table.stdout

    out = cli("get", "workloads", "-o", "json", *server)
    assert out.returncode == 0, out.stderr
    workloads = json.loads(out.stdout)
    assert [(w["metadata"]["namespace"], w["metadata"]["name"]) for w in workloads] == [(NS, NAME)]
    assert workloads[0]["canaries"] == [KEY]
    primary = workloads[0]["status"]["primary"]
    assert [r["ready"] for r in primary["replicas"]] == [True], primary

    out = cli("logs", NAME, "-n", NS, *server)
    assert out.returncode == 0, out.stderr
    assert "==> primary-0 <==" in out.stdout
    assert f"version {c.deployed} listening on" in out.stdout, out.stdout

    out = cli("events", "--limit", "500", *server)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(f"Canary {KEY} Initialized" in line for line in lines), out.stdout
    assert any("Kustomization flux-system/flux-system ReconciliationSucceeded" in line for line in lines), (
        out.stdout
    )

    out = cli("logs", "nothere", "-n", NS, *server)
    assert out.returncode != 0
    assert "404" in out.stderr and "not found" in out.stderr, out.stderr
    assert out.stderr.startswith("error: "), out.stderr


# -- 3. the token, abort, pause and resume ----------------------------------------------------------


def test_actions_need_the_token(cluster: Cluster) -> None:
    c = cluster
    c.wait_at_rest()
    phase = c.status()["phase"]
    url = f"{c.api}/api/v1/canaries/{KEY}/abort"
    after = c.last_event_id()

    resp = httpx.post(url, timeout=10)
    assert resp.status_code == 401, resp.text
    assert "token" in resp.json()["error"]
    resp = httpx.post(url, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert resp.status_code == 403, resp.text

    out = cli("abort", NAME, "-n", NS, "--server", c.api, "--token", "wrong")
    assert out.returncode != 0
    assert "403" in out.stderr

    # the right token (read from the data dir) gets past the check; at rest there is nothing to abort
    out = cli("abort", NAME, "-n", NS, "--server", c.api, "--data-dir", str(c.data))
    assert out.returncode != 0
    assert "409" in out.stderr and phase in out.stderr, out.stderr

    time.sleep(2.5)  # a couple of intervals: nothing may have been acted on
    st = c.status()
    assert st["manual"] == {}
    assert st["phase"] == phase
    assert [e for e in c.events(after=after) if e["reason"] == "ManualRequest"] == []


def test_pause_resume_and_abort_from_the_cli(cluster: Cluster) -> None:
    c = cluster
    old = c.deployed
    assert c.served_versions() == {old}
    c.wait_at_rest()
    tick = c.last_tick()
    version = c.next_version()
    # steps of 10 up to 100: ten ticks (ten seconds) to pause, resume and abort before it could promote,
    # even when each `rheostat` command takes a second or two to start on a loaded machine
    c.commit(c.manifests(version, step_weight=10, max_weight=100), f"podinfo {version}")

    def progressing() -> bool:
        st = c.status()
        return st["phase"] == "Progressing" and st["canaryWeight"] > 0 and c.last_tick() > tick

    wait_for("the canary to progress", progressing, 60, every_s=0.05)
    action = ["-n", NS, "--server", c.api, "--data-dir", str(c.data)]

    out = cli("pause", NAME, *action)
    assert out.returncode == 0, out.stderr
    assert f"pause: requested for {KEY}" in out.stdout
    assert c.status()["manual"] == {"paused": True}
    time.sleep(1.0)  # a tick in flight when the pause arrived may still finish
    paused = c.history()
    paused_st = c.status()
    time.sleep(3.5)  # several intervals
    assert len(c.history()) == len(paused), "a paused canary must not tick"
    st = c.status()
    assert st["phase"] == paused_st["phase"] == "Progressing"
    assert st["lastTransitionTime"] == paused_st["lastTransitionTime"]
    assert st["canaryWeight"] == paused_st["canaryWeight"] < 100

    out = cli("resume", NAME, *action)
    assert out.returncode == 0, out.stderr
    wait_for("ticks after resume", lambda: len(c.history()) > len(paused), 5, every_s=0.05)
    assert "paused" not in c.status()["manual"]

    out = cli("abort", NAME, *action)
    assert out.returncode == 0, out.stderr
    assert f"abort: requested for {KEY}" in out.stdout
    st = c.wait_phase(("Failed", "Succeeded"), 30)
    assert st["phase"] == "Failed", st
    assert st["canaryWeight"] == 0
    assert c.served_versions(20) == {old}
    reasons = {e["reason"] for e in c.events(kind="Canary", key=KEY)}
    assert "Rollback" in reasons, reasons


# -- 4. a bad commit is rejected, the last good revision keeps running -------------------------------


def test_a_bad_commit_is_rejected_and_the_last_good_revision_keeps_running(cluster: Cluster) -> None:
    c = cluster
    st0 = c.wait_at_rest()
    served = c.served_versions()
    good = c.get("/source")["appliedRevision"]
    after = c.last_event_id()

    version = c.next_version()
    bad = c.commit(c.manifests(version, step_weight=60, max_weight=50), f"podinfo {version}: stepWeight 60")

    def rejected(revision: str) -> Callable[[], dict[str, Any] | None]:
        def check() -> dict[str, Any] | None:
            src: dict[str, Any] = c.get("/source")
            return src if src.get("rejectedRevision", "").endswith(f"@sha1:{revision}") else None

        return check

    src = wait_for("the bad revision to be rejected", rejected(bad), 10)
    error = src["error"]
    assert "podinfo.yaml" in error, error
    assert f"Canary {KEY}" in error, error
    assert "spec.analysis" in error and "stepWeight" in error, error
    assert src["appliedRevision"] == good
    events = c.events(after=after, kind="Kustomization")
    assert any(e["reason"] == "BuildFailed" and e["type"] == "Warning" for e in events), events
    invalid = [e for e in c.events(after=after, kind="Canary", key=KEY) if e["reason"] == "InvalidSpec"]
    assert invalid and "stepWeight" in invalid[0]["message"], invalid

    malformed = c.commit("kind: [unclosed\n", "broken yaml", file="broken.yaml")
    src = wait_for("the malformed revision to be rejected", rejected(malformed), 10)
    assert "broken.yaml" in src["error"] and "YAML" in src["error"], src["error"]
    assert src["appliedRevision"] == good

    time.sleep(2)
    st = c.status()
    assert st["phase"] == st0["phase"]
    assert st["lastAppliedSpec"] == st0["lastAppliedSpec"]
    assert c.served_versions() == served

    # fixing the repository applies again
    (c.repo / "broken.yaml").unlink()
    c.commit(c.manifests(c.deployed), "fix")
    wait_for("the fix to apply", lambda: c.get("/source")["error"] == "", 10)


# -- 5. SIGKILL of `rheostat run` mid-rollout, then resume ------------------------------------------


def test_crash_mid_rollout_keeps_the_data_plane_serving_and_resumes(tmp_path: Path) -> None:
    runner = new_runner(tmp_path)
    c = Cluster(runner=runner, svc_port=free_port())
    c.commit(c.manifests("1.0.0", replicas=2), "podinfo 1.0.0")
    try:
        with Traffic(c.svc_port):
            runner.start()
            c.wait_phase(("Initialized",), 60)
            tick = c.last_tick()
            after = c.last_event_id()
            c.commit(c.manifests("2.0.0", replicas=2), "podinfo 2.0.0")

            def progressing() -> bool:
                st = c.status()
                return st["phase"] == "Progressing" and st["canaryWeight"] > 0 and c.last_tick() > tick

            wait_for("the canary to progress", progressing, 60, every_s=0.05)
            weight_at_crash = c.status()["canaryWeight"]
            ticks_at_crash = len(c.history())
            children = data_plane(runner.data)
            assert len(children) == 5, describe(children)  # envoy, 2 primaries, 2 canaries

            assert runner.proc is not None
            runner.stop(signal.SIGKILL)
            time.sleep(0.5)
            assert data_plane(runner.data) == children, "the data plane keeps serving without its controller"
            print(f"weight at crash {weight_at_crash}; {len(children)} processes kept serving")

            runner.start()
            assert "API token" not in runner.stderr(), "the token is shown on first start only"
            assert data_plane(runner.data) == children, "adopted, not restarted"
            st = c.wait_phase(("Succeeded", "Failed"), 90, since_tick=tick + 1)
            assert st["phase"] == "Succeeded", st
            assert c.served_versions() == {"2.0.0"}

            hist = c.history()
            assert len(hist) > ticks_at_crash
            ticks = [int(r["tick"]) for r in hist]
            assert ticks == sorted(ticks), "the tick count went on from where it was, not from zero"
            run = [r for r in hist if r["tick"] > tick]
            promotions = [
                r for prev, r in itertools.pairwise(run) if r["phase"] == "Succeeded" != prev["phase"]
            ]
            assert len(promotions) == 1, [r["phase"] for r in run]
            promoted = [e for e in c.events(after=after, kind="Canary", key=KEY) if e["reason"] == "Promoted"]
            assert len(promoted) == 1, promoted
            detected = [
                e for e in c.events(after=after, kind="Canary", key=KEY) if e["reason"] == "NewRevision"
            ]
            assert len(detected) == 1, "the rollout resumed where it stood instead of starting over"
    finally:
        runner.stop()
        runner.down()
        left = runner.leftovers(within_s=10)
        kill_all(left)
    assert not left, f"left behind: {describe(left)}"


# -- 6. the demo -------------------------------------------------------------------------------------


def test_demo_command_ends_every_release_as_expected(tmp_path: Path) -> None:
    home = tmp_path / "home"  # the demo's replicas inherit HOME; its Envoy runs from a folder under TMPDIR
    home.mkdir()
    started = time.monotonic()
    try:
        out = cli("demo", timeout=240, env={"COLUMNS": "200", "HOME": str(home), "TMPDIR": str(tmp_path)})
    finally:
        deadline = time.monotonic() + 10
        while (left := started_by(f"HOME={home}", tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        kill_all(left)
    print(f"rheostat demo took {time.monotonic() - started:.0f}s")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "every release ended as expected" in out.stdout, out.stdout[-3000:]
    assert "summary" in out.stdout
    assert "new-checkout=on" in out.stdout  # the flag step: rolled out to a share of users, rolled back
    assert not left, f"the demo left processes behind: {describe(left)}"
    assert list(tmp_path.glob("rheostat-demo-*")) == [], "the demo cleans up its temporary folder"


# -- 7. bad arguments ----------------------------------------------------------------------------------


def test_run_refuses_bad_arguments_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "nothere"
    out = cli("run", "--repo", str(missing), "--data-dir", str(tmp_path / "data"), timeout=30)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if str(missing) in line]
    assert len(errors) == 1 and "does not exist" in errors[0], out.stderr

    repo = tmp_path / "repo"
    repo.mkdir()
    out = cli("run", "--repo", str(repo), "--listen", "bad", "--data-dir", str(tmp_path / "data"), timeout=30)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    expected = "error: --listen {!r}: expected HOST:PORT with a port from 1 to 65535"
    assert out.stderr.strip().splitlines() == [expected.format("bad")], out.stderr
    out = cli(
        "run",
        "--repo",
        str(repo),
        "--listen",
        "127.0.0.1:99999",
        "--data-dir",
        str(tmp_path / "data"),
        timeout=30,
    )
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [expected.format("127.0.0.1:99999")], out.stderr
    assert not (tmp_path / "data").exists(), "a refused command leaves no state behind"


def test_run_with_a_kubeconfig_it_cannot_use_says_so_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    data = ["--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{free_port()}"]
    res = cli("run", "--kubeconfig", str(config), *data)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"kubeconfig {config}: No current context" in res.stderr
    res = cli("run", "--kubeconfig", str(config), "--context", "prod", *data)
    assert "Traceback" not in res.stderr and "prod" in res.stderr
    res = cli("run", "--kubeconfig", str(config), "--repo", str(tmp_path), *data)  # Git into that cluster
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert f"kubeconfig {config}: No current context" in res.stderr


# -- 8. a taken port: one clear line, whatever the log format ------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_taken_service_port_is_told_once_without_a_traceback(tmp_path: Path, log_format: str) -> None:
    runner = new_runner(tmp_path)
    runner.extra = ("--log-format", log_format)
    c = Cluster(runner=runner, svc_port=free_port())
    c.commit(c.manifests("1.0.0"), "podinfo 1.0.0")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", c.svc_port))
        holder.listen()
        with running(runner):

            def failed_ticks() -> int:
                return len([e for e in c.events(kind="Canary", key=KEY) if e["reason"] == "TickFailed"])

            wait_for("three failed ticks", lambda: failed_ticks() >= 3, 60)
            out, err = runner.stdout(), runner.stderr()
    clash = f"port 127.0.0.1:{c.svc_port} is held by pid {os.getpid()}"
    said = out + err
    if log_format == "json":  # what people read: the messages (the logger field names a module, rightly)
        said = "\n".join(json.loads(line)["message"] for line in said.splitlines())
    assert "Traceback" not in said and "RouterError" not in said and "rheostat.plugins" not in said, said
    assert out.count(clash) == 1, out  # the narration: once, not once per tick
    assert err.count(clash) <= 1, err
    if log_format == "json":
        told = [json.loads(line) for line in out.splitlines()]
        logged = [json.loads(line) for line in err.splitlines()]
        assert all({"time", "level", "logger", "message"} <= set(o) for o in told + logged), told + logged
        [stuck] = [o for o in told if clash in o["message"]]
        assert (stuck["level"], stuck["kind"], stuck["object"], stuck["reason"]) == (
            "warning",
            "Canary",
            KEY,
            "TickFailed",
        )
        assert any("serving" in o["message"] for o in logged), logged
        assert c.token not in err + out, "JSON logs are kept and shipped: the token stays in its file"
    else:
        [line] = [line for line in out.splitlines() if clash in line]
        assert re.fullmatch(
            rf"\d\d:\d\d:\d\d Canary {KEY}: stuck: listener for {KEY}: {clash} \(.*\)", line
        ), line


def test_a_second_run_on_a_taken_api_port_says_so_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "podinfo.yaml").write_text(c.manifests("1.0.0"))
    listen = f"127.0.0.1:{c.runner.api_port}"
    out = cli(
        "run", "--repo", str(repo), "--data-dir", str(tmp_path / "data"), "--listen", listen, timeout=60
    )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: the API cannot listen on {listen}: Address already in use"
    ]
    assert out.stdout == ""
    assert httpx.get(f"{c.api}/healthz", timeout=5).status_code == 200, "the first one serves on"
