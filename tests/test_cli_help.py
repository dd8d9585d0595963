"""Help on every command and option, the generated CLI reference, shell completion, plain tables in pipes.

No server is needed here: these run the command tree itself (in process, and as the installed script).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.cli.output import plain_lines
from rheostat.cli.reference import commands, markdown
from tests.test_run_cli import rheostat_bin

ROOT = Path(__file__).resolve().parent.parent


def every_command() -> list[tuple[tuple[str, ...], click.Command]]:
    return list(commands(cli, ("rheostat",)))


def test_every_command_has_help_with_an_example_and_every_option_a_help_text() -> None:
    found = every_command()
    names = {" ".join(p) for p, _ in found}
    assert {"rheostat get", "rheostat describe", "rheostat rollout status", "rheostat completion"} <= names
    missing = []
    for path, cmd in found:
        if "Example" not in (cmd.help or "") or "rheostat " not in (cmd.help or ""):
            missing.append(f"{' '.join(path)}: no example")
        for p in cmd.params:
            if isinstance(p, click.Option) and not p.help:
                missing.append(f"{' '.join(path)} {p.opts[0]}: no help")
    assert missing == []


@pytest.mark.parametrize("args", [["get", "--help"], ["rollout", "status", "--help"], ["logs", "--help"]])
def test_help_prints_the_examples(args: list[str]) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0
    assert "Examples:\n    rheostat " in res.output, res.output


def test_the_committed_cli_reference_is_what_the_code_prints() -> None:
    committed = (ROOT / "docs" / "cli.md").read_text()
    generated = markdown(cli)
    assert committed == generated, "docs/cli.md is stale: python -m rheostat.cli.reference > docs/cli.md"
    for path, _ in commands(cli, ("rheostat",)):
        assert f"\n## {' '.join(path)}\n" in committed


def test_the_reference_script_prints_the_same_as_the_function() -> None:
    out = subprocess.run(
        [os.path.join(os.path.dirname(rheostat_bin()), "python"), "-m", "rheostat.cli.reference"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout == markdown(cli)


# -- completion ----------------------------------------------------------------------------------------


def complete(words: str, server: str = "http://127.0.0.1:9") -> list[str]:
    """What bash completion offers for the line `words` (the cursor after its last word), as the script
    `rheostat completion bash` installs asks the program."""
    parts = words.split(" ")
    out = subprocess.run(
        [rheostat_bin()],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "_RHEOSTAT_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(parts) - 1),
            "RHEOSTAT_SERVER": server,  # by default nothing listens there: names complete to nothing, fast
        },
    )
    assert out.returncode == 0, out.stderr
    return [line.split(",", 1)[1] for line in out.stdout.splitlines() if line]


def test_completion_offers_commands_kinds_and_options() -> None:
    assert {"get", "describe", "rollout", "completion"} <= set(complete("rheostat "))
    assert complete("rheostat ge") == ["get"]
    assert complete("rheostat get ca") == ["canaries"]
    assert set(complete("rheostat get ")) >= {"canaries", "workloads", "sources", "kustomizations", "flags"}
    assert "--watch" in complete("rheostat get canaries --")
    assert complete("rheostat get canaries -o ") == ["table", "wide", "json", "yaml", "name"]
    assert complete("rheostat rollout ") == ["status"]
    assert complete("rheostat get canaries ") == []  # no server to ask: no names, no error


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o"), ("zsh", "compdef"), ("fish", "complete")]
)
def test_completion_prints_the_script_of_each_shell(shell: str, marker: str) -> None:
    out = subprocess.run([rheostat_bin(), "completion", shell], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "_RHEOSTAT_COMPLETE" in out.stdout and marker in out.stdout


def test_bash_loads_the_script_and_registers_the_completion() -> None:
    bash = shutil.which("bash")
    if bash is None:
        if os.environ.get("CI"):
            pytest.fail("bash is needed for this test")
        pytest.skip("no bash")
    script = f'source <("{rheostat_bin()}" completion bash) && complete -p rheostat'
    out = subprocess.run([bash, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "rheostat" in out.stdout and "-F" in out.stdout


def test_an_unknown_shell_is_refused() -> None:
    res = CliRunner().invoke(cli, ["completion", "powershell"])
    assert res.exit_code == 2 and "powershell" in res.output


# -- plain output ----------------------------------------------------------------------------------------


def test_tables_into_a_pipe_are_plain_columns(tmp_path: Path) -> None:
    f = tmp_path / "canary.yaml"
    f.write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}\n"
        "  service: {port: 8080}\n  analysis: {interval: 1m, threshold: 2, stepWeight: 20, maxWeight: 40}\n"
    )
    out = subprocess.run([rheostat_bin(), "simulate", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("prod/web (canary, interval 1m)")
    assert lines[1].split() == [
        "TICK",
        "TIME",
        "PHASE",
        "PRIMARY",
        "CANARY",
        "FAILED",
        "ITERATIONS",
        "MESSAGE",
    ]
    assert not set("│┃━─┏┓┗┛") & set(out.stdout) and "\x1b[" not in out.stdout
    rows = [line.split()[:5] for line in lines[2:] if line[:1].isdigit()]
    assert rows[1][3:5] == ["80", "20"], rows  # the second tick: primary 80, canary 20

    out = subprocess.run([rheostat_bin(), "validate", str(f), "-o", "json"], capture_output=True, text=True)
    assert isinstance(json.loads(out.stdout), list)


def test_plain_columns_line_up_and_keep_a_long_message_on_one_line() -> None:
    lines = plain_lines(
        ("NAME", "PHASE", "MESSAGE"), [["web", "Succeeded", "a\nlong  message"], ["api-x", "-", ""]]
    )
    assert lines == [
        "NAME    PHASE       MESSAGE",
        "web     Succeeded   a long message",
        "api-x   -           -",
    ]


def test_a_terminal_gets_a_drawn_table_with_a_rule_under_the_header(tmp_path: Path) -> None:
    import pty

    f = tmp_path / "canary.yaml"
    f.write_text(
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: prod}\n"
        "spec:\n  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}\n"
        "  service: {port: 8080}\n  analysis: {interval: 1m, threshold: 2, stepWeight: 20, maxWeight: 40}\n"
    )
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [rheostat_bin(), "simulate", str(f)],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal is closed once everything is read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0, proc.stderr
    shown = b"".join(chunks).decode()
    assert "─" in shown and "TICK" in shown, shown
