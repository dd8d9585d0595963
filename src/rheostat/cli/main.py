"""`rheostat` command."""

from __future__ import annotations

import asyncio
import difflib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import click
import yaml

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
    output_option,
    server_option,
    split_name,
    stdout,
    token_option,
)
from rheostat.cli.completion import completion_cmd
from rheostat.cli.describe import describe_cmd
from rheostat.cli.get import get_cmd
from rheostat.cli.install import install_cmd, uninstall_cmd
from rheostat.cli.kinds import find_kind, ready_of
from rheostat.cli.observe import events_cmd, logs_cmd
from rheostat.cli.output import print_table
from rheostat.cli.rollout import rollout_group
from rheostat.cli.run import down_cmd, run_cmd
from rheostat.cli.tutorial import tutorial_cmd
from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, load_file
from rheostat.rollout.simulate import shortest_promotion_s, simulate
from rheostat.util.durations import format_duration


@click.group()
@click.version_option(__version__, prog_name="rheostat")
def cli() -> None:
    """Progressive delivery with GitOps: Flagger's canaries and Flux's reconciliation in one process.

    Every command but `run`, `down`, `simulate`, `validate` and `bootstrap` talks to a running `rheostat run`
    over its HTTP API (--server, or RHEOSTAT_SERVER). `rheostat COMMAND --help` shows each command's
    options and examples.

    \b
    Examples:
      rheostat run --repo .
      rheostat get canaries
      rheostat rollout status web
    """


for _command in (
    run_cmd,
    down_cmd,
    tutorial_cmd,
    bootstrap_cmd,
    get_cmd,
    describe_cmd,
    rollout_group,
    logs_cmd,
    events_cmd,
    completion_cmd,
    install_cmd,
    uninstall_cmd,
):
    cli.add_command(_command)


@cli.command("simulate", short_help="Run a Canary on fakes, tick by tick.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--fail-from", type=click.IntRange(min=1), default=None, help="Metrics fail from this tick on.")
@click.option(
    "--ticks",
    type=click.IntRange(min=1, max=100000),
    default=200,
    show_default=True,
    help="Stop after this many ticks (analysis intervals).",
)
@output_option("table", "json")
@click.option("--name", default=None, help="Which Canary of the file, when it holds several.")
def simulate_cmd(path: Path, fail_from: int | None, ticks: int, output: str, name: str | None) -> None:
    """Run a Canary on in-memory fakes and print what each tick does: weights, checks, the outcome and the
    shortest time to promotion. Nothing runs, nothing is served.

    \b
    Examples:
      rheostat simulate apps/web/canary.yaml
      rheostat simulate canary.yaml --fail-from 3 -o json
    """
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
    rows = [
        [
            str(r.tick),
            format_duration(r.time_s),
            r.phase,
            str(r.primary),
            f"{r.canary}" + (" +mirror" if r.mirror else ""),
            str(r.failed_checks),
            str(r.iterations),
            r.message,
        ]
        for r in sim.rows
    ]
    print_table(
        ("TICK", "TIME", "PHASE", "PRIMARY", "CANARY", "FAILED", "ITERATIONS", "MESSAGE"),
        rows,
        title=f"{canary.metadata.key} ({canary.strategy.value}, interval {format_duration(sim.interval_s)})",
    )
    out.print(f"outcome: {sim.outcome}")
    if shortest is None:
        out.print("shortest time to promotion: never (the schedule does not reach promotion)")
    else:
        out.print(f"shortest time to promotion: {format_duration(shortest)}")


# (split_name, options and output helpers are in cli/common.py; run and down in cli/run.py)


def _action(name: str, help_text: str) -> None:
    example = f"\n\n\b\nExamples:\n  rheostat {name} web -n apps\n  rheostat {name} apps/web --server http://10.0.0.5:8470"

    @cli.command(name, help=help_text + " Needs the API token." + example)
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


@cli.command("demo", short_help="Releases promoted and rolled back, live.")
@click.option("--keep", is_flag=True, help="Leave everything running at the end and print the URLs.")
@click.option("--interval", default="2s", show_default=True, help="Analysis interval of the demo canary.")
def demo_cmd(keep: bool, interval: str) -> None:
    """A release promoted, one rolled back on errors, one on latency: real processes behind a real Envoy.

    \b
    Examples:
      rheostat demo
      rheostat demo --keep --interval 5s
    """
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


flux_ns_option = click.option(
    "-n", "--namespace", default="flux-system", show_default=True, help="The namespace of the object."
)


def gitops_kind(kind: str) -> str:
    """The API's plural of a source or Kustomization kind, by any of its names (source, gitrepository, ks...)."""
    try:
        plural = find_kind(kind).plural
    except ValueError:
        plural = ""
    if plural not in ("sources", "kustomizations", "helmreleases", "helmrepositories", "helmcharts"):
        fail(ValueError(f"unknown kind {kind!r}; use source, kustomization or helmrelease"))
    return plural


