"""Benchmark (issue 12): 500 Canaries against the kmock API server, driven by the real `rheostat run`.

Three processes, so that only the controller's own work is counted as its CPU:
- the cluster (a child of this one): the tests' `KubeServer` (tests/kubeapi.py) on 127.0.0.1, playing the
  kubelet as tests/kubelet.py does but only for Deployments that changed (it follows the server's history,
  not a loop over every object), and a tiny Prometheus-compatible endpoint that answers every instant query
  with 100 (a success rate of 100% and a p99 of 100 ms: every builtin check passes);
- `rheostat run --kubeconfig ... --metrics-server ...`, unchanged, as a user starts it;
- this one, which asks the cluster for its request log and phases over a pipe (that asking is not an HTTP
  request, so it is not in the log) and reads the controller's CPU time from /proc.

Measured: the time until every Canary is Initialized; then at rest (all Initialized) and during analysis (a
new revision on every Deployment: all Progressing), over whole analysis intervals, the API requests per canary
per tick by verb, the writes among them, whether any LIST comes again, and the controller's CPU. Ticks are
counted by the controller itself (`rheostat_canary_duration_seconds_count` on its /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import podinfo
from tests.servers import free_port

RHEOSTAT = shutil.which("rheostat", path=os.path.dirname(sys.executable)) or "rheostat"
NAMESPACES = 5  # the Canaries are spread over team-0 .. team-4
HTTP_VERB = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "patch": "PATCH",
    "update": "PUT",
    "create": "POST",
    "delete": "DELETE",
}
VERBS = tuple(HTTP_VERB.values())
WRITES = ("PATCH", "PUT", "POST", "DELETE")


def deployment(ns: str, name: str, version: str) -> dict[str, Any]:
    return podinfo.deployment(ns, version, name=name)


def canary(ns: str, name: str, interval: str) -> dict[str, Any]:
    """The Istio tutorial's Canary; 10 steps of 5% so that a run lasts well beyond the measuring window."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "progressDeadlineSeconds": 60,
            "service": {"port": 9898, "targetPort": 9898, "gateways": ["public-gateway.istio-system"]},
            "analysis": {
                "interval": interval,
                "threshold": 5,
                "stepWeight": 5,
                "maxWeight": 50,
                "metrics": [
                    {"name": "request-success-rate", "thresholdRange": {"min": 99}, "interval": "1m"},
                    {"name": "request-duration", "thresholdRange": {"max": 500}, "interval": "1m"},
                ],
            },
        },
    }


# -- the cluster process ---------------------------------------------------------------------------------


def cluster_main(conn: Connection, n: int, interval: str) -> None:
    asyncio.run(_cluster(conn, n, interval))


