"""The rig of the doc tests: the fenced blocks of README.md and docs/, and a sandbox that runs a page's shell
blocks in order, as a reader would, with a controller when the page talks to one.

Conventions a page may rely on (written down in docs/README.md, "Writing these pages"):

- `<!-- illustrative -->` on the line right above a fence: the block is shown, not run (a real cluster, a
  cloud account, a fragment).
- A YAML (or JSON) block whose first line is `# some/relative/path.yaml` is a file the reader saves there:
  the rig writes it into the page's sandbox, in page order, before the next shell block runs.
- A YAML block whose first line is `# <data-dir>/secrets/NS/NAME.yaml` is a secret file of the data dir and
  is read as `rheostat run` reads secrets; one headed `# prometheus.yml` is checked by `promtool`.
- A page whose shell blocks talk to the API or to a listener (`rheostat get`, `curl 127.0.0.1:8470`, ...) runs
  in the quick start's folder: `rheostat bootstrap --repo deploy` done, and `rheostat run --repo deploy`
  running. The documented ports 8470, 9898 and 9899 are swapped for free ones, as in
  test_bootstrap_quickstart.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.servers import free_port
from tests.test_run_cli import describe, kill_all, started_by, wait_for

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- illustrative -->"
SHELL = {"sh", "bash", "shell", "console"}
YAML = {"yaml", "yml"}
LOADED = YAML | {"json", "toml"}
# Shown for reading only: output, other languages, PromQL (checked against Prometheus in test_prometheus).
SHOWN = {"", "text", "python", "promql", "go", "diff", "http"}
QUICK_START = ("README.md", "Quick start")  # run end to end by tests/test_bootstrap_quickstart.py
VENV_BIN = Path(sys.executable).parent

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<lang>[\w+-]*)[^\n`]*$")
_FILE_HEADER = re.compile(r"^#\s*(?P<path>[\w./-]+\.(?:ya?ml|json))\s*$")
_SECRET_HEADER = re.compile(r"^#\s*<data-dir>/secrets/(?P<ns>[\w.-]+)/(?P<name>[\w.-]+)\.yaml\s*$")
# Commands that need a running controller: they call its API or one of its listeners.
_TALKS = re.compile(
    r"\brheostat\s+(get|events|describe|rollout|logs|promote|abort|approve|halt|unhalt|pause|resume|"
    r"reconcile|suspend|diff|trace|flags)\b|127\.0\.0\.1:(8470|9898|9899)|localhost:(8470|9898|9899)"
)


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # the opening fence, 1-based
    lang: str
    text: str
    illustrative: bool
    section: str  # the nearest heading above

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def header(self) -> str:
        first = self.text.lstrip("\n").split("\n", 1)[0]
        return first.strip()

    @property
    def saved_as(self) -> str | None:
        """The relative path the block says it is saved at, if any."""
        m = _FILE_HEADER.match(self.header)
        return m["path"] if m and not m["path"].startswith("/") else None

    @property
    def quick_start(self) -> bool:
        return (self.page, self.section) == QUICK_START


def pages() -> list[str]:
    docs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))
    return ["README.md", *docs]


def read_blocks(page: str) -> list[Block]:
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and (m := re.match(r"^#{1,6}\s+(.*)$", line)):
            section = m[1].strip()
        fence = _FENCE.match(line)
        if fence is None:
            i += 1
            continue
        indent, mark = fence["indent"], fence["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith(mark) and lines[j].strip().strip(mark[0]) == ""
        ):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        illustrative = i > 0 and lines[i - 1].strip() == MARKER
        out.append(Block(page, i + 1, fence["lang"].lower(), "\n".join(body) + "\n", illustrative, section))
        i = j + 1
    return out


def stray_markers(page: str) -> list[int]:
    """Lines of the marker that do not sit directly above a fence."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    return [
        n + 1
        for n, line in enumerate(lines)
        if line.strip() == MARKER and (n + 1 >= len(lines) or _FENCE.match(lines[n + 1]) is None)
    ]


def needs_controller(blocks: list[Block]) -> bool:
    return any(_TALKS.search(commands_of(b)) for b in blocks if b.lang in SHELL and not b.illustrative)


def commands_of(block: Block) -> str:
    """What a reader types: a console block's `$ ` lines, any other shell block as it stands."""
    if block.lang != "console":
        return block.text
    return "\n".join(line[2:] for line in block.text.splitlines() if line.startswith("$ "))


# -- loading ---------------------------------------------------------------------------------------------


