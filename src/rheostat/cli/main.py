"""`rheostat` command."""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import yaml
from rich.table import Table

from rheostat import __version__
from rheostat.cli.bootstrap import bootstrap_cmd
from rheostat.cli.client import ApiError
from rheostat.cli.common import (
    client,
    data_dir_option,
    err,
    fail,
    fetch,
    ns_option,
    print_items,
    server_option,
    split_name,
    stdout,
    token_option,
)
from rheostat.cli.run import down_cmd, run_cmd
from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, load_file
from rheostat.rollout.simulate import shortest_promotion_s, simulate
from rheostat.util.durations import format_duration


@click.group()
@click.version_option(__version__, prog_name="rheostat")
def cli() -> None:
    """Progressive delivery with GitOps."""


cli.add_command(run_cmd)
cli.add_command(down_cmd)
cli.add_command(bootstrap_cmd)


@cli.command("simulate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fail-from", type=click.IntRange(min=1), default=None, help="Metrics fail from this tick on.")
@click.option("--ticks", type=click.IntRange(min=1, max=100000), default=200, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--name", default=None, help="Which Canary of the file, when it holds several.")
def simulate_cmd(path: Path, fail_from: int | None, ticks: int, output: str, name: str | None) -> None:
    """Run a Canary on in-memory fakes and print what each tick does."""
    try:
        objects = load_file(path)
    except ManifestError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(2)
    canaries = [o for o in objects if isinstance(o, Canary) and (name is None or o.metadata.name == name)]
    if len(canaries) != 1:
        err.print(f"[red]error:[/red] {path}: expected one Canary, found {len(canaries)} (use --name)")
        sys.exit(2)
    canary = canaries[0]
    sim = asyncio.run(simulate(canary, ticks=ticks, fail_from=fail_from))
    best = (
        shortest_promotion_s(sim)
        if fail_from is None
        else shortest_promotion_s(asyncio.run(simulate(canary, ticks=ticks)))
    )
    shortest = None if math.isinf(best) else best
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "canary": canary.metadata.key,
                    "strategy": canary.strategy.value,
                    "interval": sim.interval_s,
                    "outcome": sim.outcome,
                    "shortestPromotionSeconds": shortest,
                    "ticks": [r.to_json() for r in sim.rows],
                },
                indent=2,
            )
        )
        return
    out = stdout()
    table = Table(
        title=f"{canary.metadata.key} ({canary.strategy.value}, interval {format_duration(sim.interval_s)})"
    )
    for col in ("tick", "time", "phase", "primary", "canary", "failed", "iterations", "message"):
        table.add_column(
            col, justify="right" if col in ("tick", "primary", "canary", "failed", "iterations") else "left"
        )
    for r in sim.rows:
        canary_cell = f"{r.canary}" + (" +mirror" if r.mirror else "")
        table.add_row(
            str(r.tick),
            format_duration(r.time_s),
            r.phase,
            str(r.primary),
            canary_cell,
            str(r.failed_checks),
            str(r.iterations),
            r.message,
        )
    out.print(table)
    out.print(f"outcome: {sim.outcome}")
    if shortest is None:
        out.print("shortest time to promotion: never (the schedule does not reach promotion)")
    else:
        out.print(f"shortest time to promotion: {format_duration(shortest)}")


# (split_name, options and output helpers are in cli/common.py; run and down in cli/run.py)


@cli.group("get")
def get_group() -> None:
    """List objects of the running server."""


@get_group.command("canaries")
@server_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get_canaries(server: str, output: str) -> None:
    def row(it: dict[str, Any]) -> list[str]:
        st = it["status"]
        return [
            it["metadata"]["namespace"],
            it["metadata"]["name"],
            it["strategy"],
            st["phase"],
            str(st["canaryWeight"]),
            str(st["failedChecks"]),
            str(st["iterations"]),
            st["message"],
        ]

    columns = ("NAMESPACE", "NAME", "STRATEGY", "PHASE", "WEIGHT", "FAILED", "ITERATIONS", "MESSAGE")
    print_items(fetch(server, "/canaries")["items"], output, columns, row)


