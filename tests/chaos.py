"""Chaos harness: the real `rheostat run` is SIGKILLed at seeded random points of real rollouts.

One session per strategy (weighted canary, blue/green, A/B, flag): a Git repository, a data dir, and
`rheostat run` on them, with user traffic through Envoy the whole time. Each trial commits a release (good,
or bad on purpose), kills the controller 1..N times at random points, restarts it on the same data dir,
lets the run settle, and checks the invariants of docs/reliability.md. Each invariant is reported on its
own, so a broken one never hides the others.

`python -m tests.chaos` (`make chaos`) runs `CHAOS_TRIALS` trials (default 100) from `CHAOS_SEED`
(default 1) and prints the table; tests/test_chaos.py runs a few of them in `make test`.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rheostat.model.base import ObjectKey
from rheostat.plugins.routers.base import Routes
from rheostat.plugins.routers.envoy.config import resource_name, routes_from_config
from tests.servers import free_port, git

NS = "chaos"
STRATEGIES = ("canary", "bluegreen", "ab", "flag")
AT_REST = ("Succeeded", "Failed")
INTERVAL_S = 1.0  # analysis.interval of every Canary here: short, to keep trials short
THRESHOLD = 3
AB_HEADER = ("x-canary", "insider")
USER_RATE_S = 20.0  # user requests per second through Envoy
STUCK_AFTER_S = 120.0  # no rest by then after the last restart: the trial is stuck
START_TIMEOUT_S = 60.0
# A restart window: from the kill until the new controller serves plus two intervals (it adopts and
# reconciles what it found in that time). User requests that fail in it were dropped by the restart.
RESTART_GRACE_S = 2 * INTERVAL_S
NUL = b"\0"

RHEOSTAT = shutil.which("rheostat", path=os.path.dirname(sys.executable)) or "rheostat"


# -- the runs' lengths, in ticks --------------------------------------------------------------------------

STEPS = {"canary": 3, "bluegreen": 3, "ab": 3, "flag": 3}  # weight steps (20, 40, 60) or iterations
READY_TICKS = 1  # ticks a group may wait to be ready (the app is ready in well under an interval)


def run_ticks(strategy: str, bad: bool) -> int:
    """Ticks a run needs without faults, from the commit to rest (measured runs take 8-9 and 5-6).

    Good: scale-up, readiness, the steps or iterations, blue/green's switch tick, up to threshold-1 held
    ticks for failed checks, promoting, the primary's rollover, finalising, the promoted tick. Bad:
    scale-up, readiness, the first step, then `threshold` failed checks.
    """
    if bad:
        return 1 + READY_TICKS + 1 + THRESHOLD
    switch = 1 if strategy == "bluegreen" else 0
    return 1 + READY_TICKS + STEPS[strategy] + switch + (THRESHOLD - 1) + 1 + READY_TICKS + 2


def ticks_to_finish(strategy: str, status: dict[str, Any]) -> int:
    """Ticks a good run still needs from this status, without faults: the steps or iterations left, blue/
    green's switch, up to threshold-1 held ticks for failed checks, promoting, the primary's rollover,
    finalising and the promoted tick."""
    phase = status["phase"]
    tail = 1 + READY_TICKS + 2
    if phase in AT_REST:
        return 0
    if phase == "Finalising":
        return 2
    if phase == "Promoting":
        return tail - 1
    done = int(status["canaryWeight"]) // 20 if strategy in ("canary", "flag") else int(status["iterations"])
    switch = 1 if strategy == "bluegreen" and int(status["canaryWeight"]) < 100 else 0
    return max(0, STEPS[strategy] - done) + switch + (THRESHOLD - 1) + tail


def settle_bound(
    strategy: str, bad: bool, ticks_done_before_last_restart: int, status: dict[str, Any] | None = None
) -> int:
    """The bound: two intervals after the last restart plus what the run still had to do.

    What it still had to do is read from the status at the last restart too: a bad release still has
    `threshold - failedChecks` failing checks to go, a good one its steps and its promotion, whatever ticks
    it spent before (a check on a handful of requests can pass a canary failing half of them, a check with
    no traffic yet waits: the judge's business, not the restart's)."""
    left = run_ticks(strategy, bad) - ticks_done_before_last_restart
    if status is not None and status["phase"] not in AT_REST:
        if bad:
            left = max(left, THRESHOLD - int(status["failedChecks"]))
        else:
            left = max(left, ticks_to_finish(strategy, status))
    return 2 + max(0, left)


# -- manifests --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Release:
    version: str  # the app's --version, or the flag's defaultVariant
    bad: bool


def _analysis(strategy: str) -> str:
    shape = {
        "canary": "stepWeight: 20\n    maxWeight: 60",
        "flag": "stepWeight: 20\n    maxWeight: 60",
        "bluegreen": f"iterations: {STEPS['bluegreen']}",
        "ab": (
            f"iterations: {STEPS['ab']}\n    match:\n"
            f"    - headers: {{{AB_HEADER[0]}: {{exact: {AB_HEADER[1]}}}}}"
        ),
    }[strategy]
    return f"""  analysis:
    interval: {INTERVAL_S:g}s
    threshold: {THRESHOLD}
    {shape}
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 90}}, interval: 3s}}
"""


def workload(version: str, *, mark: str, env: dict[str, str]) -> str:
    env_lines = "".join(f'\n      {k}: "{v}"' for k, v in {"CHAOS_MARK": mark, **env}.items())
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 1
  template:
    command: [python, -m, rheostat.demo.app, --port, "{{port}}", --version, "{version}"]
    env:{env_lines}
    readinessProbe: {{path: /readyz}}
"""