def yaml_errors(block: Block, workdir: Path, before: list[Block]) -> list[str]:
    """What is wrong with a YAML block, read as `rheostat validate` reads a folder holding it.

    The block is part of the reader's repository: an object it refers to but does not declare is fine when
    the quick start's repository or a YAML block above it on the page declares it, and a Constraint may use
    the starter library's templates. Kinds Rheostat does not
    read (RBAC, say) are checked against their Kubernetes schema; a Canary of a Deployment is validated as
    `rheostat validate --cluster`.
    """
    from rheostat.cli.validate import validate

    if secret := _SECRET_HEADER.match(block.header):
        return secret_errors(block, workdir, secret["ns"], secret["name"])
    if block.header == "# prometheus.yml":
        return promtool_errors(block, workdir)
    ours, theirs = _split(block.text)
    errors = [e for doc in theirs for e in kube_errors(doc)]
    if not ours:
        return errors
    path = workdir / (Path(block.saved_as).name if block.saved_as else "block.yaml")
    path.write_text(yaml.safe_dump_all(ours, sort_keys=False))
    (workdir / "starter-templates.yaml").write_text(starter_templates())  # what a Constraint may use
    known = declared([b.text for b in before if b.lang in YAML] + list(starter_files().values()))
    for r in validate([workdir], catalogue=_catalogue(ours)):
        missing = re.search(r"(\w+) (\S+/\S+) is not declared", r.message)
        if r.level == "error" and not (missing and f"{missing[1]} {missing[2]}" in known):
            errors.append(f"{r.rule}: {r.object}: {r.message}")
    return errors


_OUR_GROUPS = (
    "flagger.app",
    "fluxcd.io",
    "rheostat.dev",
    "openfeature.dev",
    "gatekeeper.sh",
    "kustomize.config.k8s.io",
)


def _catalogue(docs: list[Any]) -> Any:
    """`rheostat validate --cluster` for a Canary of a Deployment or DaemonSet, the embedded default otherwise."""
    from rheostat.plugins.routers import ROUTERS
    from rheostat.reactor.cluster import cluster_catalogue
    from rheostat.rollout.backends import EMBEDDED

    kinds = {
        str((d.get("spec") or {}).get("targetRef", {}).get("kind"))
        for d in docs
        if isinstance(d, dict) and d.get("kind") == "Canary"
    }
    return cluster_catalogue(ROUTERS.names(), "istio") if kinds & {"Deployment", "DaemonSet"} else EMBEDDED


def _split(text: str) -> tuple[list[Any], list[Any]]:
    """Documents Rheostat reads, and plain Kubernetes objects it does not (checked by their schema)."""
    from rheostat.model.load import KINDS

    ours, theirs = [], []
    for doc in yaml.safe_load_all(text):
        kind = (doc.get("apiVersion"), doc.get("kind")) if isinstance(doc, dict) else None
        group = str(kind[0]).rpartition("/")[0] if kind else ""
        if kind is not None and kind not in KINDS and group and not group.endswith(_OUR_GROUPS):
            theirs.append(doc)
        else:
            ours.append(doc)
    return ours, theirs


def kube_errors(doc: dict[str, Any]) -> list[str]:
    from tests.kube_schemas import schema_errors

    try:
        return [f"{doc.get('kind')}: {e}" for e in schema_errors(doc)]
    except LookupError as exc:
        return [str(exc)]


def starter_files() -> dict[str, str]:
    from rheostat.cli.bootstrap import files

    return {path: text for path, text in files().items() if path.endswith((".yaml", ".yml"))}