async def _cluster(conn: Connection, n: int, interval: str) -> None:
    import aiohttp.web
    import kmock
    from tests.kubeapi import KubeServer
    from tests.kubelet import ready_status

    from rheostat.plugins.kube import kinds

    async def query(_: aiohttp.web.Request) -> aiohttp.web.Response:
        sample = {"metric": {}, "value": [time.time(), "100"]}
        body = {"status": "success", "data": {"resultType": "vector", "result": [sample]}}
        return aiohttp.web.json_response(body)

    app = aiohttp.web.Application()
    app.router.add_route("*", "/api/v1/query", query)
    runner = aiohttp.web.AppRunner(app, access_log=None)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    prometheus = f"http://{host}:{port}"

    async with KubeServer() as server, kmock.Server(server):
        names = [(f"team-{i % NAMESPACES}", f"podinfo-{i}") for i in range(n)]
        for ns, name in names:
            server.add(deployment(ns, name, "6.0.0"))
            server.add(canary(ns, name, interval))

        async def kubelet() -> None:
            """Every Deployment that changed gets the status its spec asks for, as the kubelet reports."""
            seen = 0
            while True:
                fresh, seen = server.history[seen:], len(server.history)
                for _, kind, event, obj in fresh:
                    if kind is not kinds.DEPLOYMENT or event == "DELETED":
                        continue
                    meta = obj["metadata"]
                    now = server.object(kind, meta["namespace"], meta["name"])
                    if now is not None and now.get("status") != (want := ready_status(now)):
                        server.set_status(kind, meta["namespace"], meta["name"], want)
                await asyncio.sleep(0.1)

        def phases() -> dict[str, int]:
            return dict(
                Counter(
                    ((server.object(kinds.CANARY, ns, name) or {}).get("status") or {}).get("phase", "-")
                    for ns, name in names
                )
            )

        def settled(ns: str, name: str) -> bool:
            """The target scaled to 0 and the primary marked: the last writes of initialization."""
            target = server.object(kinds.DEPLOYMENT, ns, name) or {}
            primary = server.object(kinds.DEPLOYMENT, ns, f"{name}-primary") or {}
            marked = (primary.get("metadata", {}).get("annotations") or {}).get("rheostat.dev/initialized")
            return target.get("spec", {}).get("replicas") == 0 and marked == "true"

        def new_revision(version: str) -> None:
            """`kubectl set image` on every target."""
            for ns, name in names:
                key = server._key(kinds.DEPLOYMENT, ns, name)
                old = server.store[key]
                new = copy.deepcopy(old)
                new["spec"]["template"]["spec"]["containers"][0]["image"] = (
                    f"ghcr.io/stefanprodan/podinfo:{version}"
                )
                server._write(kinds.DEPLOYMENT, key, old, new, "kubectl")  # no public update in KubeServer

        def calls(since: int) -> dict[str, Any]:
            by_verb: Counter[str] = Counter()
            by_what: Counter[str] = Counter()
            lists: Counter[str] = Counter()
            for c in server.calls[since:]:
                verb = HTTP_VERB.get(c.verb, c.verb.upper())
                what = (c.kind.kind if c.kind else "?") + (f"/{c.subresource}" if c.subresource else "")
                by_verb[verb] += 1
                by_what[f"{verb} {what}"] += 1
                if verb == "LIST":
                    lists[what] += 1
            return {"mark": len(server.calls), "by_verb": by_verb, "by_what": by_what, "lists": lists}

        task = asyncio.get_running_loop().create_task(kubelet())
        conn.send({"kube": str(server.url).rstrip("/"), "prometheus": prometheus})
        try:
            while True:
                cmd, *arg = await asyncio.to_thread(conn.recv)
                if cmd == "stop":
                    break
                if cmd == "phases":
                    conn.send(phases())
                elif cmd == "scaled_to_zero":
                    conn.send(sum(settled(ns, name) for ns, name in names))
                elif cmd == "calls":
                    conn.send(calls(arg[0]))
                elif cmd == "new_revision":
                    new_revision(arg[0])
                    conn.send(True)
        finally:
            task.cancel()
            server.drop_watches()
            await runner.cleanup()
    conn.send("stopped")


@contextlib.contextmanager
def cluster(n: int, interval: str) -> Iterator[tuple[Connection, dict[str, Any]]]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=cluster_main, args=(theirs, n, interval), name="kmock", daemon=True)
    proc.start()
    try:
        if not ours.poll(120):
            raise RuntimeError("the kmock cluster did not start within 120 s")
        yield ours, {**ours.recv(), "pid": proc.pid}
    finally:
        with contextlib.suppress(OSError, EOFError):
            ours.send(("stop",))
            ours.poll(10)
        proc.join(10)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)


def ask(conn: Connection, *cmd: Any) -> Any:
    conn.send(cmd)
    return conn.recv()


# -- the controller process ------------------------------------------------------------------------------


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "kmock", "user": {"token": "bench"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}],
                "current-context": "kmock",
            }
        )
    )
    return path


