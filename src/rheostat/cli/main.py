"""`rheostat` command."""

from __future__ import annotations

import asyncio
import json
import math
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from rheostat import __version__
from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, load_file
from rheostat.rollout.simulate import shortest_promotion_s, simulate
from rheostat.util.durations import format_duration

err = Console(stderr=True)


@click.group()
@click.version_option(__version__, prog_name="rheostat")
def cli() -> None:
    """Progressive delivery with GitOps."""


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
    out = Console()
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


def main() -> None:
    cli()