def starter_templates() -> str:
    """The starter library's ConstraintTemplates without their Constraints: the reader's repository has them."""
    docs = [d for text in starter_files().values() for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    return yaml.safe_dump_all([d for d in docs if d.get("kind") == "ConstraintTemplate"], sort_keys=False)


def declared(texts: list[str]) -> set[str]:
    from rheostat.model.load import read_text

    return {
        f"{obj.kind} {obj.metadata.key}"
        for t in texts
        for obj in read_text(t).objects
        if hasattr(obj, "metadata")
    }


def secret_errors(block: Block, workdir: Path, ns: str, name: str) -> list[str]:
    """A secret file of the data dir, read as `rheostat run` reads it."""
    from rheostat.reactor.alerts import Secrets

    path = workdir / "secrets" / ns / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(block.text)
    try:
        data = Secrets(workdir / "secrets").get(ns, name)
    except ValueError as exc:
        return [str(exc)]
    return [] if data else ["an empty secret"]


def promtool_errors(block: Block, workdir: Path) -> list[str]:
    from tests.processes import binary

    path = workdir / "prometheus.yml"
    path.write_text(block.text)
    out = subprocess.run(
        [binary("promtool", "prometheus"), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return [] if out.returncode == 0 else [out.stdout + out.stderr]


def load_errors(block: Block) -> list[str]:
    try:
        if block.lang == "json":
            json.loads(block.text)
        elif block.lang == "toml":
            tomllib.loads(block.text)
    except ValueError as exc:
        return [str(exc)]
    return []


# -- the sandbox ----------------------------------------------------------------------------------------


@dataclass
class Sandbox:
    """A fresh folder per page, with `rheostat` (the project's venv) on PATH and ports of its own."""

    root: Path
    mark: str = field(default_factory=lambda: f"docs-{uuid.uuid4().hex}")
    port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    port2: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    run: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.work = self.root / "work"
        self.logs = self.root / "logs"
        for d in (self.work, self.logs, self.root / "home"):
            d.mkdir(parents=True, exist_ok=True)
        self.state = self.logs / "shell-state"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RHEOSTAT_")},
            "HOME": str(self.root / "home"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "RHEOSTAT_SERVER": self.api,
            "DOCS_MARK": self.mark,
            "GIT_AUTHOR_NAME": "docs",
            "GIT_AUTHOR_EMAIL": "docs@localhost",
            "GIT_COMMITTER_NAME": "docs",
            "GIT_COMMITTER_EMAIL": "docs@localhost",
            "GIT_CONFIG_GLOBAL": str(self.root / "home" / ".gitconfig"),
            "COLUMNS": "200",
        }
        self.env.pop("VIRTUAL_ENV", None)
        (self.root / "home" / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def local(self, text: str) -> str:
        """The documented ports swapped for this sandbox's."""
        for host in ("127.0.0.1", "localhost"):
            text = text.replace(f"{host}:8470", f"127.0.0.1:{self.api_port}")
        return text.replace("9898", str(self.port)).replace("9899", str(self.port2))

    def save(self, block: Block) -> None:
        assert block.saved_as is not None
        path = self.work / block.saved_as
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.local(block.text))

    def sh(self, block: Block, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
        """One block, in the shell state the blocks before it left (exports and folder carry over)."""
        state = shlex.quote(str(self.state))
        script = (
            f"[ -f {state} ] && . {state}\n"
            "set -eo pipefail\n"
            f"{self.local(commands_of(block))}\n"
            f"{{ export -p; printf 'cd %q\\n' \"$PWD\"; }} > {state}\n"
        )
        try:
            return subprocess.run(
                ["bash", "-c", script],
                cwd=self.work,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            said = [
                x.decode(errors="replace") if isinstance(x, bytes) else x or ""
                for x in (exc.stdout, exc.stderr)
            ]
            return subprocess.CompletedProcess(
                exc.cmd, 124, said[0], f"{said[1]}\n(timed out after {timeout_s:.0f}s)"
            )

    # -- the quick start's controller ------------------------------------------------------------------

    def start_controller(self) -> None:
        """`rheostat bootstrap --repo deploy` and `rheostat run --repo deploy`, as the quick start leaves them."""
        boot = subprocess.run(
            [
                str(VENV_BIN / "rheostat"),
                "bootstrap",
                "--repo",
                "deploy",
                "--port",
                str(self.port),
                "--listen",
                f"127.0.0.1:{self.api_port}",
            ],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert boot.returncode == 0, f"bootstrap failed: {boot.stdout}{boot.stderr}"
        with open(self.logs / "run.out", "wb") as out, open(self.logs / "run.err", "wb") as err:
            self.run = subprocess.Popen(
                [
                    str(VENV_BIN / "rheostat"),
                    "run",
                    "--repo",
                    "deploy",
                    "--listen",
                    f"127.0.0.1:{self.api_port}",
                    "--stop-data-plane",
                ],
                cwd=self.work,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        wait_for("the starter canary to be initialized", lambda: self.phase() == "Initialized", 120, 0.3)

    def phase(self) -> str | None:
        assert self.run is not None
        if self.run.poll() is not None:
            pytest.fail(f"`rheostat run` exited: {self.run_output()}")
        try:
            body = httpx.get(f"{self.api}/api/v1/canaries/apps/podinfo", timeout=5).json()
            return str(body["status"]["phase"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            return None

    def run_output(self) -> str:
        out = (self.logs / "run.out").read_text(errors="replace")[-4000:]
        err = (self.logs / "run.err").read_text(errors="replace")[-4000:]
        return f"--- rheostat run stdout ---\n{out}\n--- stderr ---\n{err}"

    def stop(self) -> list[int]:
        """End `rheostat run` and anything the page started; what was still alive, for the caller to fail on."""
        if self.run is not None:
            self.run.send_signal(signal.SIGTERM)
            try:
                self.run.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.run.kill()
                self.run.wait(timeout=10)
        deadline = time.monotonic() + 10
        while (left := started_by(f"DOCS_MARK={self.mark}", self.root)) and time.monotonic() < deadline:
            time.sleep(0.1)
        kill_all(left)
        return left


def sandbox_for(root: Path, controller: bool) -> Iterator[Sandbox]:
    box = Sandbox(root)
    try:
        if controller:
            box.start_controller()
        yield box
    finally:
        left = box.stop()
    assert not left, f"left behind: {describe(left)}"


# -- links ----------------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    out: set[str] = set()
    fenced = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6}\s+(.*)$", line)):
            base, n = slug(m[1]), 1
            name = base
            while name in out:
                name, n = f"{base}-{n}", n + 1
            out.add(name)
    return out


def broken_links(page: str) -> list[str]:
    """Relative links of a page whose file or heading does not exist."""
    source = ROOT / page
    text = re.sub(r"^\s*(`{3,}|~{3,}).*?^\s*\1", "", source.read_text(encoding="utf-8"), flags=re.S | re.M)
    out = []
    for m in _LINK.finditer(text):
        target = m["target"]
        if re.match(r"^[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            out.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            out.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    return out
