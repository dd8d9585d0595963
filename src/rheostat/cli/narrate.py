"""What `rheostat run` says on stdout: one line per meaningful change, read from the events table.

The store tells its watchers after each commit which (kind, key) changed; an ("event", key) pair means new
rows in the events table. The narrator then reads the rows after the last one it printed (on the loop's
thread, as every store user does, at most once per wake-up) and prints those a person wants to see: a
revision applied, a rollout started, each step, promoted, rolled back and why, a policy that blocked a
revision, a source that cannot be fetched, and every warning. The rest (a replica became ready, the
primary is still starting, the routes of a promotion step by step) stays in `rheostat events`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import re
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, TextIO

from rheostat.store.port import Change, State
from rheostat.store.sqlite import EventRecord

BATCH = 500

# Normal events that are not worth a line: progress inside a change another line already tells.
QUIET = frozenset(
    {
        "NewArtifact",  # the fetched commit: the applied revision says it
        "Waiting",  # replicas starting; approval waits are warnings and are told
        "Finalising",
        "Ready",
        "HealthCheckSucceeded",
    }
)

# What a reason means, in a few words, before the event's own message.
LABELS = {
    "NewRevision": "rollout started",
    "Switch": "step",
    "Mirroring": "step",
    "Promoting": "promoting",
    "PromotingEarly": "promoting early",
    "CheckFailed": "check failed",
    "WaitingForData": "waiting for traffic",
    "Halted": "halted",
    "PolicyViolation": "policy violation",
    "FetchFailed": "source fetch failing",
    "BuildFailed": "revision rejected",
    "InvalidSpec": "invalid",
    "TickFailed": "stuck",
    "ManualRequest": "manual action",
    "Cancelled": "cancelled",
    "Pruned": "deleted",
    "DriftRepaired": "drift repaired",
}

# Flagger's wording of the rollout's own events, said the short way (the events keep Flagger's words).
REWRITES: dict[str, list[tuple[re.Pattern[str], str]]] = {
    "Advance": [
        (re.compile(r"canary weight (\d+)$"), r"step: canary weight \1%"),
        (re.compile(r"canary iteration (\d+/\d+)$"), r"step: iteration \1"),
    ],
    "Initialized": [
        (re.compile(r"^Initialization done!.*"), "initialized: the first revision is live (no analysis)")
    ],
    "Promoted": [
        (re.compile(r"^Promotion completed! \S+ promoted$"), "promoted"),
        (re.compile(r"^Promotion completed! (.*)"), r"promoted: \1"),
    ],
    "PolicyViolation": [(re.compile(r"^(revision \S+ blocked by policy: .*)"), r"\1")],
    "Rollback": [
        (re.compile(r"^Rolling back \S+: (.*)"), r"rolled back: \1"),
        (re.compile(r"(.*)"), r"rolled back: \1"),
    ],
}

_SHA = re.compile(r"\b(sha1|sha256):([0-9a-f]{7})[0-9a-f]{5,}\b")
_STEP_PROMOTING = re.compile(r"^promotion of \S+: primary weight \d+$")


def shown(e: EventRecord) -> bool:
    """Whether an event gets a line of its own."""
    if e.reason == "PolicyViolation" and e.message.endswith("found by gate)"):
        return False  # the Kustomization's line says the revision was blocked, and by what
    if e.warning:
        return True
    if e.reason in QUIET:
        return False
    # The promotion's own weight steps (stepWeightPromotion) are one "promoting" and one "promoted" line.
    return not (e.reason == "Promoting" and _STEP_PROMOTING.match(e.message))


def short(message: str) -> str:
    """One line, commit ids shortened to 7 characters (as git log --oneline)."""
    return _SHA.sub(r"\2", " ".join(message.split()))


def say(e: EventRecord) -> str:
    """What an event tells, in the console's words."""
    message = short(e.message)
    for pattern, words in REWRITES.get(e.reason, []):
        m = pattern.search(message)
        if m is not None:
            return m.expand(words)
    label = LABELS.get(e.reason)
    return f"{label}: {message}" if label else message


def text_line(e: EventRecord) -> str:
    at = datetime.datetime.fromtimestamp(e.ts).strftime("%H:%M:%S")
    return f"{at} {e.kind} {e.key}: {say(e)}"


def json_line(e: EventRecord) -> str:
    body: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(e.ts, datetime.UTC).isoformat(timespec="milliseconds"),
        "level": "warning" if e.warning else "info",
        "logger": "rheostat.events",
        "message": short(e.message),  # the event's own words; `say` is for people
        "kind": e.kind,
        "object": e.key,
        "reason": e.reason,
        "event": e.id,
    }
    return json.dumps(body, separators=(",", ":"))


class Narrator:
    """Prints the events of one `rheostat run` as they are committed; `close()` stops it."""

    def __init__(
        self,
        store: State,
        *,
        since: float,
        out: TextIO | None = None,
        fmt: str = "text",
    ) -> None:
        self.store = store
        self.since = since  # events of earlier runs are history, not news
        self.out = out or sys.stdout
        self.render: Callable[[EventRecord], str] = json_line if fmt == "json" else text_line
        self.after = 0
        self._last: dict[tuple[str, str, str], str] = {}  # the last warning told, per object and reason
        self._loop = asyncio.get_running_loop()
        self._pending = False
        self._unwatch = store.watch(self._changed)
        self._loop.call_soon(self._read)  # what happened while the server started

    def close(self) -> None:
        self._unwatch()

    def _changed(self, changes: frozenset[Change]) -> None:
        # On the writer's thread: only wake the loop; a burst of commits is one read.
        if self._pending or not any(kind == "event" for kind, _ in changes):
            return
        self._pending = True
        self._loop.call_soon_threadsafe(self._read)

    def _read(self) -> None:
        self._pending = False
        while True:
            try:
                batch = self.store.events(after=self.after, limit=BATCH)
            except sqlite3.Error:  # the store closed while the server stops; nothing more to tell
                return
            for e in batch:
                self.after = max(self.after, e.id)
                if e.ts >= self.since and self._news(e):
                    self._print(self.render(e))
            if len(batch) < BATCH:
                return

    def _news(self, e: EventRecord) -> bool:
        if not shown(e):
            return False
        if not e.warning:
            self._last.pop((e.kind, e.key, e.reason), None)
            # A normal event ends the warnings before it: the same fault again is news again.
            for k in [k for k in self._last if k[:2] == (e.kind, e.key)]:
                del self._last[k]
            return True
        ident = (e.kind, e.key, e.reason)
        if self._last.get(ident) == e.message:  # the same fault, tick after tick: told once
            return False
        self._last[ident] = e.message
        return True

    def _print(self, line: str) -> None:
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError):  # stdout closed (a pipe whose reader left): keep running, quietly
            pass
