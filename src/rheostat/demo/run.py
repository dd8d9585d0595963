"""`rheostat demo`: a Git repository, three releases, real processes behind a real Envoy, a live view."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.reactor.settings import Settings
from rheostat.rollout.types import Phase
from rheostat.server.hey import parse_hey, run_hey
from rheostat.server.main import Server

KEY = ObjectKey("demo/podinfo")
FLAG_KEY = ObjectKey("demo/checkout")  # the Canary that rolls out the flag `new-checkout`
WINDOW_S = 10.0
# The app evaluates `new-checkout` over OFREP for /checkout; its "on" code path is broken half the time.
FLAG_ENV = {"FLAG_ERROR_VARIANT": "on", "FLAG_ERROR_RATE": "0.5"}


@dataclass(frozen=True)
class Release:
    version: str
    env: dict[str, str]
    expect: Phase
    why: str
    judge: str = "threshold"


RELEASES = (
    Release("6.0.1", {}, Phase.SUCCEEDED, "a good version: promoted step by step"),
    Release(
        "6.0.2",
        {"ERROR_RATE": "0.3"},
        Phase.FAILED,
        "30% errors: rolled back by the sequential judge",
        judge="sequential",
    ),
    Release("6.0.3", {"LATENCY_MS": "700"}, Phase.FAILED, "700 ms slower: rolled back on latency"),
)


FLAG_RELEASE = Release(
    "new-checkout=on", {}, Phase.FAILED, "flag turned on; its new code path fails: rolled back to 0% of users"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def manifests(
    version: str,
    env: dict[str, str],
    port: int,
    api: str,
    interval: str,
    judge: str = "threshold",
    flag_default: str = "off",
) -> str:
    env = {"OFREP_URL": api, **FLAG_ENV, **env}
    env_yaml = "".join(f'\n        {k}: "{v}"' for k, v in env.items())
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: podinfo, namespace: demo}}
spec:
  replicas: 2
  template:
    command: [python, -m, rheostat.demo.app, --port, "{{port}}", --version, "{version}"]
    env:{env_yaml}
    readinessProbe: {{path: /readyz}}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: demo}}
spec:
  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: podinfo}}
  progressDeadlineSeconds: 60
  service: {{port: {port}}}
  analysis:
    interval: {interval}
    threshold: 2
    maxWeight: 60
    stepWeight: 20
    judge: {judge}
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 10s}}
    - {{name: request-duration, thresholdRange: {{max: 500}}, interval: 10s}}
    webhooks:
    - name: load-test
      url: {api}/loadtester/
      timeout: 5s
      metadata: {{cmd: "hey -z 1m -q 10 -c 2 http://127.0.0.1:{port}/"}}
---
apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {{name: checkout, namespace: demo}}
spec:
  flagSpec:
    flags:
      new-checkout:
        state: ENABLED
        variants: {{"on": true, "off": false}}
        defaultVariant: "{flag_default}"
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: checkout, namespace: demo}}
spec:
  targetRef: {{apiVersion: core.openfeature.dev/v1beta1, kind: FeatureFlag, name: checkout}}
  flag: {{key: new-checkout, appRef: {{name: podinfo}}}}
  analysis:
    interval: {interval}
    threshold: 2
    maxWeight: 60
    stepWeight: 20
    metrics:
    - {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 10s}}
"""


def git(repo: Path, *args: str) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "rheostat demo",
        "GIT_AUTHOR_EMAIL": "demo@localhost",
        "GIT_COMMITTER_NAME": "rheostat demo",
        "GIT_COMMITTER_EMAIL": "demo@localhost",
    }
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)


def commit(repo: Path, text: str, message: str) -> None:
    (repo / "podinfo.yaml").write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


