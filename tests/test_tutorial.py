"""`rheostat tutorial --non-interactive` end to end: the real command, git, `rheostat run`, Envoy, the app.

One pass through every lesson, cut in two as a user would: lesson 1, Ctrl-C during lesson 2, then
`rheostat tutorial` again continues at lesson 2 and goes to the end. What is asserted is what the user sees
(the printed checkmarks) and the state the lessons leave, read through the API of a `rheostat run` started
on the tutorial's folder afterwards. Every process the tutorial starts must be gone when it exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rheostat.tutorial import actions, checks, files, state
from rheostat.tutorial.sandbox import Sandbox, free_port, git

pytestmark = pytest.mark.e2e

RHEOSTAT = shutil.which("rheostat", path=os.path.dirname(sys.executable))
NUL = b"\0"
CHECKS = {  # the ✓ lines of each lesson, in order
    1: ["write the repository", "start rheostat run", "release a new version"],
    2: ["release a version that fails"],
    3: ["start an A/B test", "approve the promotion"],
    4: ["deploy the green version", "switch"],
    5: ["add a flag", "turn it on for a share of users", "approve the flag"],
    6: ["add a policy", "commit a version that breaks it", "fix it"],
}


def rheostat_bin() -> str:
    assert RHEOSTAT is not None, f"the `rheostat` console script is not installed beside {sys.executable}"
    return RHEOSTAT


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def started_for(folder: Path, mark: str) -> list[int]:
    """Live processes of one tutorial: the mark in their environment, or the folder in their command line
    or in RHEOSTAT_DATA_PLANE (Envoy and the replicas)."""
    found = []
    env_mark, path = f"TUTORIAL_MARK={mark}".encode(), str(folder).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        status = _read(proc / "stat")
        if not status or b") Z " in status:
            continue
        env = _read(proc / "environ").split(NUL)
        if env_mark in env or path in _read(proc / "cmdline") or any(path in e for e in env):
            found.append(int(proc.name))
    return found


def describe(pids: list[int]) -> str:
    return "; ".join(f"{p}: {_read(Path(f'/proc/{p}/cmdline')).replace(NUL, b' ').decode()}" for p in pids)


class Tutorial:
    """One `rheostat tutorial` process; its output collected line by line by a thread."""

    def __init__(self, folder: Path, mark: str, *args: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [rheostat_bin(), "tutorial", "--dir", str(folder), "--non-interactive", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TUTORIAL_MARK": mark},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self.reader.join(timeout=5)
                if any(text in line for line in self.lines):
                    return
                pytest.fail(
                    f"the tutorial exited with {self.proc.returncode} before {text!r}:\n{self.output}"
                )
            time.sleep(0.1)
        pytest.fail(f"no {text!r} within {timeout_s:.0f}s:\n{self.output}")

    def wait(self, timeout_s: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"the tutorial did not end within {timeout_s:.0f}s:\n{self.output}")
        self.reader.join(timeout=5)
        return code

    def kill(self) -> None:
        """Kill it if it still runs (a failed test), and close its output."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The tutorial's folder and the mark its processes carry; whatever is left afterwards fails the test."""
    folder, mark = tmp_path / "tutorial", uuid.uuid4().hex
    yield folder, mark
    left = started_for(folder, mark)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {describe(left)}"


