"""`rheostat rollout status NAME`: wait for a canary's rollout to end; the exit code says how it ended."""

from __future__ import annotations

import sys
import time
from typing import Any
from urllib.parse import quote

import click

from rheostat.cli.client import ApiError
from rheostat.cli.common import client, err, fail, fetch, namespace_option, server_option
from rheostat.cli.get import complete_name, fetch_items, one
from rheostat.cli.kinds import find_kind
from rheostat.cli.output import clock
from rheostat.cli.stream import Waker
from rheostat.util.durations import parse_duration

PROMOTED, ROLLED_BACK, TIMED_OUT = 0, 1, 2


def pending(server: str, item: dict[str, Any]) -> str:
    """Why a canary at rest has a rollout still to come, or "": its Workload declares a revision it has not
    started, or the repository has a commit not applied yet."""
    st = item["status"]
    target = item["spec"]["targetRef"]
    c = client(server)
    try:
        if target["kind"] == "Workload":
            key = f"{item['metadata']['namespace']}/{target['name']}"
            for w in c.get("/workloads")["items"]:
                meta, declared = w["metadata"], w.get("status", {}).get("revision")
                if (
                    f"{meta['namespace']}/{meta['name']}" == key
                    and declared
                    and declared != st["lastAppliedSpec"]
                ):
                    return (
                        f"Workload {key} declares revision {declared}; its rollout starts at the next check"
                    )
        flag = (item["spec"].get("flag") or {}).get("key")
        if flag:  # a flag's revision is its definition's digest, as the flags platform reads it
            definition = c.get(f"/flags/{quote(flag, safe='')}").get("definition")
            if definition and definition != st["lastAppliedSpec"]:
                return (
                    f"flag {flag} has a new definition ({definition}); its rollout starts at the next check"
                )
        source = c.get("/source")
        fetched, applied = source.get("revision"), source.get("appliedRevision")
        if fetched and fetched != applied and fetched != source.get("rejectedRevision"):
            return f"commit {fetched} is fetched, not applied yet"
    except ApiError:  # no repository (a cluster's Canaries), or the server is going: judge by the canary
        return ""
    finally:
        c.close()
    return ""


def progress(item: dict[str, Any]) -> str:
    st = item["status"]
    a = item["spec"].get("analysis") or item["spec"].get("canaryAnalysis") or {}
    return (
        f"{st['phase']}: canary {st['canaryWeight']}%, primary {st['primaryWeight']}%, iteration "
        f"{st['iterations']}, failed checks {st['failedChecks']}/{a.get('threshold', 1)}"
        + (f": {st['message']}" if st["message"] else "")
    )


@click.group("rollout", short_help="Follow a canary's rollout.")
def rollout_group() -> None:
    """Follow a canary's rollout (as `kubectl rollout`).

    \b
    Example:
      rheostat rollout status web -n apps --timeout 10m
    """


@rollout_group.command("status", short_help="Wait for a rollout to end.")
@click.argument("name", shell_complete=complete_name)
@namespace_option
@click.option(
    "--timeout",
    default="0s",
    show_default=True,
    help="Give up after this long (a duration: 90s, 10m); 0s waits until the rollout ends.",
)
@server_option
def status_cmd(name: str, namespace: str | None, timeout: str, server: str) -> None:
    """Wait until the canary's rollout ends, printing a line each time it moves (phase, weights, checks).

    Exit 0 when the canary is promoted (or at rest with nothing to roll out), 1 when it rolled back, 2 when
    --timeout passed first. A canary at rest whose Workload declares a revision it has not started, or
    whose repository has a commit fetched but not applied, is waited for: `git push` then `rollout status`
    follows the new release, not the last one.

    \b
    Examples:
      rheostat rollout status web
      rheostat rollout status apps/web --timeout 15m && echo released
    """
    try:
        limit = parse_duration(timeout)
    except ValueError as exc:
        fail(exc)
    k = find_kind("canary")
    key = k.key(one(k, fetch_items(k, server), name, namespace))
    deadline = time.monotonic() + limit if limit > 0 else None
    last = ""
    with Waker(client(server), backstop_s=1.0) as waker:
        try:
            while True:
                item = fetch(server, f"/canaries/{key}")
                phase = item["status"]["phase"]
                line = progress(item)
                waiting = pending(server, item) if phase in ("Initialized", "Succeeded", "Failed") else ""
                if waiting:
                    line = f"waiting: {waiting}"
                if line != last:
                    click.echo(f"{clock(time.time())} {key} {line}")
                    last = line
                if not waiting and phase == "Succeeded":
                    click.echo(f"canary {key} promoted")
                    sys.exit(PROMOTED)
                if not waiting and phase == "Initialized":
                    click.echo(f"canary {key} is initialized: no rollout yet, the primary serves")
                    sys.exit(PROMOTED)
                if not waiting and phase == "Failed":
                    click.echo(f"canary {key} rolled back: {item['status']['message']}")
                    sys.exit(ROLLED_BACK)
                if phase in ("Terminating", "Terminated"):
                    click.echo(f"canary {key} is {phase.lower()}: its Canary was removed")
                    sys.exit(ROLLED_BACK)
                if deadline is not None and time.monotonic() > deadline:
                    err.print(
                        f"error: timed out after {timeout} waiting for {key}; now {phase}", highlight=False
                    )
                    sys.exit(TIMED_OUT)
                waker.wait()
        except KeyboardInterrupt:
            sys.exit(130)
