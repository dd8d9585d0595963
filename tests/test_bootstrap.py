"""`rheostat bootstrap`: a starter repository that succeeds as it is. The files are committed, the data dir is
ignored by Git, the Canary's load test starts before its first check, and the starter policies are in force
(`rheostat validate` reads them as `rheostat run`'s gate does). The whole path, from the README to a
promoted release, is tests/test_bootstrap_quickstart.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from click.testing import CliRunner

from rheostat.cli.bootstrap import bootstrap
from rheostat.cli.main import cli
from rheostat.cli.validate import validate
from rheostat.model.canary import Canary
from rheostat.model.load import load_file
from rheostat.policy import starter_documents
from tests.servers import git


def committed(repo: Path) -> list[str]:
    return sorted(git(repo, "ls-files").splitlines())


def test_bootstrap_commits_a_repository_that_ignores_the_data_dir(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    written = bootstrap(repo)
    assert committed(repo) == sorted(written)
    assert ".gitignore" in written and "README.md" in written
    (repo / ".rheostat").mkdir()
    (repo / ".rheostat" / "token").write_text("secret")
    assert git(repo, "status", "--porcelain") == "", "the data dir and its token are never committed"

    assert bootstrap(repo) == [], "a second bootstrap leaves the files as they are"
    assert git(repo, "rev-list", "--count", "HEAD") == "1"


def test_an_existing_gitignore_gets_the_data_dir_once(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".gitignore").write_text("*.log")  # no newline at the end
    bootstrap(repo)
    assert (repo / ".gitignore").read_text().splitlines()[0] == "*.log"
    assert (repo / ".gitignore").read_text().count(".rheostat/") == 1
    (repo / "x.log").write_text("")
    assert git(repo, "status", "--porcelain") == ""


def test_the_canary_load_test_starts_before_the_first_check(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    bootstrap(repo, service_port=19000, api="127.0.0.1:19001")
    [canary] = load_file(repo / "apps/podinfo/canary.yaml")
    assert isinstance(canary, Canary)
    assert canary.spec.service is not None and canary.spec.service.port == 19000
    hooks = {h.kind: h for h in canary.spec.the_analysis.webhooks}
    # pre-rollout runs once the canary is ready, before the first step and so before the first analysis;
    # rollout runs before every analysis and starts the load again should it have ended.
    assert set(hooks) == {"pre-rollout", "rollout"}
    for hook in hooks.values():
        assert hook.url == "http://127.0.0.1:19001/loadtester/"
        cmd = (hook.metadata or {})["cmd"]
        assert cmd.startswith("hey ") and "-host podinfo-canary" in cmd and "127.0.0.1:19000/" in cmd, cmd
    assert hooks["pre-rollout"].metadata == hooks["rollout"].metadata, "one load test, never two at once"


def test_the_starter_policies_are_in_the_repository_and_in_force(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    bootstrap(repo)
    policies = [d for p in sorted((repo / "policies").iterdir()) for d in yaml.safe_load_all(p.read_text())]
    assert policies == starter_documents()
    assert [r for r in validate([repo]) if r.level == "error"] == []
    assert [r for r in validate([repo], starter=True) if r.level == "error"] == []

    workload = repo / "apps/podinfo/workload.yaml"
    workload.write_text(workload.read_text().replace("    readinessProbe: {path: /readyz}\n", ""))
    errors = [r for r in validate([repo]) if r.level == "error"]
    assert [(r.object, r.file) for r in errors] == [("Workload apps/podinfo", str(workload))], errors
    assert "readinessProbe" in errors[0].message


def test_the_command_says_what_it_wrote_and_what_to_run(tmp_path: Path) -> None:
    repo = tmp_path / "deploy"
    res = CliRunner().invoke(cli, ["bootstrap", "--repo", str(repo)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "wrote .gitignore" in lines and "wrote apps/podinfo/canary.yaml" in lines
    assert lines[-1] == f"committed; now run: rheostat run --repo {repo}"
    again = CliRunner().invoke(cli, ["bootstrap", "--repo", str(repo)])
    assert again.exit_code == 0 and "nothing to write" in again.output

    bad = CliRunner().invoke(cli, ["bootstrap", "--repo", str(tmp_path / "other"), "--listen", "8470"])
    assert bad.exit_code == 1
    assert "--listen '8470': expected HOST:PORT" in bad.output
    assert not (tmp_path / "other").exists(), "a refused command writes nothing"


def test_bootstrap_without_git_says_so_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run(
        ["rheostat", "bootstrap", "--repo", str(tmp_path / "deploy")],
        env={"PATH": str(Path(sys.executable).parent)},  # the venv's bin, and no git
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert out.stderr.strip() == "error: git is not installed (apt-get install git)", out.stderr
