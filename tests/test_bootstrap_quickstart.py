"""The README's quick start, followed as written in a fresh folder: install from the clone into a new virtual
environment, `rheostat bootstrap`, `rheostat run`, a new version committed and promoted, and the commands
and the `curl`s it shows answering as it says.

Only the ports differ from the README's (9898 and 8470), so that tests can run side by side: `bootstrap`
gets `--port` and `--listen`, `run` gets `--listen`, and the other commands find the API in
RHEOSTAT_SERVER.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servers import free_port
from tests.test_run_cli import describe, kill_all, started_by, wait_for

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def quick_start() -> list[tuple[str, str]]:
    """The fenced blocks of the README's quick start, as (language, text)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M)]


def commands(block: str) -> Iterator[str]:
    for line in block.splitlines():
        line = line.split(" #", 1)[0].strip()  # a trailing comment
        if line and not line.startswith("#"):
            yield line


@pytest.mark.timeout(600)  # a pip install and a release, in real time
def test_the_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    blocks = quick_start()
    shell = [text for lang, text in blocks if lang == "sh"]
    [canary_yaml] = [text for lang, text in blocks if lang == "yaml"]
    [told] = [text for lang, text in blocks if lang == "text"]
    install, start, release, look = shell

    home, folder, logs = tmp_path / "home", tmp_path / "hello", tmp_path / "logs"
    for d in (home, folder, logs):
        d.mkdir()
    port, api_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    mark = f"quickstart-{uuid.uuid4().hex}"
    env = {
        **os.environ,
        "HOME": str(home),  # `~/.rheostat-venv` lands in the test's folder
        "XDG_CONFIG_HOME": os.environ.get("XDG_CONFIG_HOME", str(Path.home() / ".config")),  # pip's own
        "RHEOSTAT_SERVER": api,
        "QUICKSTART_MARK": mark,
        "GIT_AUTHOR_NAME": "quick start",
        "GIT_AUTHOR_EMAIL": "qs@localhost",
        "GIT_COMMITTER_NAME": "quick start",
        "GIT_COMMITTER_EMAIL": "qs@localhost",
        "COLUMNS": "200",
    }
    env.pop("VIRTUAL_ENV", None)

    def sh(line: str, cwd: Path = folder) -> subprocess.CompletedProcess[str]:
        line = line.replace("9898", str(port)).replace("127.0.0.1:8470", f"127.0.0.1:{api_port}")
        out = subprocess.run(
            ["bash", "-ec", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
        )
        assert out.returncode == 0, f"`{line}` failed: {out.stdout}{out.stderr}"
        return out

    # 1. install, in the clone, as the README says
    sh(install, cwd=ROOT)
    venv_bin = home / ".rheostat-venv" / "bin"
    assert (venv_bin / "rheostat").is_file()
    env["PATH"] = f"{venv_bin}:{env['PATH']}"

    # 2. bootstrap, then run
    bootstrap, run = commands(start)
    assert bootstrap.startswith("rheostat bootstrap") and run.startswith("rheostat run")
    sh(f"{bootstrap} --port {port} --listen 127.0.0.1:{api_port}")
    repo = folder / "deploy"
    written = (repo / "apps/podinfo/canary.yaml").read_text()
    shown = canary_yaml.replace("9898", str(port)).replace("127.0.0.1:8470", f"127.0.0.1:{api_port}")
    assert yaml.safe_load(shown) == yaml.safe_load(written), "the README shows the Canary bootstrap writes"
    assert sorted(p.name for p in (repo / "policies").iterdir()), "the starter policies"
    assert subprocess.run(["git", "-C", str(repo), "check-ignore", "-q", ".rheostat/token"]).returncode == 0
    assert (
        subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True
        ).stdout
        == ""
    ), "bootstrap committed everything it wrote"

    out_path, err_path = logs / "run.out", logs / "run.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [*shlex.split(run), "--listen", f"127.0.0.1:{api_port}", "--stop-data-plane"],
            cwd=folder,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    try:

        def canary() -> dict[str, object]:
            body: dict[str, object] = httpx.get(f"{api}/api/v1/canaries/apps/podinfo", timeout=5).json()
            return body

        def phase() -> str | None:
            if proc.poll() is not None:
                pytest.fail(f"`rheostat run` exited: {err_path.read_text()}")
            try:
                return str(canary()["status"]["phase"])  # type: ignore[index]
            except (httpx.HTTPError, KeyError):
                return None

        wait_for("the first revision to be initialized", lambda: phase() == "Initialized", 90, every_s=0.5)
        assert "API token" in err_path.read_text()
        before = len(out_path.read_text().splitlines())

        # 3. a new version, committed in another shell
        for line in commands(release):
            sh(line)
        wait_for("the release to end", lambda: phase() in ("Succeeded", "Failed"), 180, every_s=0.5)
        assert phase() == "Succeeded", out_path.read_text()
        wait_for("the promotion to be told", lambda: "promoted" in out_path.read_text(), 10)

        # 4. what `run` printed is what the README shows (times and commit ids aside)
        def shape(lines: list[str]) -> list[str]:
            return [
                re.sub(r"main@[0-9a-f]{7}", "main@COMMIT", line.split(" ", 1)[1])
                for line in lines
                if "waiting for traffic" not in line
            ]

        printed = out_path.read_text().splitlines()[before:]
        assert shape(printed) == shape(told.splitlines()), printed
        stderr = err_path.read_text()
        assert "Traceback" not in stderr and "warning" not in stderr and "error" not in stderr, stderr

        # 5. the commands to look closer, and what users get
        answers = [sh(line).stdout for line in commands(look)]
        assert '"version":"1.1.0"' in answers[-1].replace(" ", ""), answers[-1]
        canary_host = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "podinfo-canary"}, timeout=5)
        assert canary_host.status_code == 503, "the README says the canary host answers 503 between releases"
        assert "no healthy upstream" in canary_host.text, canary_host.text
        primary = httpx.get(f"http://127.0.0.1:{port}/", headers={"Host": "podinfo-primary"}, timeout=5)
        assert primary.status_code == 200 and primary.json()["version"] == "1.1.0"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := started_by(f"QUICKSTART_MARK={mark}", tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        kill_all(left)
    assert code == 0, err_path.read_text()
    assert not left, f"left behind: {describe(left)}"