def web_canary(strategy: str, svc_port: int) -> str:
    return f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: web, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}}
  progressDeadlineSeconds: 30
  service: {{port: {svc_port}}}
{_analysis("canary" if strategy == "flag" else strategy)}"""


FLAG_KEY = "new-checkout"
FLAG_VARIANTS = ("on", "off")  # good defaults; "broken" is the variant whose code path fails


def feature_flag(default: str, release: int) -> str:
    return f"""apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {{name: checkout, namespace: {NS}}}
spec:
  flagSpec:
    flags:
      {FLAG_KEY}:
        state: ENABLED
        variants: {{"on": true, "off": false, "broken": true}}
        defaultVariant: "{default}"
        metadata: {{release: {release}}}  # every release a new definition, even with the same default
"""


def flag_canary() -> str:
    return f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: checkout, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: core.openfeature.dev/v1beta1, kind: FeatureFlag, name: checkout}}
  flag: {{key: {FLAG_KEY}, appRef: {{name: web}}}}
  progressDeadlineSeconds: 30
{_analysis("flag")}"""


# -- processes --------------------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def processes_of(mark: str, data: Path) -> list[int]:
    """Live processes of one session: its marker in their environment, or its data dir in their command line."""
    found = []
    env_entry, needle = f"CHAOS_MARK={mark}".encode(), str(data).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        stat = _read(proc / "stat")
        if not stat or b") Z " in stat:  # zombies are not running
            continue
        if env_entry in _read(proc / "environ").split(NUL) or needle in _read(proc / "cmdline"):
            found.append(int(proc.name))
    return found


def describe(pids: list[int]) -> str:
    return "; ".join(f"{p}: {_read(Path(f'/proc/{p}/cmdline')).replace(NUL, b' ').decode()}" for p in pids)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def has_down_command() -> bool:
    """`rheostat down` comes with the data plane that outlives the controller."""
    out = subprocess.run([RHEOSTAT, "--help"], capture_output=True, text=True, timeout=30)
    return " down " in out.stdout or "\n  down" in out.stdout


# -- traffic ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    start: float
    end: float
    kind: str  # "ok", "app-error" (the release's own injected 500) or "dropped" (anything else)
    detail: str  # the version or variant that answered, or what went wrong


def classify(resp: httpx.Response) -> tuple[str, str]:
    body: Any = None
    with contextlib.suppress(ValueError):
        body = resp.json()
    if not isinstance(body, dict):
        return "dropped", f"{resp.status_code} {resp.text[:80]!r}"
    if resp.status_code == 200:
        return "ok", str(body.get("variant") or body.get("version"))
    if resp.status_code == 500 and "injected" in str(body.get("error", "")):
        return "app-error", str(body.get("version"))
    return "dropped", f"{resp.status_code} {str(body)[:80]}"


