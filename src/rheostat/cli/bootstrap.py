"""`rheostat bootstrap`: a starter layout in a Git repository, committed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

WORKLOAD = """apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {name: podinfo, namespace: apps}
spec:
  replicas: 2
  template:
    command: [python, -m, rheostat.demo.app, --port, "{port}", --version, "1.0.0"]
    readinessProbe: {path: /readyz}
"""

CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: apps}
spec:
  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 30s
    threshold: 3
    stepWeight: 10
    maxWeight: 50
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
    - {name: request-duration, thresholdRange: {max: 500}, interval: 1m}
"""

README = """# Deployment repository

`rheostat run --repo .` applies every YAML file here. Release a new version by changing
`apps/podinfo/workload.yaml` and committing: the Canary in `apps/podinfo/canary.yaml` decides how it goes live.
"""

FILES = {"apps/podinfo/workload.yaml": WORKLOAD, "apps/podinfo/canary.yaml": CANARY, "README.md": README}


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


def bootstrap(repo: Path, branch: str = "main") -> list[str]:
    """Write the starter files that are not there yet and commit them; returns what was written."""
    repo.mkdir(parents=True, exist_ok=True)
    if not (repo / ".git").exists():
        _git(repo, "init", "-q", "-b", branch)
    written = []
    for rel, text in FILES.items():
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
