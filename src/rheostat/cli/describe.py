"""`rheostat describe canary NAME`: what it is set to do, where it is, how its last run went, its events."""

from __future__ import annotations

from typing import Any

import click

from rheostat.cli.common import fetch, namespace_option, server_option
from rheostat.cli.get import complete_name, fetch_items, one
from rheostat.cli.kinds import Item, find_kind
from rheostat.cli.output import age, clock, plain_lines

RUNNING = {"Progressing", "Waiting", "WaitingPromotion", "Promoting", "Finalising"}
ENDS = {"Succeeded": "promoted", "Failed": "rolled back"}


def matches(rules: list[dict[str, Any]]) -> str:
    """An A/B test's match rules as words: `header x-canary exact "insider"`; rules are alternatives."""
    out = []
    for rule in rules:
        parts: list[str] = []
        for where, label in (("headers", "header"), ("queryParams", "query")):
            for name, m in (rule.get(where) or {}).items():
                parts.extend(f'{label} {name} {op} "{v}"' for op, v in m.items() if v is not None)
        parts.extend(f"source label {k}={v}" for k, v in (rule.get("sourceLabels") or {}).items())
        out.append(" and ".join(parts))
    return " or ".join(out) or "-"


def strategy_line(item: Item) -> str:
    a = analysis_of(item)
    strategy = item["strategy"]
    if strategy == "ab-testing":
        detail = f"{a.get('iterations')} iterations to users matching {matches(a.get('match') or [])}"
    elif strategy == "blue-green":
        detail = f"{a.get('iterations')} iterations on the canary, then all traffic switches"
    elif a.get("stepWeights"):
        detail = f"weights {', '.join(map(str, a['stepWeights']))}%"
    else:
        detail = f"+{a.get('stepWeight')}% a step up to {a.get('maxWeight', 100)}%"
    if a.get("mirror"):
        detail += f", mirrored ({a.get('mirrorWeight') or 100}% of requests copied)"
    return f"{strategy}: {detail}"


def analysis_of(item: Item) -> dict[str, Any]:
    spec = item["spec"]
    return dict(spec.get("analysis") or spec.get("canaryAnalysis") or {})


def threshold(m: dict[str, Any]) -> str:
    low, high = m.get("min"), m.get("max")
    if low is not None and high is not None:
        return f"{low:g}..{high:g}"
    if low is not None:
        return f">= {low:g}"
    if high is not None:
        return f"<= {high:g}"
    return "-"


def spec_threshold(m: dict[str, Any]) -> str:
    r = m.get("thresholdRange") or {}
    if not r and m.get("threshold") is not None:
        return f"threshold {m['threshold']}"
    return threshold(r)