class Traffic:
    """Users through Envoy at a steady rate, every answer recorded; plus a load test on the canary host."""

    def __init__(self, svc_port: int, *, flag: bool, ab: bool) -> None:
        self.base = f"http://127.0.0.1:{svc_port}"
        self.flag, self.ab = flag, ab
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._users, name="chaos-users", daemon=True)]
        if not flag:  # blue/green's canary gets no user traffic before the switch: a load test feeds it
            self.threads.append(threading.Thread(target=self._load_test, name="chaos-load", daemon=True))

    def _users(self) -> None:
        n = 0
        with httpx.Client(timeout=3.0, trust_env=False) as http:
            while not self.stop_event.is_set():
                n += 1
                headers = dict([AB_HEADER]) if self.ab and n % 2 else {}
                url = f"{self.base}/checkout?user=u{n % 400}" if self.flag else f"{self.base}/"
                begun = time.monotonic()
                try:
                    kind, detail = classify(http.get(url, headers=headers))
                except httpx.HTTPError as exc:
                    kind, detail = "dropped", type(exc).__name__
                with self.lock:
                    self.answers.append(Answer(begun, time.monotonic(), kind, detail))
                self.stop_event.wait(max(0.0, 1 / USER_RATE_S - (time.monotonic() - begun)))

    def _load_test(self) -> None:
        with httpx.Client(timeout=3.0, trust_env=False) as http:
            while not self.stop_event.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    http.get(f"{self.base}/", headers={"Host": "web-canary"})
                self.stop_event.wait(0.1)

    def between(self, start: float, end: float) -> list[Answer]:
        with self.lock:
            return [a for a in self.answers if a.end >= start and a.start <= end]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=10)


# -- the controller ---------------------------------------------------------------------------------------


class StartError(RuntimeError):
    pass