class View:
    """The live terminal view: weights, success rate and p99 per version, the last events."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.release = "-"
        self.log: list[str] = []
        self.flag = False  # showing the flag rollout instead of the workload's

    async def render(self) -> Group:
        return await (self.render_flag() if self.flag else self.render_workload())

    async def render_flag(self) -> Group:
        """Share of users per definition, success rate per variant (from the app's own counters)."""
        ctl = self.server.controller
        st = ctl.engine.status(FLAG_KEY)
        share = ctl.flags.split("new-checkout") if ctl.flags.rolling_out("new-checkout") else 0
        table = Table(title=f"flag new-checkout {self.release}: {st.phase.value}", expand=False)
        for col in ("variant", "users", "success rate"):
            table.add_column(col, justify="right" if col != "variant" else "left")
        for group, variant, users in (("primary", "off", 100 - share), ("canary", "on", share)):
            try:
                v = await ctl.app_counters.query(
                    MetricQuery(FLAG_KEY, "request-success-rate", WINDOW_S, group=group)
                )
                rate = f"{v:.1f}%"
            except (NoData, ProviderError):
                rate = "-"
            table.add_row(f"{variant} ({group})", f"{users}%", rate)
        events = [
            f"{time.strftime('%H:%M:%S', time.localtime(e.ts))} {e.reason}: {e.message}"
            for e in ctl.store.events(kind="Canary", key=FLAG_KEY, limit=6)
        ]
        return Group(table, Text("\n".join(events), style="dim"))

    async def sample(self, group: str) -> tuple[str, str]:
        metrics = self.server.controller.metrics
        out = []
        for name in ("request-success-rate", "request-duration"):
            try:
                v = await metrics.query(MetricQuery(KEY, name, WINDOW_S, group=group))
                out.append(f"{v:.1f}%" if name == "request-success-rate" else f"{v:.0f} ms")
            except (NoData, ProviderError):
                out.append("-")
        return out[0], out[1]

    async def render_workload(self) -> Group:
        ctl = self.server.controller
        st = ctl.engine.status(KEY)
        hist = ctl.store.history(KEY, limit=1)
        row = hist[-1].body if hist else {"primaryWeight": 100, "canaryWeight": 0}
        table = Table(title=f"release {self.release}: {st.phase.value}", expand=False)
        for col in ("version", "weight", "success rate", "p99"):
            table.add_column(col, justify="right" if col != "version" else "left")
        try:
            status = ctl.platform.status(KEY)
            versions = {"primary": status.primary.revision or "-", "canary": status.canary.revision or "-"}
        except Exception:
            versions = {"primary": "-", "canary": "-"}
        for group, weight in (("primary", row["primaryWeight"]), ("canary", row["canaryWeight"])):
            sr, p99 = await self.sample(group)
            table.add_row(f"{group} ({versions[group][:7]})", f"{weight}%", sr, p99)
        events = [
            f"{time.strftime('%H:%M:%S', time.localtime(e.ts))} {e.reason}: {e.message}"
            for e in ctl.store.events(kind="Canary", key=KEY, limit=6)
        ]
        return Group(table, Text("\n".join(events), style="dim"))


async def traffic(port: int, stop: asyncio.Event) -> None:
    """Steady user traffic through Envoy for the whole demo."""
    spec = parse_hey(f"hey -z 1h -q 20 -c 2 http://127.0.0.1:{port}/")
    with contextlib.suppress(asyncio.CancelledError):
        await run_hey(spec, stop=stop)


async def shoppers(port: int, stop: asyncio.Event) -> None:
    """Users with stable ids checking out through Envoy: the flagged code path, ~30 requests/s."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        while not stop.is_set():
            user = f"user-{random.randrange(1000)}"
            with contextlib.suppress(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{port}/checkout", params={"user": user})
            await asyncio.sleep(1 / 30)


async def wait_phase(
    server: Server, want: set[Phase], since_tick: int, timeout_s: float, key: ObjectKey = KEY
) -> Phase:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = server.controller.engine.status(key)
        if st.tick > since_tick and st.phase in want:
            return st.phase
        await asyncio.sleep(0.2)
    return server.controller.engine.status(key).phase


async def run_demo(*, keep: bool = False, interval: str = "2s", console: Console | None = None) -> int:
    console = console or Console()
    if shutil.which("git") is None:
        console.print("[red]error:[/red] the demo needs git (apt-get install git)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="rheostat-demo-"))
    repo, data = tmp / "repo", tmp / "data"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    api_port, port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    commit(repo, manifests("6.0.0", {}, port, api, interval), "podinfo 6.0.0")
    settings = Settings(
        repo=repo, data_dir=data, listen_port=api_port, poll_interval_s=0.5, sync_interval_s=0.5
    )
    server = Server(settings)
    started = time.monotonic()
    results: list[tuple[Release, Phase, float]] = []
    verdicts: list[tuple[Release, str]] = []
    stop_traffic = asyncio.Event()
    load: asyncio.Task[None] | None = None
    try:
        await server.start()
        console.print(
            f"[bold]rheostat demo[/bold]: repository {repo}, API {api}, service http://127.0.0.1:{port}/"
        )
        await wait_phase(server, {Phase.INITIALIZED}, 0, 60)
        load = asyncio.create_task(traffic(port, stop_traffic), name="demo-traffic")
        view = View(server)
        with Live(await view.render(), console=console, refresh_per_second=4, transient=False) as live:
            for rel in RELEASES:
                view.release = f"{rel.version} ({rel.why})"
                tick = server.controller.engine.status(KEY).tick
                commit(
                    repo,
                    manifests(rel.version, rel.env, port, api, interval, rel.judge),
                    f"podinfo {rel.version}",
                )
                server.controller.request_reconcile()
                t0 = time.monotonic()
                waiter = asyncio.create_task(
                    wait_phase(server, {Phase.SUCCEEDED, Phase.FAILED}, tick + 1, 150)
                )
                while not waiter.done():
                    live.update(await view.render())
                    await asyncio.wait({waiter}, timeout=0.5)
                results.append((rel, waiter.result(), time.monotonic() - t0))
                if rel.judge == "sequential":
                    verdicts.append((rel, server.controller.engine.status(KEY).message))
                live.update(await view.render())
            # The flag: Git turns `new-checkout` on; its "on" code path fails, so it is rolled back.
            view.flag, view.release = True, FLAG_RELEASE.why
            good = RELEASES[0]  # the workload stays at the promoted version: only the flag changes
            tick = server.controller.engine.status(FLAG_KEY).tick
            buyers = asyncio.create_task(shoppers(port, stop_traffic), name="demo-shoppers")
            commit(
                repo,
                manifests(good.version, good.env, port, api, interval, good.judge, flag_default="on"),
                "new-checkout: on",
            )
            server.controller.request_reconcile()
            t0 = time.monotonic()
            waiter = asyncio.create_task(
                wait_phase(server, {Phase.SUCCEEDED, Phase.FAILED}, tick + 1, 150, FLAG_KEY)
            )
            while not waiter.done():
                live.update(await view.render())
                await asyncio.wait({waiter}, timeout=0.5)
            results.append((FLAG_RELEASE, waiter.result(), time.monotonic() - t0))
            live.update(await view.render())
            buyers.cancel()
            await asyncio.gather(buyers, return_exceptions=True)
        console.print()
        ok = all(phase is rel.expect for rel, phase, _ in results)
        summary = Table(title="summary")
        for col in ("release", "what", "expected", "outcome", "took"):
            summary.add_column(col)
        for rel, phase, took in results:
            mark = "[green]✓[/green]" if phase is rel.expect else "[red]✗[/red]"
            summary.add_row(rel.version, rel.why, rel.expect.value, f"{mark} {phase.value}", f"{took:.0f}s")
        console.print(summary)
        for rel, message in verdicts:  # the evidence the sequential judge acted on
            console.print(f"[bold]{rel.version}[/bold] sequential judge: {message}")
        console.print(
            f"total {time.monotonic() - started:.0f}s; "
            + ("every release ended as expected" if ok else "[red]a release did not end as expected[/red]")
        )
        if keep:
            console.print(
                f"still running: dashboard {api}/, API {api}/api/v1/canaries, "
                f"service http://127.0.0.1:{port}/, repository {repo}. Ctrl-C to stop."
            )
            with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
                await asyncio.Event().wait()
        return 0 if ok else 1
    finally:
        stop_traffic.set()
        if load is not None:
            load.cancel()
            await asyncio.gather(load, return_exceptions=True)
        await server.stop()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