@get_group.command("workloads")
@server_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get_workloads(server: str, output: str) -> None:
    def group(g: dict[str, Any] | None) -> str:
        if not g:
            return "-"
        ready = sum(1 for r in g.get("replicas") or [] if r.get("ready"))
        return f"{ready}/{g.get('desired', 0)}"

    def row(it: dict[str, Any]) -> list[str]:
        st = it.get("status", {})
        return [
            it["metadata"]["namespace"],
            it["metadata"]["name"],
            ", ".join(it.get("canaries", [])),
            group(st.get("primary")),
            group(st.get("canary")),
            str(st.get("revision", "-")),
        ]

    columns = ("NAMESPACE", "NAME", "CANARIES", "PRIMARY", "CANARY", "REVISION")
    print_items(fetch(server, "/workloads")["items"], output, columns, row)


def _action(name: str, help_text: str) -> None:
    @cli.command(name, help=help_text)
    @click.argument("canary")
    @ns_option
    @server_option
    @token_option
    @data_dir_option
    def command(canary: str, namespace: str, server: str, token: str | None, data_dir: Path) -> None:
        c = client(server, token, data_dir)
        try:
            c.post(f"/canaries/{split_name(canary, namespace)}/{name}")
        except ApiError as exc:
            fail(exc)
        finally:
            c.close()
        click.echo(f"{name}: requested for {split_name(canary, namespace)}")


for _name, _help in (
    ("promote", "Skip the rest of the analysis and promote the canary now."),
    ("abort", "Roll the canary back now."),
    ("approve", "Open the canary's confirm-* gates for this run."),
    ("halt", "Hold the canary's traffic where it is; checks go on."),
    ("unhalt", "Let a halted canary advance again."),
    ("pause", "Stop ticking the canary until resumed."),
):
    _action(_name, _help)


@cli.command("logs")
@click.argument("workload")
@ns_option
@click.option("--group", type=click.Choice(["primary", "canary"]), default=None)
@click.option("--tail", type=int, default=200, show_default=True)
@server_option
def logs_cmd(workload: str, namespace: str, group: str | None, tail: int, server: str) -> None:
    """Print the output of a workload's processes."""
    params: dict[str, Any] = {"tail": tail}
    if group:
        params["group"] = group
    click.echo(
        fetch(server, f"/workloads/{split_name(workload, namespace)}/logs", text=True, **params), nl=False
    )


@cli.command("events")
@click.option("--kind", default=None)
@click.option("--key", default=None)
@click.option("--for", "for_", default=None, help="Kind/namespace/name, as Flux's `events --for`.")
@click.option("--limit", type=int, default=50, show_default=True)
@server_option
def events_cmd(kind: str | None, key: str | None, for_: str | None, limit: int, server: str) -> None:
    """Print recent events."""
    if for_:
        kind, _, key = for_.partition("/")
    params: dict[str, Any] = {"limit": limit}
    if kind:
        params["kind"] = kind
    if key:
        params["key"] = key
    items = fetch(server, "/events", **params)["items"]
    for e in items:
        when = time.strftime("%H:%M:%S", time.localtime(e["ts"]))
        click.echo(f"{when} {e['type']:<7} {e['kind']} {e['key']} {e['reason']}: {e['message']}")


@cli.command("demo")
@click.option("--keep", is_flag=True, help="Leave everything running at the end and print the URLs.")
@click.option("--interval", default="2s", show_default=True, help="Analysis interval of the demo canary.")
def demo_cmd(keep: bool, interval: str) -> None:
    """A release promoted, one rolled back on errors, one on latency: real processes behind a real Envoy."""
    from rheostat.demo.run import run_demo

    sys.exit(asyncio.run(run_demo(keep=keep, interval=interval)))


def post(
    server: str, token: str | None, data_dir: Path, path: str, body: dict[str, Any] | None = None
) -> Any:
    c = client(server, token, data_dir)
    try:
        return c.post(path, body)
    except ApiError as exc:
        fail(exc)
    finally:
        c.close()


