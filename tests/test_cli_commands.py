"""The kubectl- and flux-style commands against one real `rheostat run` (real Git, Envoy, app processes).

Every command runs as a user runs it: the installed `rheostat` script in a subprocess, its stdout a pipe (so
tables must come out plain). `--watch`, `logs -f` and `events --watch` run in the background while the test
makes a change, and are ended with SIGINT as Ctrl-C ends them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml

from tests.test_cli_help import complete
from tests.test_run_cli import Cluster, Runner, Traffic, cli, new_runner, rheostat_bin, running, wait_for

pytestmark = pytest.mark.e2e

NS, NAME = "prod", "web"
KEY = f"{NS}/{NAME}"
BOX = set("│┃━─┏┓┗┛┡┩╇╈┼└┘┌┐")


def manifests(version: str, svc_port: int, api_port: int, mark: str, error_rate: float = 0.0) -> str:
    """A Workload and its Canary in `prod`, a feature flag, and the starter slow-ramp policy in dryrun (the
    1s interval breaks it: a violation is recorded, nothing is blocked)."""
    from importlib import resources

    policy = resources.files("rheostat.policy").joinpath("library", "canary-slow-ramp.yaml").read_text()
    policy = policy.replace("spec:\n  match:", "spec:\n  enforcementAction: dryrun\n  match:")
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: {NAME}, namespace: {NS}}}
spec:
  replicas: 1
  template:
    command: [python, -m, rheostat.demo.app, --port, "{{port}}", --version, "{version}"]
    env: {{E2E_MARK: "{mark}", ERROR_RATE: "{error_rate}"}}
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
    maxWeight: 50
    stepWeight: 10
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 5s}}
---
apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {{name: checkout, namespace: {NS}}}
spec:
  flagSpec:
    flags:
      new-checkout:
        state: ENABLED
        variants: {{"on": true, "off": false}}
        defaultVariant: "off"
---
{policy}"""


class Fleet(Cluster):
    def release(self, version: str, error_rate: float = 0.0) -> str:
        """Commit a version and have it applied at once, as `reconcile ks --with-source` does."""
        r = self.runner
        sha = self.commit(manifests(version, self.svc_port, r.api_port, r.mark, error_rate), f"web {version}")
        out = cli(
            "reconcile",
            "ks",
            "flux-system",
            "--with-source",
            "--server",
            self.api,
            "--data-dir",
            str(self.data),
        )
        assert out.returncode == 0, out.stderr
        assert "reconcile requested for ks flux-system/flux-system and its source" in out.stderr  # progress
        assert out.stdout.startswith("ks flux-system/flux-system: Ready=True"), out.stdout
        return sha


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    runner: Runner = new_runner(tmp_path_factory.mktemp("cli"))
    f = Fleet(runner=runner, svc_port=0)
    f.svc_port = free_svc_port()
    f.commit(manifests("1.0.0", f.svc_port, runner.api_port, runner.mark), "web 1.0.0")
    with running(runner), Traffic(f.svc_port):
        wait_for("the canary to initialize", lambda: phase(f) == "Initialized", 90)
        yield f


def free_svc_port() -> int:
    from tests.servers import free_port

    return free_port()


def phase(f: Cluster) -> str | None:
    with contextlib.suppress(httpx.HTTPError):
        return str(httpx.get(f"{f.api}/api/v1/canaries/{KEY}", timeout=5).json()["status"]["phase"])
    return None