@contextlib.contextmanager
def controller(tmp: Path, urls: dict[str, Any]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    cmd = [
        RHEOSTAT,
        "run",
        *("--kubeconfig", str(kubeconfig(tmp / "kubeconfig", urls["kube"]))),
        *("--metrics-server", urls["prometheus"]),
        *("--data-dir", str(tmp / "data")),
        *("--listen", f"127.0.0.1:{port}"),
    ]
    err = tmp / "run.err"
    with open(err, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while "serving" not in err.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`rheostat run` did not start: {err.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        yield proc, api
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        warnings = [line for line in err.read_text(errors="replace").splitlines() if " WARNING " in line]
        if warnings:
            print(f"\n({len(warnings)} warnings from `rheostat run`; the first: {warnings[0][:300]})")


def cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ticks(api: str) -> tuple[int, float]:
    """Ticks done so far, and the seconds they took (their wall time, waits on the API included)."""
    text = httpx.get(f"{api}/metrics", timeout=30).text

    def total(name: str) -> float:
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines() if line.startswith(name))

    return int(total("rheostat_canary_duration_seconds_count")), total("rheostat_canary_duration_seconds_sum")


@dataclass
class Window:
    name: str
    seconds: float
    ticks: int
    cpu_s: float
    cluster_cpu_s: float
    tick_s: float  # the ticks' wall time, summed
    by_verb: Counter[str]
    by_what: Counter[str]
    lists: Counter[str]
    phases: dict[str, int]

    def per_tick(self, count: int) -> float:
        return count / self.ticks if self.ticks else float("nan")

    @property
    def ms_per_tick(self) -> float:
        return 1000 * self.cpu_s / self.ticks if self.ticks else float("nan")

    @property
    def tick_ms(self) -> float:
        """A tick's mean wall time (not CPU): past the interval, the canary ticks late."""
        return 1000 * self.tick_s / self.ticks if self.ticks else float("nan")

    @property
    def writes(self) -> int:
        return sum(self.by_verb[v] for v in WRITES)

    def cpu_share(self, interval_s: float, at_s: float) -> float:
        """% of one core, scaled to the load of an `at_s` interval (ticks are as frequent as the interval)."""
        return 100 * self.cpu_s / self.seconds * interval_s / at_s


def measure(
    conn: Connection,
    proc: subprocess.Popen[bytes],
    kube_pid: int,
    api: str,
    name: str,
    seconds: float,
    profile: Path | None = None,
) -> Window:
    mark = ask(conn, "calls", 1 << 60)["mark"]
    t0, c0, (k0, d0), s0 = time.monotonic(), cpu_s(proc.pid), ticks(api), cpu_s(kube_pid)
    if profile is not None:  # py-spy's collapsed stacks of the controller over the window
        spy = ["py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "50"]
        subprocess.run([*spy, "--duration", str(int(seconds)), "-o", str(profile)], check=False)
    time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    (k1, d1), c1, t1, s1 = ticks(api), cpu_s(proc.pid), time.monotonic(), cpu_s(kube_pid)
    got = ask(conn, "calls", mark)
    return Window(
        name,
        t1 - t0,
        k1 - k0,
        c1 - c0,
        s1 - s0,
        d1 - d0,
        got["by_verb"],
        got["by_what"],
        got["lists"],
        ask(conn, "phases"),
    )


def wait_phase(conn: Connection, phase: str, n: int, timeout: float) -> float:
    """Seconds until all `n` Canaries are in `phase`."""
    t0 = time.monotonic()
    while (found := ask(conn, "phases")).get(phase, 0) < n:
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"not all {n} Canaries {phase} after {timeout:.0f} s: {found}")
        time.sleep(0.2)
    return time.monotonic() - t0


def run(n: int, interval_s: float, intervals: int, profile: Path | None = None) -> dict[str, Any]:
    interval = f"{interval_s:g}s"
    window = intervals * interval_s
    with (
        tempfile.TemporaryDirectory(prefix="rheostat-kube-bench-") as d,
        cluster(n, interval) as (conn, urls),
    ):
        tmp = Path(d)
        started = time.monotonic()
        with controller(tmp, urls) as (proc, api):
            wait_phase(conn, "Initialized", n, 20 * interval_s + 120)
            init_s = time.monotonic() - started  # from the start of `rheostat run`
            # "Initialized" is written after the first tick; the next one scales the target to 0 (Flagger).
            t0 = time.monotonic()
            while (done := ask(conn, "scaled_to_zero")) < n:
                if time.monotonic() - t0 > 10 * interval_s + 120:
                    raise RuntimeError(f"only {done} of {n} targets scaled to 0")
                time.sleep(0.5)
            settled_s = time.monotonic() - started
            time.sleep(2)
            startup = ask(conn, "calls", 0)
            rest = measure(conn, proc, urls["pid"], api, "at rest (all Initialized)", window)
            ask(conn, "new_revision", "6.0.1")
            progressing_s = wait_phase(conn, "Progressing", n, 3 * interval_s + 60)
            analysis = measure(
                conn, proc, urls["pid"], api, "during analysis (all Progressing)", window, profile
            )
            rss = rss_mib(proc.pid)
    return {
        "n": n,
        "interval_s": interval_s,
        "init_s": init_s,
        "settled_s": settled_s,
        "startup": startup,
        "progressing_s": progressing_s,
        "windows": [rest, analysis],
        "rss_mib": rss,
    }


def report(r: dict[str, Any]) -> None:
    n, interval_s = r["n"], r["interval_s"]
    print(
        f"{n} Canaries (Deployments behind Istio) in {NAMESPACES} namespaces, analysis interval "
        f"{interval_s:g} s; windows of {r['windows'][0].seconds:.0f} s.\n"
    )
    s = r["startup"]
    print(
        f"Start of `rheostat run` to all {n} Initialized: {r['init_s']:.1f} s; to every target scaled to 0 "
        f"(the next tick): {r['settled_s']:.1f} s. Requests until then: "
        + ", ".join(f"{v} {s['by_verb'][v]}" for v in VERBS if s["by_verb"][v])
        + f"; LISTs: {dict(s['lists'])}.\n"
    )
    print(f"New revision on every Deployment to all {n} Progressing: {r['progressing_s']:.1f} s.\n")
    print(
        "| window | canary-ticks | "
        + " | ".join(VERBS)
        + " | writes per canary-tick | LISTs in window | controller CPU, % of one core | CPU per canary-tick | "
        "a tick's wall time | "
        f"{n} canaries at a 10 s interval, % of one core | kmock's CPU |"
    )
    print("|---" * (len(VERBS) + 9) + "|")
    nominal = [n * w.seconds / interval_s for w in r["windows"]]
    for w, nom in zip(r["windows"], nominal, strict=True):
        cells = " | ".join(f"{w.per_tick(w.by_verb[v]):.2f}" for v in VERBS)
        print(
            f"| {w.name} | {w.ticks:,} ({nom:,.0f} at one per interval) | {cells} | {w.per_tick(w.writes):.2f} | {sum(w.lists.values())} | "
            f"{w.cpu_share(interval_s, interval_s):.1f}% | {w.ms_per_tick:.1f} ms | {w.tick_ms:,.0f} ms | "
            f"{w.ms_per_tick * n / 10 / 10:.0f}% | {100 * w.cluster_cpu_s / w.seconds:.0f}% |"
        )
    for w in r["windows"]:
        writes = {k: v for k, v in w.by_what.items() if k.split()[0] in WRITES}
        shown = ", ".join(f"{k} {w.per_tick(v):.2f}" for k, v in sorted(writes.items())) or "none"
        reads = ", ".join(
            f"{k} {w.per_tick(v):.2f}" for k, v in sorted(w.by_what.items()) if k.split()[0] not in WRITES
        )
        print(f"\n{w.name}: writes per canary-tick: {shown}; reads: {reads}; phases at the end: {w.phases}")
    print(f"\nController RSS at the end: {r['rss_mib']:.0f} MiB")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--canaries", type=int, default=500)
    p.add_argument("--interval", type=float, default=10.0, help="analysis interval, seconds")
    p.add_argument("--intervals", type=int, default=6, help="intervals per measuring window")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument(
        "--profile", type=Path, default=None, help="py-spy's collapsed stacks of the analysis window here"
    )
    args = p.parse_args(argv)
    r = run(args.canaries, args.interval, args.intervals, args.profile)
    report(r)
    if args.json is not None:
        out = {k: v for k, v in r.items() if k != "windows"}
        out["windows"] = [w.__dict__ for w in r["windows"]]
        args.json.write_text(json.dumps(out, indent=1, default=str))
    return r


if __name__ == "__main__":
    main()