GITOPS_KINDS = {
    "source": "sources",
    "sources": "sources",
    "gitrepository": "sources",
    "kustomization": "kustomizations",
    "kustomizations": "kustomizations",
    "ks": "kustomizations",
}
flux_ns_option = click.option("-n", "--namespace", default="flux-system", show_default=True)


def gitops_kind(kind: str) -> str:
    try:
        return GITOPS_KINDS[kind.lower()]
    except KeyError:
        fail(ValueError(f"unknown kind {kind!r}; use source or kustomization"))


def ready_of(item: dict[str, Any]) -> dict[str, Any]:
    for c in item.get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return dict(c)
    return {"status": "Unknown", "message": ""}


def gitops_rows(revision: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], list[str]]:
    def row(it: dict[str, Any]) -> list[str]:
        st = it.get("status", {})
        suspended = it["spec"].get("suspend", False) or st.get("suspended", False)
        ready = ready_of(it)
        meta = it["metadata"]
        return [
            meta["namespace"],
            meta["name"],
            ready["status"],
            revision(st),
            str(suspended),
            ready["message"],
        ]

    return row


GITOPS_COLUMNS = ("NAMESPACE", "NAME", "READY", "REVISION", "SUSPENDED", "MESSAGE")


@get_group.command("sources")
@server_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get_sources(server: str, output: str) -> None:
    row = gitops_rows(lambda st: (st.get("artifact") or {}).get("revision", ""))
    print_items(fetch(server, "/sources")["items"], output, GITOPS_COLUMNS, row)


@get_group.command("kustomizations")
@server_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get_kustomizations(server: str, output: str) -> None:
    row = gitops_rows(lambda st: st.get("lastAppliedRevision", ""))
    print_items(fetch(server, "/kustomizations")["items"], output, GITOPS_COLUMNS, row)


@get_group.command("violations")
@server_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get_violations(server: str, output: str) -> None:
    """What the policies flagged: revisions the gate blocked, and live objects the audit found."""

    def row(it: dict[str, Any]) -> list[str]:
        return [
            it["action"] if it["kind"] == "violation" else "error",
            it["policy"],
            it["object"],
            it["commit"][:24],
            it["found_by"],
            it["message"],
        ]

    columns = ("ACTION", "POLICY", "OBJECT", "COMMIT", "FOUND BY", "MESSAGE")
    print_items(fetch(server, "/violations")["items"], output, columns, row)


@get_group.command("flags")
@server_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def get_flags(server: str, output: str) -> None:
    """Feature flags: the state served, the default, a rollout's share, the kill switch and drift."""

    def row(it: dict[str, Any]) -> list[str]:
        rollout = it.get("rollout") or {}
        if rollout.get("active"):
            split = f"{rollout['share']}% new ({rollout.get('canary') or 'no canary'})"
        else:
            split = "-"
        return [
            it["key"],
            it["state"],
            str(it.get("defaultVariant") or "-"),
            ", ".join(it["variants"]),
            split,
            it["revision"][:24],
            it.get("drift") or "",
        ]

    columns = ("FLAG", "STATE", "DEFAULT", "VARIANTS", "ROLLOUT", "REVISION", "MESSAGE")
    print_items(fetch(server, "/flags")["items"], output, columns, row)


@cli.group("flags")
def flags_group() -> None:
    """Evaluate a flag, and the kill switch."""


