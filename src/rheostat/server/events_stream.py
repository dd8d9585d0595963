"""`GET /api/v1/stream`: server-sent events of what changes in the store.

Each connection watches the store (`State.watch`): after a committed write it reads, on the loop's thread
as every store user does, what changed, at most once per `poll_s` so that a burst of writes is one read:

* `event: event` for each new row of the events table, with `id:` set to the row id, so a browser that
  reconnects resumes after the last one it saw (`Last-Event-ID`, or `?after=N` for the first connection);
* `event: canaries` with a compact status of every canary (phase, weights, checks, manual requests, newest
  history row id) whenever any of it changed since the last one sent on this connection;
* a comment line every `keepalive_s`, so a dead client is noticed by the write failing.

A stream ends when the client goes away, and when `StreamHub.close()` is called: the server calls it before
stopping uvicorn, which otherwise waits for every open response to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from rheostat.reactor.controller import Controller
from rheostat.rollout.engine import CANARY
from rheostat.server.listing import status_json
from rheostat.server.params import parse_int

BATCH = 500  # events per poll; a backlog larger than this drains over the next polls


def sse(data: Any, *, event: str | None = None, id: int | None = None) -> str:
    """One server-sent event; the JSON is on one line, so one `data:` field carries it."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if id is not None:
        lines.append(f"id: {id}")
    lines.append("data: " + json.dumps(data, separators=(",", ":"), sort_keys=True))
    return "\n".join(lines) + "\n\n"


def event_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "ts": e.ts,
        "kind": e.kind,
        "key": e.key,
        "reason": e.reason,
        "message": e.message,
        "type": "Warning" if e.warning else "Normal",
    }


SNAPSHOT_FIELDS = ("phase", "canaryWeight", "primaryWeight", "failedChecks", "iterations", "message")


def canary_snapshot(ctl: Controller) -> list[dict[str, Any]]:
    """What the overview and canary pages show of every canary, from one query (built twice a second per
    open stream). `history` changes whenever a history row is added, which tells a page to fetch it."""
    out = []
    for rows in ctl.store.canary_rows(CANARY):
        st = status_json(rows)
        out.append(
            {
                "key": rows.key,
                **{k: st[k] for k in SNAPSHOT_FIELDS},
                "manual": sorted(st["manual"]),
                "history": zlib.crc32(rows.history.encode()) if rows.history is not None else 0,
            }
        )
    return out


class StreamHub:
    """Open streams of one app; `close()` ends them all (and any opened after)."""

    def __init__(self, ctl: Controller, *, poll_s: float = 0.5, keepalive_s: float = 15.0) -> None:
        self.ctl = ctl
        self.poll_s = poll_s
        self.keepalive_s = keepalive_s
        self.closed = asyncio.Event()
        self.open = 0

    def close(self) -> None:
        self.closed.set()

    def _start_after(self, request: Request) -> int:
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        if raw is None:  # a fresh page: only what happens from now on (the page read the rest itself)
            newest = self.ctl.store.events(limit=1)
            return newest[-1].id if newest else 0
        return parse_int(raw, "after")  # Last-Event-ID is the same event id

    async def _events(self, request: Request, after: int) -> AsyncIterator[str]:
        self.open += 1
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def wake(_: frozenset[tuple[str, str]]) -> None:
            loop.call_soon_threadsafe(changed.set)  # a write may come from a worker thread

        unwatch = self.ctl.store.watch(wake)
        try:
            yield f"retry: 1000\n\n{sse({'after': after}, event='hello')}"
            last_snapshot: list[dict[str, Any]] | None = None
            last_write = time.monotonic()
            while not self.closed.is_set():
                changed.clear()
                chunks = []
                for e in self.ctl.store.events(after=after, limit=BATCH):
                    after = e.id
                    chunks.append(sse(event_json(e), event="event", id=e.id))
                if len(chunks) == BATCH:
                    changed.set()  # a backlog: drain the rest on the next round
                snapshot = canary_snapshot(self.ctl)
                if snapshot != last_snapshot:
                    last_snapshot = snapshot
                    chunks.append(sse({"items": snapshot}, event="canaries"))
                if not chunks and time.monotonic() - last_write >= self.keepalive_s:
                    chunks.append(": keepalive\n\n")
                if chunks:
                    last_write = time.monotonic()
                    yield "".join(chunks)
                if await request.is_disconnected():
                    return
                await self._next_round(changed, last_write)
        finally:
            unwatch()
            self.open -= 1

    async def _next_round(self, changed: asyncio.Event, last_write: float) -> None:
        """Until the store changed (then at least `poll_s` after the last round), a keepalive is due, or the
        hub closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), self.poll_s)
        if self.closed.is_set() or changed.is_set():
            return
        keepalive_in = max(0.0, self.keepalive_s - (time.monotonic() - last_write))
        waiters = [asyncio.ensure_future(changed.wait()), asyncio.ensure_future(self.closed.wait())]
        try:
            await asyncio.wait(waiters, timeout=keepalive_in, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def endpoint(self, request: Request) -> Response:
        after = self._start_after(request)
        return StreamingResponse(
            self._events(request, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )


__all__ = ["StreamHub", "canary_snapshot", "sse"]