def last_run(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The history rows of the newest run: its running rows and the row that ended it."""
    i = len(rows) - 1
    while i >= 0 and rows[i]["phase"] not in RUNNING:
        i -= 1
    if i < 0:
        return []
    end = i + 1 if i + 1 < len(rows) and rows[i + 1]["phase"] in ENDS else i
    while i > 0 and rows[i - 1]["phase"] in RUNNING:
        i -= 1
    return rows[i : end + 1]


def checks(run: list[dict[str, Any]]) -> list[list[str]]:
    """One row per metric of the run: its newest value against its threshold, and how often it failed."""
    by_name: dict[str, dict[str, Any]] = {}
    for row in run:
        for m in row.get("metrics") or []:
            seen = by_name.setdefault(m["name"], {"passed": 0, "failed": 0})
            seen["passed" if m["ok"] else "failed"] += 1
            seen["last"] = m
    out = []
    for name, seen in by_name.items():
        m = seen["last"]
        value = "-" if m.get("value") is None else f"{m['value']:.4g}"
        primary = "-" if m.get("primaryValue") is None else f"{m['primaryValue']:.4g}"
        out.append(
            [
                name,
                value,
                primary,
                threshold(m),
                str(seen["passed"]),
                str(seen["failed"]),
                m.get("message") or "",
            ]
        )
    return out


def field(label: str, value: Any, indent: int = 0) -> None:
    click.echo(f"{' ' * indent}{label + ':':<{22 - indent}}{value}")


def table(columns: tuple[str, ...], rows: list[list[str]], indent: int = 2) -> None:
    for line in plain_lines(columns, rows):
        click.echo(" " * indent + line)


def describe_canary(item: Item, history: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    meta, spec, st = item["metadata"], item["spec"], item["status"]
    a = analysis_of(item)
    target = spec["targetRef"]
    field("Name", meta["name"])
    field("Namespace", meta["namespace"])
    field("Target", f"{target['kind']}/{target['name']} ({target['apiVersion']})")
    field("Provider", spec.get("provider") or "default (the router `rheostat run` was started with)")
    field("Strategy", strategy_line(item))
    click.echo("Analysis:")
    field("Interval", a.get("interval", "60s"), 2)
    field("Threshold", f"{a.get('threshold', 1)} failed checks roll back", 2)
    field("Judge", a.get("judge", "threshold") + (", promotes early" if a.get("promoteEarly") else ""), 2)
    field("Deadline", f"{spec.get('progressDeadlineSeconds', 600)}s without progress rolls back", 2)
    metrics = [[m["name"], spec_threshold(m), m.get("interval", "1m")] for m in a.get("metrics") or []]
    if metrics:
        click.echo("  Metrics:")
        table(("NAME", "THRESHOLD", "INTERVAL"), metrics, 4)
    hooks = [[h["name"], h.get("type") or "rollout", h["url"]] for h in a.get("webhooks") or []]
    if hooks:
        click.echo("  Webhooks:")
        table(("NAME", "TYPE", "URL"), hooks, 4)
    click.echo("Status:")
    field("Phase", st["phase"], 2)
    field("Weights", f"primary {st['primaryWeight']}%, canary {st['canaryWeight']}%", 2)
    field("Iterations", st["iterations"], 2)
    field("Failed checks", f"{st['failedChecks']} of {a.get('threshold', 1)}", 2)
    field("Last transition", f"{age(st.get('lastTransitionTime'))} ago", 2)
    field("Revision", st.get("lastAppliedSpec") or "-", 2)
    field("Promoted revision", st.get("lastPromotedSpec") or "-", 2)
    if st.get("manual"):
        field("Requested", ", ".join(f"{k}={v}" for k, v in st["manual"].items()), 2)
    field("Message", st["message"] or "-", 2)
    run = last_run(history)
    click.echo("Last run:")
    if not run:
        click.echo("  none yet (the canary has not analysed a new revision)")
    else:
        end = run[-1]
        outcome = ENDS.get(end["phase"], "in progress")
        if end["phase"] == "Failed":
            outcome += f": {end['message']}"
        field("Started", f"{clock(run[0]['ts'])} ({age(run[0]['ts'])} ago)", 2)
        if end["phase"] in ENDS:
            field("Ended", f"{clock(end['ts'])} after {age(run[0]['ts'], end['ts'])}", 2)
        field("Outcome", outcome, 2)
        field("Top weight", f"{max(r['canaryWeight'] for r in run)}%", 2)
        rows = checks(run)
        if rows:
            click.echo("  Checks:")
            table(("METRIC", "LAST", "PRIMARY", "THRESHOLD", "PASSED", "FAILED", "MESSAGE"), rows, 4)
        else:
            click.echo("  Checks: none recorded (no metrics, or none measured yet)")
    click.echo("Events:")
    if not events:
        click.echo("  <none>")
    rows = [[clock(e["ts"]), e["type"], e["reason"], e["message"]] for e in events]
    if rows:
        table(("TIME", "TYPE", "REASON", "MESSAGE"), rows)


@click.command("describe", short_help="Show a canary in full.")
@click.argument("kind", type=click.Choice(["canary", "canaries", "cd"], case_sensitive=False))
@click.argument("name", shell_complete=complete_name)
@namespace_option
@click.option(
    "--events",
    "limit",
    type=click.IntRange(0, 500),
    default=20,
    show_default=True,
    help="How many of the canary's newest events to show.",
)
@server_option
def describe_cmd(kind: str, name: str, namespace: str | None, limit: int, server: str) -> None:
    """Show one canary in full: its spec in words (target, provider, strategy, analysis), its status, the
    checks of its last run (each metric's newest value, threshold, passes and failures), and its events.

    \b
    Examples:
      rheostat describe canary web
      rheostat describe canary apps/web --events 50
    """
    k = find_kind(kind)
    item = one(k, fetch_items(k, server), name, namespace)
    key = k.key(item)
    history = fetch(server, f"/canaries/{key}/history")["items"]
    events = fetch(server, "/events", kind="Canary", key=key, limit=max(limit, 1))["items"] if limit else []
    describe_canary(item, history, events)
