"""`rheostat bootstrap`: a starter layout in a Git repository, committed.

What it writes is meant to succeed as it is: a Workload, its Canary with a load test that runs from before
the first check (so a good release always has traffic to be judged on), the starter policies, and a
`.gitignore` that keeps the data dir (and the API token in it) out of Git.
"""

from __future__ import annotations

import os
import subprocess
from importlib import resources
from pathlib import Path

import click

from rheostat.cli.common import fail

IGNORE = ".rheostat/"  # `rheostat run`'s default data dir: the state, the Envoy files and the API token

WORKLOAD = """apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {name: podinfo, namespace: apps}
spec:
  replicas: 2
  template:
    # {port} is required: each replica is told where to listen. Change --version (or add an entry under
    # template.annotations) and commit to release a new revision.
    command: [python, -m, rheostat.demo.app, --port, "{port}", --version, "1.0.0"]
    readinessProbe: {path: /readyz}
"""

CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: apps}
spec:
  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: podinfo}
  service: {port: SERVICE_PORT}          # the Envoy listener users call: http://127.0.0.1:SERVICE_PORT/
  analysis:
    interval: 10s
    threshold: 2
    stepWeight: 20
    maxWeight: 60
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 30s}
    - {name: request-duration, thresholdRange: {max: 500}, interval: 30s}
    # Load on the canary group (Host: podinfo-canary) from before the first check to the end of the run,
    # so that every check has requests to measure even when no user comes by: without them a check has no
    # data, and a release that sees none within progressDeadlineSeconds is rolled back. pre-rollout starts
    # it once the canary is ready, before the first step; rollout (before each check) starts it again if it
    # has ended. The same command is never run twice at once, and it stops when the run ends.
    # The URL is the load tester of `rheostat run --listen API` (default 127.0.0.1:8470).
    webhooks:
    - name: load-test-start
      type: pre-rollout
      url: http://API_ADDRESS/loadtester/
      metadata: {cmd: "hey -z 10m -q 10 -c 2 -host podinfo-canary http://127.0.0.1:SERVICE_PORT/"}
    - name: load-test
      type: rollout
      url: http://API_ADDRESS/loadtester/
      metadata: {cmd: "hey -z 10m -q 10 -c 2 -host podinfo-canary http://127.0.0.1:SERVICE_PORT/"}
"""

README = """# Deployment repository

`rheostat run --repo .` applies every YAML file committed here (run it in this folder: its data dir
`.rheostat/` holds the API token and is ignored by Git).

- `apps/podinfo/workload.yaml`: the application. Release a new version by changing `--version` and
  committing.
- `apps/podinfo/canary.yaml`: how a new version goes live: 20% more traffic every 10s up to 60%, checked
  on success rate and latency at each step, with a load test on the canary from before the first check.
- `policies/`: the starter policies. Every revision is checked against them before it is applied; a
  Workload without a readiness probe, for example, is blocked (`rheostat get violations` says why).

Watch a release with `rheostat get canaries`, `rheostat events --kind Canary`, or the dashboard at
http://127.0.0.1:8470/.
"""


def starter_policies() -> dict[str, str]:
    """The starter library, file by file, as the package ships it."""
    folder = resources.files("rheostat.policy") / "library"
    return {
        f"policies/{entry.name}": entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith((".yaml", ".yml"))
    }


def files(service_port: int = 9898, api: str = "127.0.0.1:8470") -> dict[str, str]:
    canary = CANARY.replace("SERVICE_PORT", str(service_port)).replace("API_ADDRESS", api)
    return {
        "apps/podinfo/workload.yaml": WORKLOAD,
        "apps/podinfo/canary.yaml": canary,
        **starter_policies(),
        "README.md": README,
    }


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ}
    env.setdefault("GIT_AUTHOR_NAME", "rheostat bootstrap")
    env.setdefault("GIT_AUTHOR_EMAIL", "rheostat@localhost")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    try:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env)
    except FileNotFoundError as exc:
        raise RuntimeError("git is not installed (apt-get install git)") from exc
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"git {' '.join(args)}: {exc.stderr.strip()}") from exc


def _ignore(repo: Path) -> bool:
    """Add the data dir to .gitignore; False if it is already there."""
    path = repo / ".gitignore"
    text = path.read_text() if path.exists() else ""
    if any(line.strip().rstrip("/") == IGNORE.rstrip("/") for line in text.splitlines()):
        return False
    sep = "" if not text or text.endswith("\n") else "\n"
    path.write_text(f"{text}{sep}# rheostat run's data dir: its state and the API token\n{IGNORE}\n")
    return True


def bootstrap(
    repo: Path, branch: str = "main", *, service_port: int = 9898, api: str = "127.0.0.1:8470"
) -> list[str]:
    """Write the starter files that are not there yet and commit them; returns what was written."""
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", branch)
    written = [".gitignore"] if _ignore(repo) else []
    for rel, text in files(service_port, api).items():
        path = repo / rel
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(rel)
    if written:
        _git(repo, "add", *written)
        _git(repo, "commit", "-q", "-m", "rheostat bootstrap")
    return written


@click.command("bootstrap")
@click.option(
    "--repo",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The repository to write into (created, with `git init`, if it is not one).",
)
@click.option("--branch", default="main", show_default=True, help="The branch of a new repository.")
@click.option(
    "--port",
    "service_port",
    type=click.IntRange(1, 65535),
    default=9898,
    show_default=True,
    help="The port of the Canary's Envoy listener, where users reach the application.",
)
@click.option(
    "--listen",
    default="127.0.0.1:8470",
    show_default=True,
    help="HOST:PORT of the API of the `rheostat run` that will apply it (its load tester runs the load test).",
)
def bootstrap_cmd(repo: Path, branch: str, service_port: int, listen: str) -> None:
    """Write a starter layout into a Git repository, and commit it: a Workload, its Canary with a load
    test, the starter policies and a .gitignore for the data dir. Files already there are left as they are.

    \b
    Example:
      rheostat bootstrap --repo deploy
      rheostat run --repo deploy
    """
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(ValueError(f"--listen {listen!r}: expected HOST:PORT with a port from 1 to 65535"))
    try:
        written = bootstrap(repo, branch, service_port=service_port, api=listen)
    except (OSError, RuntimeError) as exc:
        fail(exc)
    for path in written:
        click.echo(f"wrote {path}")
    if written:
        click.echo(f"committed; now run: rheostat run --repo {repo}")
    else:
        click.echo(f"nothing to write: every starter file is already in {repo}")