@flags_group.command("eval")
@click.argument("key")
@click.option("--context", "context", default="{}", show_default=True, help="Evaluation context as JSON.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@server_option
def flags_eval(key: str, context: str, output: str, server: str) -> None:
    """What KEY answers for a context: value, variant and reason (as OFREP would)."""
    try:
        parsed = json.loads(context)
    except json.JSONDecodeError as exc:
        fail(ValueError(f"--context is not JSON: {exc.msg} at {exc.pos}"))
    if not isinstance(parsed, dict):
        fail(ValueError("--context must be a JSON object"))
    answer = fetch(server, f"/flags/{key}/evaluate", context=json.dumps(parsed))
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
        return
    out = stdout()
    value = json.dumps(answer["value"]) if "value" in answer else "(the caller's default)"
    out.print(f"value:   {value}", highlight=False)
    out.print(f"variant: {answer.get('variant') or '-'}", highlight=False)
    out.print(f"reason:  {answer['reason']}", highlight=False)
    if "errorCode" in answer:
        out.print(f"error:   {answer['errorCode']}: {answer.get('errorDetails', '')}", highlight=False)
        sys.exit(1)


@flags_group.command("disable")
@click.argument("key")
@click.option("--reason", default="", help="Why, kept with the kill and shown in events.")
@server_option
@token_option
@data_dir_option
def flags_disable(key: str, reason: str, server: str, token: str | None, data_dir: Path) -> None:
    """Kill switch: KEY answers DISABLED at once, for everyone, until Git agrees or `flags enable`."""
    item = post(server, token, data_dir, f"/flags/{key}/disable", {"reason": reason})
    stdout().print(f"flag {key} disabled", highlight=False)
    if item.get("drift"):
        stdout().print(item["drift"], highlight=False)


@flags_group.command("enable")
@click.argument("key")
@server_option
@token_option
@data_dir_option
def flags_enable(key: str, server: str, token: str | None, data_dir: Path) -> None:
    """Lift the kill switch: Git's definition of KEY serves again."""
    post(server, token, data_dir, f"/flags/{key}/enable")
    stdout().print(f"flag {key} serves Git's definition again", highlight=False)


@cli.command("reconcile")
@click.argument("kind")
@click.argument("name")
@flux_ns_option
@click.option("--with-source", is_flag=True, help="Fetch the Kustomization's source first.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@server_option
@token_option
@data_dir_option
def reconcile_cmd(
    kind: str,
    name: str,
    namespace: str,
    with_source: bool,
    timeout: float,
    server: str,
    token: str | None,
    data_dir: Path,
) -> None:
    """Reconcile a source or a Kustomization now, and wait until it is done."""
    plural = gitops_kind(kind)
    started = time.time()
    query = "?withSource=true" if with_source else ""
    post(server, token, data_dir, f"/{plural}/{namespace}/{name}/reconcile{query}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = fetch(server, f"/{plural}")["items"]
        item = next(
            (i for i in items if i["metadata"]["name"] == name and i["metadata"]["namespace"] == namespace),
            None,
        )
        if item is not None and item.get("status", {}).get("lastHandledReconcileAt", 0) >= started - 1:
            ready = ready_of(item)
            click.echo(f"{kind} {namespace}/{name}: Ready={ready['status']}: {ready['message']}")
            sys.exit(0 if ready["status"] != "False" else 1)
        time.sleep(0.2)
    fail(TimeoutError(f"{kind} {namespace}/{name} was not reconciled within {timeout:g}s"))


@cli.command("suspend")
@click.argument("kind")
@click.argument("name")
@flux_ns_option
@server_option
@token_option
@data_dir_option
def suspend_cmd(kind: str, name: str, namespace: str, server: str, token: str | None, data_dir: Path) -> None:
    """Stop reconciling a source or a Kustomization (what it applied keeps running)."""
    post(server, token, data_dir, f"/{gitops_kind(kind)}/{namespace}/{name}/suspend")
    click.echo(f"suspended {kind} {namespace}/{name}")


@cli.command("resume")
@click.argument("args", nargs=-1, required=True)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="default: flux-system for sources and Kustomizations, default for canaries",
)
@server_option
@token_option
@data_dir_option
def resume_cmd(
    args: tuple[str, ...], namespace: str | None, server: str, token: str | None, data_dir: Path
) -> None:
    """`resume CANARY` ticks a paused canary again; `resume KIND NAME` a suspended source or Kustomization."""
    if len(args) == 1:
        key = split_name(args[0], namespace or "default")
        post(server, token, data_dir, f"/canaries/{key}/resume")
        click.echo(f"resume: requested for {key}")
    elif len(args) == 2:
        ns = namespace or "flux-system"
        post(server, token, data_dir, f"/{gitops_kind(args[0])}/{ns}/{args[1]}/resume")
        click.echo(f"resumed {args[0]} {ns}/{args[1]}")
    else:
        fail(ValueError("expected CANARY, or KIND NAME"))


@cli.command("diff")
@click.argument("args", nargs=-1)
@flux_ns_option
@server_option
def diff_cmd(args: tuple[str, ...], namespace: str, server: str) -> None:
    """What the next reconcile of a Kustomization would change (exit 0: nothing, 1: changes)."""
    name = args[-1] if args else "flux-system"
    data = fetch(server, f"/kustomizations/{namespace}/{name}/diff")
    changes = 0
    for item in data["created"]:
        click.echo(f"+ {item['object']} ({item['file']})")
        changes += 1
    for item in [*data["updated"], *data["drifted"]]:
        drifted = " (drifted from Git)" if item in data["drifted"] else ""
        click.echo(f"~ {item['object']} ({item['file']}){drifted}")
        live = yaml.safe_dump(item["live"], sort_keys=True).splitlines()
        git = yaml.safe_dump(item["git"], sort_keys=True).splitlines()
        for line in difflib.unified_diff(live, git, "live", "git", lineterm="", n=2):
            click.echo(f"    {line}")
        changes += 1
    for obj in data["pruned"]:
        click.echo(f"- {obj}")
        changes += 1
    click.echo(f"{namespace}/{name} at {data['revision']}: {changes} change(s)")
    sys.exit(1 if changes else 0)


@cli.command("trace")
@click.argument("target")
@click.option("-n", "--namespace", default="default", show_default=True)
@server_option
def trace_cmd(target: str, namespace: str, server: str) -> None:
    """Which source, commit, Kustomization and file made an object: `trace Workload/web -n apps`."""
    kind, _, name = target.partition("/")
    if not name:
        fail(ValueError("expected KIND/NAME, e.g. Workload/web"))
    t = fetch(server, f"/trace/{kind}/{split_name(name, namespace)}")
    for label, value in (
        ("object", t["object"]),
        ("kustomization", t["kustomization"]),
        ("source", f"{t['source']} ({t['url']})"),
        ("revision", t["revision"]),
        ("file", t["file"]),
    ):
        click.echo(f"{label:<14} {value}")


@cli.command("validate")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--starter", is_flag=True, help="Also check against the starter policy library.")
@click.option(
    "--cluster",
    is_flag=True,
    help="Check the Canaries as `rheostat run --kubeconfig` runs them (Deployments behind a mesh), not as the "
    "embedded default does.",
)
@click.option(
    "--mesh-provider",
    default="istio",
    show_default=True,
    help="With --cluster: the provider of a Canary that sets none.",
)
@click.option("-o", "--output", type=click.Choice(["table", "json", "sarif"]), default="table")
def validate_cmd(
    paths: tuple[Path, ...], starter: bool, cluster: bool, mesh_provider: str, output: str
) -> None:
    """Check manifests offline: schemas, the checks `run` makes across objects, and the policies found among
    them (exit 1 on an error).

    \b
    Examples:
      rheostat validate deploy/
      rheostat validate --cluster --mesh-provider linkerd flagger-canaries/
    """
    from rheostat.cli.validate import sarif, validate
    from rheostat.plugins.routers import ROUTERS
    from rheostat.reactor.cluster import cluster_catalogue
    from rheostat.rollout.backends import EMBEDDED

    catalogue = cluster_catalogue(ROUTERS.names(), mesh_provider) if cluster else EMBEDDED
    results = validate(paths, starter=starter, catalogue=catalogue)
    if output == "json":
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    elif output == "sarif":
        click.echo(json.dumps(sarif(results), indent=2))
    else:
        table = Table()
        for col in ("LEVEL", "RULE", "OBJECT", "FILE", "MESSAGE"):
            table.add_column(col, no_wrap=col != "MESSAGE")
        for r in results:
            table.add_row(r.level, r.rule, r.object, r.file, r.message)
        stdout().print(table)
        stdout().print(f"{sum(r.level == 'error' for r in results)} error(s), {len(results)} finding(s)")
    sys.exit(1 if any(r.level == "error" for r in results) else 0)


def main() -> None:
    cli()