def no_process_left(folder: Path, mark: str) -> None:
    deadline = time.monotonic() + 10
    while (left := started_for(folder, mark)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"the tutorial left processes behind: {describe(left)}"


def checkmarks(output: str, lesson: int) -> list[str]:
    """The ✓ step names printed in one lesson's section of the output."""
    section = output.split(f"Lesson {lesson} of 6")[1].split(f"Lesson {lesson} done.")[0]
    return [line[2:].split(":")[0] for line in section.splitlines() if line.startswith("✓ ")]


def api_get(api: str, path: str) -> Any:
    resp = httpx.get(f"{api}/api/v1{path}", timeout=10)
    resp.raise_for_status()
    return resp.json()


@contextlib.contextmanager
def run_on(folder: Path) -> Iterator[str]:
    """`rheostat run` on the tutorial's repository and data, as its last message tells the user to."""
    progress = json.loads((folder / "progress.json").read_text())
    api = f"http://127.0.0.1:{progress['apiPort']}"
    proc = subprocess.Popen(
        [
            rheostat_bin(),
            "run",
            "--repo",
            str(folder / "repo"),
            "--data-dir",
            str(folder / "data"),
            "--listen",
            f"127.0.0.1:{progress['apiPort']}",
            "--stop-data-plane",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/healthz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, f"`rheostat run` exited with {proc.returncode}"
            time.sleep(0.1)
        yield api
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_every_lesson_resumed_after_ctrl_c_and_checked_through_the_api(folder: tuple[Path, str]) -> None:
    path, mark = folder

    # Lesson 1, then Ctrl-C as lesson 2 begins: progress is kept and everything is stopped.
    first = Tutorial(path, mark)
    try:
        first.wait_for_line("Lesson 1 done.", 150)
        first.wait_for_line("Lesson 2 of 6", 30)
        first.proc.send_signal(signal.SIGINT)
        assert first.wait(60) == 130, first.output
    finally:
        first.kill()
    assert checkmarks(first.output, 1) == CHECKS[1], first.output
    assert "Interrupted" in first.output
    assert not any(line.startswith("✗") for line in first.lines), first.output
    assert json.loads((path / "progress.json").read_text())["done"] == [1]
    no_process_left(path, mark)

    # Again: it continues at lesson 2 and goes to the end.
    second = Tutorial(path, mark)
    try:
        code = second.wait(300)
    finally:
        second.kill()
    out = second.output
    assert code == 0, out
    assert "continuing at lesson 2" in out
    assert "Lesson 1 of 6" not in out
    for lesson in range(2, 7):
        assert checkmarks(out, lesson) == CHECKS[lesson], (lesson, out)
    assert "✗" not in out
    assert "Every lesson is done." in out
    token = (path / "data" / "token").read_text().strip()
    assert token not in first.output + out, "the API token must never be printed"
    assert json.loads((path / "progress.json").read_text())["done"] == [1, 2, 3, 4, 5, 6]
    no_process_left(path, mark)

    # What the lessons left, through the API of a new `rheostat run` on the same folder.
    with run_on(path) as api:
        web = api_get(api, "/canaries/tutorial/web")["status"]
        assert web["phase"] == "Succeeded" and web["lastPromotedSpec"] == web["lastAppliedSpec"], web
        (fixed,) = [line for line in out.splitlines() if line.startswith("✓ fix it: Succeeded: ")]
        version = fixed.split()[4]  # "✓ fix it: Succeeded: 1.5.0 is promoted, ..."
        (workload,) = api_get(api, "/workloads")["items"]
        assert version in workload["spec"]["template"]["command"], (version, workload)
        assert workload["status"]["revision"] == web["lastPromotedSpec"]
        flag = api_get(api, "/flags/new-checkout")
        assert flag["defaultVariant"] == "on" and flag["rollout"]["active"] is False, flag
        assert api_get(api, "/canaries/tutorial/checkout")["status"]["phase"] == "Succeeded"
        kustomizations = api_get(api, "/kustomizations")["items"]
        ready = [c for c in kustomizations[0]["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True", ready
        events = api_get(api, "/events?limit=1000")["items"]
        reasons = {(e["kind"], e["reason"]) for e in events}
        assert ("Workload", "PolicyViolation") in reasons or ("Kustomization", "PolicyViolation") in reasons
    no_process_left(path, mark)

    # Done: it says so and starts nothing.
    again = subprocess.run(
        [rheostat_bin(), "tutorial", "--dir", str(path), "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert "You have done every lesson" in again.stdout


def test_reset_starts_over_and_sigterm_stops_everything(folder: tuple[Path, str]) -> None:
    path, mark = folder
    path.mkdir()
    (path / "progress.json").write_text(json.dumps({"done": [1, 2, 3]}))
    run = Tutorial(path, mark, "--reset")
    try:
        run.wait_for_line("✓ start rheostat run", 90)
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(60) == 130, run.output
    finally:
        run.kill()
    assert "Starting over" in run.output and "Lesson 1 of 6" in run.output
    assert json.loads((path / "progress.json").read_text())["done"] == []
    no_process_left(path, mark)


def test_lesson_out_of_range_is_refused() -> None:
    out = subprocess.run(
        [rheostat_bin(), "tutorial", "--lesson", "7", "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--lesson" in out.stderr, out.stderr


def test_an_edit_made_by_hand_is_committed_as_the_user_made_it(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "tutorial")
    sb.open()
    s = state.Session(sb)
    first = actions.Commit(actions.first_files)
    first.prompt(s)
    assert "committed" in first.run(s)
    assert checks.in_git(s).ok

    # Edited by hand, not committed: Enter commits the user's file as it is, under the step's message.
    release = actions.Commit(actions.release("canary"), actions.remember_versions)
    assert "set the version to 1.1.0" in release.prompt(s)
    mine = (sb.read(files.WORKLOAD) or "").replace('"1.0.0"', '"1.1.0"') + "# my own comment\n"
    (sb.repo / files.WORKLOAD).write_text(mine)
    assert release.run(s).startswith("your edit, committed")
    assert sb.committed(files.WORKLOAD) == mine.strip()
    assert git(sb.repo, "log", "-1", "--format=%s") == "web 1.1.0"

    # Edited and committed by hand: that commit is the step's, nothing more is written.
    again = actions.Commit(actions.release("canary"), actions.remember_versions)
    again.prompt(s)
    (sb.repo / files.WORKLOAD).write_text(mine.replace('"1.1.0"', '"1.2.0"'))
    git(sb.repo, "commit", "-qam", "my release")
    assert again.run(s).startswith("your commit")
    assert git(sb.repo, "log", "-1", "--format=%s") == "my release"
    assert state.git_version(s) == "1.2.0"

    # Half of the tutorial's own edit left uncommitted (an interruption): set aside, then done in full.
    (sb.repo / files.WORKLOAD).write_text("half written")
    assert sb.set_aside() and not sb.dirty()
    assert "stash@{0}" in git(sb.repo, "stash", "list")
    sb.stop()


def test_a_failed_check_names_its_step_exits_1_and_stops_everything(folder: tuple[Path, str]) -> None:
    """Lesson 6 on a repository that already runs a Workload without a readiness probe: the policy's own
    commit is refused, so its first check fails."""
    path, mark = folder
    ports = files.Ports(free_port(), free_port())
    repo = path / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "apps" / "web").mkdir(parents=True)
    (repo / files.WORKLOAD).write_text(files.workload("1.0.0", ports))
    (repo / files.CANARY).write_text(files.canary(ports))
    (repo / "apps" / "other.yaml").write_text(
        files.workload("1.0.0", ports, probe=False).replace("web", "other")
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "web, and other without a probe")
    (path / "progress.json").write_text(json.dumps({"apiPort": ports.api, "servicePort": ports.service}))

    run = Tutorial(path, mark, "--lesson", "6")
    try:
        code = run.wait(150)
    finally:
        run.kill()
    assert code == 1, run.output
    assert "✗ add a policy: " in run.output, run.output
    assert "lesson 6, step 'add a policy'" in run.output, run.output
    assert "Lesson 6 done." not in run.output
    assert json.loads((path / "progress.json").read_text()).get("done", []) == []
    no_process_left(path, mark)


def test_a_folder_the_tutorial_did_not_make_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "mine.txt").write_text("my work")
    out = subprocess.run(
        [rheostat_bin(), "tutorial", "--dir", str(tmp_path), "--reset", "--non-interactive"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 1 and "not a tutorial folder" in out.stdout, out.stdout + out.stderr
    assert (tmp_path / "repo" / "mine.txt").read_text() == "my work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]