@dataclass
class Controller:
    """One `rheostat run` at a time on a repository and a data dir; its output in files."""

    repo: Path
    data: Path
    logs: Path
    api_port: int
    mark: str
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> float:
        """Start it and wait until it serves; returns when (monotonic)."""
        assert self.proc is None
        self.starts += 1
        out = open(self.logs / f"run-{self.starts}.out", "wb")  # noqa: SIM115  # the child holds them
        err = open(self.logs / f"run-{self.starts}.err", "wb")  # noqa: SIM115
        with out, err:
            self.proc = subprocess.Popen(
                [
                    RHEOSTAT,
                    "run",
                    *("--repo", str(self.repo), "--data-dir", str(self.data)),
                    *("--listen", f"127.0.0.1:{self.api_port}"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={**os.environ, "CHAOS_MARK": self.mark, "COLUMNS": "200"},
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                raise StartError(f"`rheostat run` exited with {code}: {self.stderr()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200
                    and "serving" in self.stderr()
                ):
                    return time.monotonic()
            time.sleep(0.05)
        raise StartError(
            f"`rheostat run` did not serve within {START_TIMEOUT_S:.0f}s: {self.stderr()[-2000:]}"
        )

    def stderr(self) -> str:
        return (self.logs / f"run-{self.starts}.err").read_text(errors="replace")

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.terminate()
        try:
            return proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            return None


# -- one session: a repository, a data dir, a strategy ----------------------------------------------------


def _get(url: str, **params: Any) -> Any:
    resp = httpx.get(url, params=params, timeout=10, trust_env=False)
    resp.raise_for_status()
    return resp.json()


@dataclass
class Session:
    strategy: str
    root: Path
    mark: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex}")
    svc_port: int = field(default_factory=free_port)
    versions: Iterator[int] = field(default_factory=lambda: iter(range(1, 10**6)))
    primary: str = ""  # the version (or flag variant) the primary serves
    orphans: list[str] = field(default_factory=list)  # what was left after the clean stop
    ctl: Controller = field(init=False)
    traffic: Traffic = field(init=False)

    def __post_init__(self) -> None:
        repo, logs = self.root / "repo", self.root / "logs"
        repo.mkdir(parents=True)
        logs.mkdir()
        git(repo, "init", "-q", "-b", "main")
        self.ctl = Controller(repo, self.root / "data", logs, free_port(), self.mark)
        self.traffic = Traffic(self.svc_port, flag=self.flag, ab=self.strategy == "ab")

    @property
    def flag(self) -> bool:
        return self.strategy == "flag"

    @property
    def key(self) -> str:
        return f"{NS}/checkout" if self.flag else f"{NS}/web"

    def next_release(self, bad: bool) -> Release:
        if not self.flag:
            return Release(f"1.{next(self.versions)}.0", bad)
        # a good flag release turns the flag to the good variant the primary does not serve
        return Release("broken" if bad else next(v for v in FLAG_VARIANTS if v != self.primary), bad)

    def manifests(self, release: Release) -> str:
        if self.flag:
            env = {
                "OFREP_URL": self.ctl.api,
                "FLAG_KEY": FLAG_KEY,
                "FLAG_ERROR_VARIANT": "broken",
                "FLAG_ERROR_RATE": "1",
            }
            docs = [workload("1.0.0", mark=self.mark, env=env), web_canary("flag", self.svc_port)]
            flag = feature_flag(release.version, next(self.versions))
            return "---\n".join([*docs, flag, flag_canary()])
        env = {"ERROR_RATE": "0.5"} if release.bad else {}
        return "---\n".join(
            [workload(release.version, mark=self.mark, env=env), web_canary(self.strategy, self.svc_port)]
        )

    def commit(self, release: Release) -> None:
        (self.ctl.repo / "app.yaml").write_text(self.manifests(release))
        git(self.ctl.repo, "add", "-A")
        git(self.ctl.repo, "commit", "-q", "-m", f"{release.version}{' (bad)' if release.bad else ''}")

    # -- looking at it

    def status(self, key: str | None = None) -> dict[str, Any]:
        st: dict[str, Any] = _get(f"{self.ctl.api}/api/v1/canaries/{key or self.key}")["status"]
        return st

    def tick(self) -> int:
        """The canary's newest tick number (history rows carry it; the count goes on across restarts)."""
        items = _get(f"{self.ctl.api}/api/v1/canaries/{self.key}/history", limit=1)["items"]
        return int(items[-1]["tick"]) if items else 0

    def events_after(self, after: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = _get(
            f"{self.ctl.api}/api/v1/events", kind="Canary", key=self.key, after=after, limit=10_000
        )["items"]
        return items

    def last_event_id(self) -> int:
        items = _get(f"{self.ctl.api}/api/v1/events", limit=1)["items"]
        return int(items[-1]["id"]) if items else 0

    def envoy_routes(self, name: str) -> Routes | None:
        key = ObjectKey(name)
        sock = self.ctl.data / "envoy" / "admin.sock"
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=5, trust_env=False) as admin:
            dump = admin.get("http://envoy/config_dump", params={"resource": "dynamic_route_configs"}).json()
        for entry in dump.get("configs", []):
            if entry.get("route_config", {}).get("name") == resource_name(key):
                return routes_from_config(entry["route_config"], key)
        return None

    def served(self, n: int = 20) -> set[str]:
        """What users get right now: the app's version through Envoy, or the flag's variant from OFREP."""
        seen = set()
        with httpx.Client(timeout=5, trust_env=False) as http:
            for i in range(n):
                if self.flag:
                    r = http.post(
                        f"{self.ctl.api}/ofrep/v1/evaluate/flags/{FLAG_KEY}",
                        json={"context": {"targetingKey": f"u{i * 17}"}},
                    )
                    seen.add(
                        str(r.json().get("variant")) if r.status_code == 200 else f"HTTP {r.status_code}"
                    )
                    continue
                headers = dict([AB_HEADER]) if self.strategy == "ab" and i % 2 else {}
                r = http.get(f"http://127.0.0.1:{self.svc_port}/", headers=headers)
                kind, detail = classify(r)
                seen.add(detail if kind == "ok" else f"{kind}: {detail}")
        return seen

    def disagreement(self) -> str:
        """'' when the stored status and the live data plane agree, else what differs."""
        problems = []
        web = f"{NS}/web"  # the Workload's Canary: its routes live in Envoy (a flag's web never changes)
        st, live = self.status(web), self.envoy_routes(web)
        if live is None:
            problems.append(f"{web}: Envoy has no routes")
        elif (live.primary, live.canary) != (st["primaryWeight"], st["canaryWeight"]) or live.match:
            problems.append(
                f"{web}: store {st['primaryWeight']}/{st['canaryWeight']}, "
                f"Envoy {live.primary}/{live.canary} match={live.match}"
            )
        if self.flag:  # the flag Canary's split lives in the flag store that OFREP serves
            st = self.status()
            item = _get(f"{self.ctl.api}/api/v1/flags/{FLAG_KEY}")
            share = int((item.get("rollout") or {}).get("share", 0))
            if share != st["canaryWeight"]:
                problems.append(f"{self.key}: store canaryWeight {st['canaryWeight']}, flag share {share}")
        return "; ".join(problems)

    def wait(self, what: str, check: Callable[[], Any], timeout_s: float) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                last = check()
                if last:
                    return last
            time.sleep(0.1)
        raise TimeoutError(f"{self.strategy}: timed out after {timeout_s:.0f}s waiting for {what} ({last!r})")

    def open(self) -> None:
        """First commit, first start, first install: the primary serves 1.0.0 (or the flag's 'off')."""
        self.primary = "off" if self.flag else "1.0.0"
        self.commit(Release(self.primary, False))
        self.ctl.start()
        keys = [self.key, f"{NS}/web"] if self.flag else [self.key]
        self.wait(f"{' and '.join(keys)} Initialized", lambda: self.phases(keys) == {"Initialized"}, 90)

    def phases(self, keys: list[str]) -> set[str]:
        return {str(self.status(k)["phase"]) for k in keys}

    def close(self) -> list[str]:
        """Stop everything the clean way; returns what was still running after (the orphans), killed."""
        self.ctl.stop()
        if has_down_command():
            subprocess.run(
                [RHEOSTAT, "down", "--data-dir", str(self.ctl.data)],
                capture_output=True,
                timeout=60,
                check=False,
            )
        deadline = time.monotonic() + 10
        while (left := processes_of(self.mark, self.ctl.data)) and time.monotonic() < deadline:
            time.sleep(0.1)
        orphans = [describe([p]) for p in left]
        kill_all(left)
        return orphans


# -- a trial ----------------------------------------------------------------------------------------------


@dataclass
class Trial:
    strategy: str
    release: Release
    kills: int = 0
    killed_in: list[str] = field(default_factory=list)  # the phase at each kill
    phase: str = ""
    settled: bool = False
    settle_s: float = 0.0
    ticks_after_restart: int = 0
    tick_bound: int = 0
    promotions: int = 0
    wrong_version: str = ""
    mismatch: str = ""
    dropped_in_restart: int = 0
    drops: Counter[str] = field(default_factory=Counter)  # what the dropped requests got
    at_restart: str = ""  # the status when the last restart served: phase, weight, failed checks
    dropped_elsewhere: int = 0
    requests: int = 0
    extra_processes: str = ""
    error: str = ""

    @property
    def double_promotion(self) -> bool:
        return self.promotions > 1

    @property
    def bad_promoted(self) -> bool:
        return self.release.bad and self.promotions > 0

    @property
    def good_not_promoted(self) -> bool:
        return self.settled and not self.release.bad and (self.phase != "Succeeded" or self.promotions != 1)

    @property
    def over_bound(self) -> bool:
        return self.settled and self.ticks_after_restart > self.tick_bound

    def line(self) -> str:
        """One line for the log."""
        return (
            f"{self.strategy:9s} {'bad ' if self.release.bad else 'good'} kills={self.kills}"
            f" in={','.join(self.killed_in)} ended={self.phase} settle={self.settle_s:.1f}s"
            f" ticks={self.ticks_after_restart}/{self.tick_bound} dropped={self.dropped_in_restart}"
        )

    def violations(self) -> dict[str, str]:
        """Each broken invariant with what was seen."""
        v: dict[str, str] = {}
        if self.error:
            v["error"] = self.error
        if not self.settled:
            v["stuck"] = f"not at rest {STUCK_AFTER_S:.0f}s after the last restart (phase {self.phase})"
        if self.over_bound:
            v["settle bound"] = (
                f"{self.ticks_after_restart} ticks after the last restart ({self.at_restart}),"
                f" bound {self.tick_bound}"
            )
        if self.double_promotion:
            v["double promotion"] = f"{self.promotions} Promoted events"
        if self.bad_promoted:
            v["bad promoted"] = f"bad {self.release.version} promoted"
        if self.good_not_promoted:
            v["good not promoted"] = (
                f"good {self.release.version} ended {self.phase}, {self.promotions} Promoted"
            )
        if self.wrong_version:
            v["wrong version"] = self.wrong_version
        if self.mismatch:
            v["store/Envoy"] = self.mismatch
        if self.dropped_in_restart:
            v["dropped"] = (
                f"{self.dropped_in_restart} user requests failed in restart windows: {dict(self.drops)}"
            )
        if self.extra_processes:
            v["orphans"] = self.extra_processes
        return v


def run_trial(
    s: Session, rng: random.Random, *, max_kills: int = 3, bad_share: float = 0.3, bad: bool | None = None
) -> Trial:
    """Commit a release (bad with `bad_share`, unless `bad` says), kill and restart 1..`max_kills` times."""
    release = s.next_release(bad=rng.random() < bad_share if bad is None else bad)
    t = Trial(s.strategy, release)
    before = s.status()
    tick0, after = s.tick(), s.last_event_id()
    length = run_ticks(s.strategy, release.bad)

    def at_rest() -> dict[str, Any] | None:
        """The status once this release's run has ended."""
        st = s.status()
        moved = st["lastAppliedSpec"] != before["lastAppliedSpec"] and s.tick() > tick0
        return st if moved and st["phase"] in AT_REST else None

    def reached(tick: int) -> Callable[[], bool]:
        return lambda: s.tick() >= tick or at_rest() is not None

    windows: list[tuple[float, float]] = []
    begun = ready = time.monotonic()
    ticks_before_last = 0
    try:
        s.commit(release)
        for _ in range(rng.randint(1, max_kills)):
            # a random point of the run: some tick of it (or rest, if it ends first), then into that tick
            point = tick0 + rng.randrange(length)
            s.wait(f"tick {point}", reached(point), 60)
            time.sleep(rng.uniform(0.0, INTERVAL_S))
            with contextlib.suppress(httpx.HTTPError):
                ticks_before_last = s.tick() - tick0
                t.killed_in.append(str(s.status()["phase"]))
            killed = time.monotonic()
            s.ctl.kill()
            t.kills += 1
            time.sleep(rng.uniform(0.0, 0.5))  # a supervisor restarts it after a moment
            ready = s.ctl.start()
            windows.append((killed, ready + RESTART_GRACE_S))
        tick_restart = s.tick()
        st = s.status()
        t.at_restart = f"{st['phase']} {st['canaryWeight']}% failedChecks={st['failedChecks']}"
        ticks_before_last = max(ticks_before_last, tick_restart - tick0)
        t.tick_bound = settle_bound(s.strategy, release.bad, ticks_before_last, st)

        try:
            st = s.wait(f"{s.key} at rest", at_rest, STUCK_AFTER_S)
            t.settled = True
            t.settle_s = time.monotonic() - ready
            t.ticks_after_restart = s.tick() - tick_restart
        except TimeoutError:
            st = s.status()
        t.phase = st["phase"]
        t.promotions = sum(e["reason"] == "Promoted" for e in s.events_after(after))
        if t.phase == "Succeeded" and t.promotions:
            s.primary = release.version
        served = s.served()
        if served != {s.primary}:
            t.wrong_version = f"served {sorted(served)}, expected {s.primary}"
        t.mismatch = s.disagreement()
        t.extra_processes = extra_processes(s)
    except Exception as exc:  # a broken trial is reported, not raised: the next one starts clean
        t.error = f"{type(exc).__name__}: {exc}"
    finally:
        end = time.monotonic()
        answers = s.traffic.between(begun, end)
        t.requests = len(answers)
        for a in answers:
            if a.kind != "dropped":
                continue
            if any(a.end >= w0 and a.start <= w1 for w0, w1 in windows):
                t.dropped_in_restart += 1
                t.drops[a.detail] += 1
            else:
                t.dropped_elsewhere += 1
    return t


def extra_processes(s: Session) -> str:
    """At rest only the controller, Envoy and the primary's replica run; more, for a few seconds, is an orphan."""
    expected = 3
    deadline = time.monotonic() + 5
    while len(pids := processes_of(s.mark, s.ctl.data)) > expected and time.monotonic() < deadline:
        time.sleep(0.2)
    return describe(pids) if len(pids) > expected else ""


@contextlib.contextmanager
def session(strategy: str, root: Path) -> Iterator[Session]:
    """A started session with traffic flowing; afterwards nothing of it runs (what was left is reported)."""
    s = Session(strategy, root)
    try:
        s.open()
        with s.traffic:
            yield s
    finally:
        s.orphans = s.close()
        kill_all(processes_of(s.mark, s.ctl.data))


# -- many trials and the table ----------------------------------------------------------------------------


@dataclass
class Run:
    trials: list[Trial] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # left after a session's clean stop

    def count(self, pred: Callable[[Trial], bool]) -> int:
        return sum(1 for t in self.trials if pred(t))

    def table(self) -> str:
        settles = [t.settle_s for t in self.trials if t.settled]
        rows = [
            ("trials", str(len(self.trials))),
            (
                "  good / bad releases",
                f"{self.count(lambda t: not t.release.bad)} / {self.count(lambda t: t.release.bad)}",
            ),
            *[(f"  {s}", str(sum(t.strategy == s for t in self.trials))) for s in STRATEGIES],
            ("kills (SIGKILL of the controller)", str(sum(t.kills for t in self.trials))),
            ("stuck", str(self.count(lambda t: not t.settled))),
            ("over the settle bound", str(self.count(lambda t: t.over_bound))),
            ("double promotions", str(self.count(lambda t: t.double_promotion))),
            ("bad promoted", str(self.count(lambda t: t.bad_promoted))),
            ("good not promoted", str(self.count(lambda t: t.good_not_promoted))),
            ("wrong version served", str(self.count(lambda t: bool(t.wrong_version)))),
            ("store/Envoy mismatch", str(self.count(lambda t: bool(t.mismatch)))),
            ("user requests", str(sum(t.requests for t in self.trials))),
            ("dropped in restart windows", str(sum(t.dropped_in_restart for t in self.trials))),
            ("  trials with a drop", str(self.count(lambda t: t.dropped_in_restart > 0))),
            ("failed outside restart windows", str(sum(t.dropped_elsewhere for t in self.trials))),
            (
                "orphans (at rest / after stop)",
                f"{self.count(lambda t: bool(t.extra_processes))} / {len(self.orphans)}",
            ),
            ("harness errors", str(self.count(lambda t: bool(t.error)))),
            (
                "settle time after last restart, s (median, max)",
                f"{statistics.median(settles):.1f}, {max(settles):.1f}" if settles else "-",
            ),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"| {'what':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
        lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
        return "\n".join(lines)


def run_many(
    trials: int, seed: int, root: Path, *, per_session: int = 5, log: Callable[[str], None] = print
) -> Run:
    """`trials` trials in sessions of up to `per_session`, the strategies taking turns (a cut run covers all)."""
    rng = random.Random(seed)
    run = Run()
    n = 0
    while len(run.trials) < trials:
        strategy = STRATEGIES[n % len(STRATEGIES)]
        n += 1
        with session(strategy, root / f"{n}-{strategy}") as s:
            for _ in range(min(per_session, trials - len(run.trials))):
                t = run_trial(s, rng)
                run.trials.append(t)
                log(f"{len(run.trials):4d} {t.line()} {t.violations() or 'ok'}")
        run.orphans += s.orphans
    return run


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that each session's `finally` ends its processes on SIGTERM too


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupted)
    trials = int(os.environ.get("CHAOS_TRIALS", "100"))
    seed = int(os.environ.get("CHAOS_SEED", "1"))
    with tempfile.TemporaryDirectory(prefix="rheostat-chaos-") as tmp:
        run = run_many(trials, seed, Path(tmp))
    print(f"\nchaos: {trials} trials, seed {seed}\n")
    print(run.table())
    seen: dict[str, list[str]] = {}
    for t in run.trials:
        for name, what in t.violations().items():
            seen.setdefault(name, []).append(f"{t.line()}: {what}")
    for name, cases in seen.items():
        print(f"\n{name}: {len(cases)} trials, e.g. {cases[0]}")
    for orphan in run.orphans:
        print(f"\norphan after the clean stop: {orphan}")
    broken = sum(1 for t in run.trials if t.violations()) + len(run.orphans)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