def run(f: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(*args, "--server", f.api)


class Background:
    """A command left running, its stdout read line by line; ended with SIGINT (Ctrl-C)."""

    def __init__(self, f: Cluster, *args: str) -> None:
        self.proc = subprocess.Popen(
            [rheostat_bin(), *args, "--server", f.api],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_line(self, what: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                assert self.proc.poll() is None, f"ended early: {self.proc.returncode} {self.stderr()}"
                continue
            self.seen.append(line)
            if what in line:
                return line
        pytest.fail(f"no line with {what!r} in {timeout_s}s; printed: {self.seen}")

    def finish(self, timeout_s: float = 30) -> int:
        """The exit code of a command that ends by itself."""
        code = self.proc.wait(timeout=timeout_s)
        self.interrupt()
        return code

    def interrupt(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        err = self.stderr()
        self.reader.join(timeout=10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        return self.proc.returncode, err

    def stderr(self) -> str:
        if self.proc.stderr is None or self.proc.stderr.closed or self.proc.poll() is None:
            return ""
        return self.proc.stderr.read()


# -- get -----------------------------------------------------------------------------------------------


def columns(line: str) -> list[str]:
    """The cells of a plain table line: a cell holds single spaces only, columns are 3 or more apart."""
    return re.split(r" {2,}", line.strip())


def test_get_lists_every_served_kind_as_plain_columns_into_a_pipe(fleet: Fleet) -> None:
    expect = {
        ("canaries", "cd", "canary"): ("NAMESPACE", "NAME", "STRATEGY", "PHASE", NAME),
        ("workloads", "wl", "workload"): ("NAMESPACE", "NAME", "CANARIES", "PRIMARY", KEY),
        ("sources", "gitrepository", "source"): ("NAMESPACE", "NAME", "READY", "REVISION", "flux-system"),
        ("kustomizations", "ks", "Kustomization"): ("NAMESPACE", "READY", "SUSPENDED", "flux-system"),
        ("flags", "ff", "flag"): ("FLAG", "STATE", "DEFAULT", "new-checkout", "ENABLED"),
        ("violations", "pv", "violation"): ("ACTION", "POLICY", "dryrun", "production-canary-ramps"),
    }
    for names, words in expect.items():
        outputs = set()
        for kind in names:
            out = run(fleet, "get", kind)
            assert out.returncode == 0, (kind, out.stderr)
            outputs.add(out.stdout)
            lines = out.stdout.splitlines()
            assert not BOX & set(out.stdout), f"box drawing in a pipe: {out.stdout}"
            assert "\x1b[" not in out.stdout, "colour in a pipe"
            for word in words:
                assert word in out.stdout, (kind, word, out.stdout)
            header = columns(lines[0])
            assert header[0] == words[0] and len(lines) >= 2, out.stdout
        assert len(outputs) == 1 or names[0] in ("canaries", "workloads"), (names, outputs)

    out = run(fleet, "get", "canaries")
    header, row = (columns(line) for line in out.stdout.splitlines()[:2])
    assert dict(zip(header, row, strict=False))["NAMESPACE"] == NS
    assert dict(zip(header, row, strict=False))["NAME"] == NAME
    assert dict(zip(header, row, strict=False))["PHASE"] in (
        "Initialized",
        "Succeeded",
        "Failed",
        "Progressing",
    )


def test_get_one_by_name_in_every_output_format(fleet: Fleet) -> None:
    wide = run(fleet, "get", "canary", NAME, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = (columns(line) for line in wide.stdout.splitlines())
    cells = dict(zip(header, row, strict=True))
    assert cells["TARGET"] == f"Workload/{NAME}" and cells["INTERVAL"] == "1s"
    assert "NAMESPACE" not in header  # one object: kubectl leaves the column out

    as_json = json.loads(run(fleet, "get", "canary", KEY, "-o", "json").stdout)
    assert as_json["metadata"] == {"name": NAME, "namespace": NS} or as_json["metadata"]["name"] == NAME
    assert as_json["status"]["phase"]
    as_yaml = yaml.safe_load(run(fleet, "get", "cd", NAME, "-n", NS, "-o", "yaml").stdout)
    assert as_yaml["spec"] == as_json["spec"] and as_yaml["kind"] == "Canary"
    listed = json.loads(run(fleet, "get", "canaries", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in listed] == [NAME]
    listed_yaml = yaml.safe_load(run(fleet, "get", "ks", "-o", "yaml").stdout)
    assert [i["metadata"]["name"] for i in listed_yaml] == ["flux-system"]

    assert run(fleet, "get", "canaries", "-o", "name").stdout == f"canary/{KEY}\n"
    assert run(fleet, "get", "workloads", "-o", "name").stdout == f"workload/{KEY}\n"
    assert run(fleet, "get", "flags", "-o", "name").stdout == "flag/new-checkout\n"
    assert run(fleet, "get", "ks", "-o", "name").stdout == "kustomization/flux-system/flux-system\n"
    flag = json.loads(run(fleet, "get", "flag", "new-checkout", "-o", "json").stdout)
    assert flag["key"] == "new-checkout" and flag["state"] == "ENABLED"

    for kind, extra in (
        ("workloads", "COMMAND"),
        ("sources", "URL"),
        ("ks", "PATH"),
        ("flags", "FLAG SET"),
        ("violations", "FILE"),
    ):
        out = run(fleet, "get", kind, "-o", "wide")
        assert out.returncode == 0 and extra in out.stdout.splitlines()[0], (kind, out.stdout, out.stderr)


def test_get_namespaces_names_and_kinds_it_does_not_serve(fleet: Fleet) -> None:
    mine = run(fleet, "get", "canaries", "-n", NS)
    assert mine.returncode == 0 and NAME in mine.stdout
    assert "NAMESPACE" not in mine.stdout.splitlines()[0]  # one namespace: no column for it, as kubectl
    everywhere = run(fleet, "get", "canaries", "-A", "-n", "elsewhere")
    assert everywhere.returncode == 0 and columns(everywhere.stdout.splitlines()[0])[0] == "NAMESPACE"
    other = run(fleet, "get", "canaries", "-n", "elsewhere")
    assert other.returncode == 0 and other.stdout == "" and "No canaries found" in other.stderr

    missing = run(fleet, "get", "canary", "nope")
    assert missing.returncode == 1 and 'canary "nope" not found' in missing.stderr
    wrong_ns = run(fleet, "get", "canary", NAME, "-n", "elsewhere")
    assert wrong_ns.returncode == 1 and "not found in namespace elsewhere" in wrong_ns.stderr
    helm = run(fleet, "get", "hr")
    assert helm.returncode == 0 and "No helmreleases found" in helm.stderr
    unknown = run(fleet, "get", "pods")
    assert (
        unknown.returncode == 1 and "unknown kind 'pods'" in unknown.stderr and "canaries" in unknown.stderr
    )


# -- a release followed: rollout status, get --watch, logs -f, events --watch, describe ------------------


def test_a_promoted_release_followed_by_watch_logs_events_and_rollout_status(fleet: Fleet) -> None:
    wait_for("rest", lambda: phase(fleet) in ("Initialized", "Succeeded", "Failed"), 90)
    watch = Background(fleet, "get", "canaries", "--watch")
    logs = Background(fleet, "logs", NAME, "-n", NS, "-f")
    events = Background(fleet, "events", "--for", f"Canary/{KEY}", "--watch", "--limit", "1")
    ks = Background(fleet, "get", "ks", "flux-system", "-w", "-o", "json")
    others: list[Background] = [ks]
    try:
        ks.wait_line('"kind": "Kustomization"')
        assert columns(watch.wait_line("NAMESPACE"))[:2] == ["NAMESPACE", "NAME"]
        watch.wait_line(NAME)
        logs.wait_line("==> primary-0 <==")
        # Paused, the canary does not start the new revision: `rollout status` waits for it, and times out.
        token = ("--server", fleet.api, "--data-dir", str(fleet.data))
        assert cli("pause", NAME, "-n", NS, *token).returncode == 0
        events.wait_line("ManualRequest")
        sha = fleet.release("1.1.0")
        ks.wait_line(f'@sha1:{sha}"')  # the object printed again, as it changed
        late = cli("rollout", "status", NAME, "--timeout", "2s", "--server", fleet.api)
        assert late.returncode == 2 and "timed out after 2s" in late.stderr, (late.stdout, late.stderr)
        assert f"waiting: Workload {KEY} declares revision" in late.stdout, late.stdout

        status = Background(fleet, "rollout", "status", NAME)
        others.append(status)
        status.wait_line("waiting: Workload")
        assert cli("resume", NAME, "-n", NS, *token).returncode == 0
        status.wait_line("Progressing: canary 10%")
        status.wait_line(f"canary {KEY} promoted", timeout_s=90)
        assert status.finish() == 0

        progressing = watch.wait_line("Progressing")
        assert columns(progressing)[:3] == [NS, NAME, "canary"]
        watch.wait_line("Succeeded")
        logs.wait_line("==> canary-0 <==")
        logs.wait_line("version 1.1.0 listening")
        events.wait_line("Promot")
    finally:
        results = [b.interrupt() for b in (watch, logs, events)]
        for b in others:
            b.interrupt()
    for code, err in results:
        assert code == 130 and "Traceback" not in err, (code, err)

    described = run(fleet, "describe", "canary", NAME)
    assert described.returncode == 0, described.stderr
    text = described.stdout
    for expected in (
        f"Namespace:            {NS}",
        f"Target:               Workload/{NAME}",
        "Strategy:             canary: +10% a step up to 50%",
        "Phase:              Succeeded",
        "Outcome:            promoted",
        "request-success-rate",
        "Events:",
    ):
        assert expected in text, (expected, text)
    print(text)
    cells = check_of(text, "request-success-rate")
    assert float(cells["LAST"]) >= 99 and cells["THRESHOLD"] == ">= 99", text
    assert int(cells["PASSED"]) > 0 and int(cells["FAILED"]) < 2, text  # fewer than the threshold


def check_of(described: str, metric: str) -> dict[str, str]:
    """The row of `metric` in the last run's Checks table of `describe canary`."""
    lines = described.splitlines()
    start = lines.index("  Checks:")
    header = columns(lines[start + 1])
    row = next(columns(line) for line in lines[start + 2 :] if line.strip().startswith(metric))
    return dict(zip(header, row, strict=False))


def test_rollout_status_exits_1_on_a_rollback(fleet: Fleet) -> None:
    wait_for("rest", lambda: phase(fleet) in ("Initialized", "Succeeded", "Failed"), 90)
    fleet.release("1.2.0", error_rate=0.5)
    status = cli("rollout", "status", KEY, "--server", fleet.api, timeout=150)
    assert status.returncode == 1, (status.stdout, status.stderr)
    assert f"canary {KEY} rolled back" in status.stdout.splitlines()[-1]
    again = cli("rollout", "status", NAME, "-n", NS, "--server", fleet.api)
    assert again.returncode == 1  # at rest after a rollback: the last rollout's outcome

    described = run(fleet, "describe", "cd", KEY)
    assert "Outcome:            rolled back" in described.stdout, described.stdout
    cells = check_of(described.stdout, "request-success-rate")
    assert int(cells["FAILED"]) >= 2, described.stdout  # failed at least `threshold` times
    assert float(cells["LAST"]) < 99, described.stdout


def test_describe_refuses_what_it_cannot_describe(fleet: Fleet) -> None:
    out = run(fleet, "describe", "canary", "nope")
    assert out.returncode == 1 and 'canary "nope" not found' in out.stderr
    out = run(fleet, "describe", "workload", NAME)
    assert out.returncode == 2 and "canary" in out.stderr


def test_completion_asks_the_server_for_names(fleet: Fleet) -> None:
    assert complete("rheostat get canaries ", fleet.api) == [NAME]
    assert complete("rheostat describe canary w", fleet.api) == [NAME]
    assert complete("rheostat get ks ", fleet.api) == ["flux-system"]
    assert complete("rheostat get flags new", fleet.api) == ["new-checkout"]
    assert complete("rheostat rollout status ", fleet.api) == [NAME]


def test_the_environment_names_the_server(fleet: Fleet) -> None:
    out = subprocess.run(
        [rheostat_bin(), "get", "cd", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RHEOSTAT_SERVER": fleet.api},
    )
    assert out.stdout == f"canary/{KEY}\n", out.stderr