@cli.group("flags", short_help="Evaluate a flag; the kill switch.")
def flags_group() -> None:
    """Evaluate a flag, and the kill switch (`rheostat get flags` lists them).

    \b
    Examples:
      rheostat flags eval new-checkout --context '{"targetingKey": "u1"}'
      rheostat flags disable new-checkout --reason "incident 42"
    """


@flags_group.command("eval")
@click.argument("key")
@click.option("--context", "context", default="{}", show_default=True, help="Evaluation context as JSON.")
@output_option("table", "json")
@server_option
def flags_eval(key: str, context: str, output: str, server: str) -> None:
    """What KEY answers for a context: value, variant and reason (as OFREP would).

    \b
    Examples:
      rheostat flags eval new-checkout
      rheostat flags eval new-checkout --context '{"targetingKey": "u1", "plan": "pro"}' -o json
    """
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
    """Kill switch: KEY answers DISABLED at once, for everyone, until Git agrees or `flags enable`.

    \b
    Example:
      rheostat flags disable new-checkout --reason "checkout errors, incident 42"
    """
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
    """Lift the kill switch: Git's definition of KEY serves again.

    \b
    Example:
      rheostat flags enable new-checkout
    """
    post(server, token, data_dir, f"/flags/{key}/enable")
    stdout().print(f"flag {key} serves Git's definition again", highlight=False)


@cli.command("reconcile", short_help="Reconcile a source or Kustomization now.")
@click.argument("kind")
@click.argument("name")
@flux_ns_option
@click.option("--with-source", is_flag=True, help="Fetch the Kustomization's source first.")
@click.option(
    "--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait for the reconcile to end."
)
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
    """Reconcile a source, a Kustomization or a HelmRelease now, and wait until it is done (exit 1 if it is not Ready).

    KIND is source (gitrepository), kustomization (ks) or helmrelease (hr).

    \b
    Examples:
      rheostat reconcile source flux-system
      rheostat reconcile ks flux-system --with-source
    """
    plural = gitops_kind(kind)
    started = time.time()
    query = "?withSource=true" if with_source else ""
    post(server, token, data_dir, f"/{plural}/{namespace}/{name}/reconcile{query}")
    # Progress on stderr, as flux prints it; stdout keeps the one result line scripts read.
    also = " and its source" if with_source else ""
    err.print(f"reconcile requested for {kind} {namespace}/{name}{also}", highlight=False)
    err.print(f"waiting for it to finish (up to {timeout:g}s)", highlight=False)
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


@cli.command("suspend", short_help="Stop reconciling a source or Kustomization.")
@click.argument("kind")
@click.argument("name")
@flux_ns_option
@server_option
@token_option
@data_dir_option
def suspend_cmd(kind: str, name: str, namespace: str, server: str, token: str | None, data_dir: Path) -> None:
    """Stop reconciling a source, a Kustomization or a HelmRelease (what it applied keeps running).

    \b
    Example:
      rheostat suspend kustomization flux-system
    """
    post(server, token, data_dir, f"/{gitops_kind(kind)}/{namespace}/{name}/suspend")
    click.echo(f"suspended {kind} {namespace}/{name}")


@cli.command("resume", short_help="Resume a canary, source or Kustomization.")
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
    """`resume CANARY` ticks a paused canary again; `resume KIND NAME` a suspended source, Kustomization or HelmRelease.

    \b
    Examples:
      rheostat resume web -n apps
      rheostat resume ks flux-system
    """
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


@cli.command("diff", short_help="What the next reconcile would change.")
@click.argument("args", nargs=-1)
@flux_ns_option
@server_option
def diff_cmd(args: tuple[str, ...], namespace: str, server: str) -> None:
    """What the next reconcile of a Kustomization would change (exit 0: nothing, 1: changes).

    \b
    Examples:
      rheostat diff kustomization flux-system
      rheostat diff apps -n flux-system
    """
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


@cli.command("trace", short_help="Which source and file made an object.")
@click.argument("target")
@ns_option
@server_option
def trace_cmd(target: str, namespace: str, server: str) -> None:
    """Which source, commit, Kustomization and file made an object.

    \b
    Examples:
      rheostat trace Workload/web -n apps
      rheostat trace Canary/web -n apps
    """
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


@cli.command("validate", short_help="Check manifests offline.")
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
@output_option("table", "json", "sarif")
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
        rows = [[r.level, r.rule, r.object, r.file, r.message] for r in results]
        print_table(("LEVEL", "RULE", "OBJECT", "FILE", "MESSAGE"), rows)
        stdout().print(f"{sum(r.level == 'error' for r in results)} error(s), {len(results)} finding(s)")
    sys.exit(1 if any(r.level == "error" for r in results) else 0)


def main() -> None:
    cli()
