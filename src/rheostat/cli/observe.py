"""`rheostat logs [-f]` and `rheostat events [--watch]`."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from rheostat.cli.client import ApiError
from rheostat.cli.common import client, fail, fetch, ns_option, server_option, split_name
from rheostat.cli.output import clock
from rheostat.cli.stream import follow

HEADER = "==> "


def sections(text: str) -> dict[str, list[str]]:
    """The logs endpoint's answer, one list of lines per replica (`==> primary-0 <==` starts each)."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(HEADER) and line.endswith(" <=="):
            current = out.setdefault(line[len(HEADER) : -4], [])
        elif current is not None:
            current.append(line)
    return out


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of `now` (a later tail of the same log) after the part it shares with `before`: the longest
    end of `before` that `now` starts with. None shared (the log moved on by more than a tail, or the
    replica started again): all of `now`."""
    for k in range(min(len(before), len(now)), 0, -1):
        if before[-k:] == now[:k]:
            return now[k:]
    return now


def follow_logs(server: str, path: str, params: dict[str, Any], first: str, every_s: float) -> None:
    seen = sections(first)
    shown = list(seen)[-1] if seen else None
    c = client(server)
    try:
        while True:
            time.sleep(every_s)
            try:
                now = sections(c.text(path, **params))
            except ApiError as exc:
                fail(exc)
            for name, lines in now.items():
                fresh = new_lines(seen.get(name, []), lines)
                if fresh:
                    if name != shown:
                        click.echo(f"\n{HEADER}{name} <==")
                        shown = name
                    click.echo("\n".join(fresh))
                seen[name] = lines
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        c.close()


@click.command("logs", short_help="Print a workload's output (-f follows).")
@click.argument("workload")
@ns_option
@click.option(
    "--group",
    type=click.Choice(["primary", "canary"]),
    default=None,
    help="Only the primary's or only the canary's replicas (default: both).",
)
@click.option(
    "--tail", type=int, default=200, show_default=True, help="Lines of each replica's log to print."
)
@click.option(
    "-f",
    "--follow",
    "follow_",
    is_flag=True,
    help="Keep printing new lines until interrupted (the logs are read again every second).",
)
@server_option
def logs_cmd(workload: str, namespace: str, group: str | None, tail: int, follow_: bool, server: str) -> None:
    """Print the output of a workload's processes, one section per replica.

    \b
    Examples:
      rheostat logs web -n apps
      rheostat logs web -n apps --group canary -f
    """
    params: dict[str, Any] = {"tail": tail}
    if group:
        params["group"] = group
    path = f"/workloads/{split_name(workload, namespace)}/logs"
    text = fetch(server, path, text=True, **params)
    click.echo(text, nl=False)
    if follow_:
        sys.stdout.flush()
        follow_logs(server, path, params, text, every_s=1.0)


def event_line(e: dict[str, Any]) -> str:
    return f"{clock(e['ts'])} {e['type']:<7} {e['kind']} {e['key']} {e['reason']}: {e['message']}"


@click.command("events", short_help="Print events (--watch follows).")
@click.option(
    "--kind", default=None, help="Only events of this kind (Canary, Kustomization, GitRepository...)."
)
@click.option("--key", default=None, help="Only events of this object, NAMESPACE/NAME.")
@click.option("--for", "for_", default=None, help="KIND/NAMESPACE/NAME, as Flux's `events --for`.")
@click.option(
    "--limit", type=int, default=50, show_default=True, help="How many of the newest events to print."
)
@click.option(
    "-w",
    "--watch",
    "watch_",
    is_flag=True,
    help="After the newest events, print each new one as it happens, until interrupted.",
)
@server_option
def events_cmd(
    kind: str | None, key: str | None, for_: str | None, limit: int, watch_: bool, server: str
) -> None:
    """Print recent events, oldest first; with --watch, new ones as they happen (from the server's event
    stream, /api/v1/stream).

    \b
    Examples:
      rheostat events --for Canary/apps/web
      rheostat events --kind Kustomization --watch
    """
    if for_:
        kind, _, key = for_.partition("/")
    params: dict[str, Any] = {"limit": limit}
    if kind:
        params["kind"] = kind
    if key:
        params["key"] = key
    items = fetch(server, "/events", **params)["items"]
    for e in items:
        click.echo(event_line(e))
    if not watch_:
        return
    sys.stdout.flush()
    if items:
        after = items[-1]["id"]
    else:  # nothing of this kind yet: from the newest event of any kind on
        newest = fetch(server, "/events", limit=1)["items"]
        after = newest[-1]["id"] if newest else 0
    c = client(server)
    try:
        for m in follow(c, after=after):
            e = m.data
            if m.event != "event" or (kind and e["kind"] != kind) or (key and e["key"] != key):
                continue
            click.echo(event_line(e))
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        c.close()
