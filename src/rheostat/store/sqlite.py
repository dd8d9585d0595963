"""The store. One connection, used from the event loop's thread; every tick writes in one transaction."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS canary_status (key TEXT PRIMARY KEY, body TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS manual (key TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS state (
    kind TEXT NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (kind, key));
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
    reason TEXT NOT NULL, message TEXT NOT NULL, warning INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_object ON events (kind, key, id);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS history_by_canary ON history (key, id);
"""


@dataclass(frozen=True)
class StoredObject:
    kind: str
    key: str
    body: dict[str, Any]
    source: str
    updated: float


@dataclass(frozen=True)
class EventRecord:
    id: int
    ts: float
    kind: str
    key: str
    reason: str
    message: str
    warning: bool


@dataclass(frozen=True)
class HistoryRecord:
    id: int
    ts: float
    key: str
    body: dict[str, Any]


@dataclass(frozen=True)
class CanaryRows:
    """A canary's stored rows as text, undecoded: equal values mean an unchanged canary (for caching)."""

    key: str
    body: str
    status: str | None
    manual: str | None
    history: str | None  # the newest history row's body


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._depth = 0
        self._watchers: list[Callable[[frozenset[tuple[str, str]]], None]] = []
        self._pending: set[tuple[str, str]] = set()  # changes of the open transaction, told on commit

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together or not at all; nested uses join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()  # e.g. SQLITE_FULL: never leave a transaction open behind a failed commit
                raise
            self._depth = 0
            self._tell()
        finally:
            self._depth = 0

    def _rollback(self) -> None:
        self._pending.clear()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # -- watch ---------------------------------------------------------------------------------------

    def watch(self, watcher: Callable[[frozenset[tuple[str, str]]], None]) -> Callable[[], None]:
        """`watcher(changes)` after each committed write, with the (kind, key) pairs it changed; status,
        manual requests, events and history are told as ("status" | "manual" | "event" | "history", key).
        Watchers run on the writer's thread and must not write (they wake something up)."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def _changed(self, kind: str, key: str) -> None:
        if not self._watchers:
            return
        self._pending.add((kind, key))
        if not self._depth:  # a write outside a transaction commits at once
            self._tell()

    def _tell(self) -> None:
        changed, self._pending = frozenset(self._pending), set()
        if not changed:
            return
        for watcher in list(self._watchers):
            try:
                watcher(changed)
            except Exception:  # a watcher's bug must not undo or fail a committed write
                log.exception("a store watcher failed")

    # -- desired objects -----------------------------------------------------------------------------

    def put_object(self, kind: str, key: str, body: dict[str, Any], source: str = "") -> None:
        self._db.execute(
            "INSERT INTO objects (kind, key, body, source, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, source = excluded.source, "
            "updated = excluded.updated",
            (kind, key, json.dumps(body, sort_keys=True), source, time.time()),
        )
        self._changed(kind, key)

    def delete_object(self, kind: str, key: str) -> None:
        self._db.execute("DELETE FROM objects WHERE kind = ? AND key = ?", (kind, key))
        self._changed(kind, key)

    def get_object(self, kind: str, key: str) -> StoredObject | None:
        row = self._db.execute(
            "SELECT kind, key, body, source, updated FROM objects WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else StoredObject(row[0], row[1], json.loads(row[2]), row[3], row[4])

    def get_object_text(self, kind: str, key: str) -> tuple[str, str] | None:
        """(body as stored JSON, source) without decoding: for comparing with text made the same way."""
        row = self._db.execute(
            "SELECT body, source FROM objects WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def keys(self, kind: str) -> list[str]:
        """The keys of every object of `kind`, bodies not read (the scheduler asks every second)."""
        return [
            r[0] for r in self._db.execute("SELECT key FROM objects WHERE kind = ? ORDER BY key", (kind,))
        ]

    def list_objects(self, kind: str | None = None) -> list[StoredObject]:
        sql = "SELECT kind, key, body, source, updated FROM objects"
        rows = self._db.execute(
            sql + (" WHERE kind = ? ORDER BY key" if kind else " ORDER BY kind, key"), (kind,) if kind else ()
        ).fetchall()
        return [StoredObject(r[0], r[1], json.loads(r[2]), r[3], r[4]) for r in rows]

    # -- canary status and manual requests ---------------------------------------------------------

    def get_status(self, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM canary_status WHERE key = ?", (key,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_status(self, key: str, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO canary_status (key, body, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET body = excluded.body, updated = excluded.updated",
            (key, json.dumps(body), time.time()),
        )
        self._changed("status", key)

    def delete_status(self, key: str) -> None:
        self._db.execute("DELETE FROM canary_status WHERE key = ?", (key,))
        self._db.execute("DELETE FROM manual WHERE key = ?", (key,))
        self._changed("status", key)

    def all_statuses(self) -> dict[str, dict[str, Any]]:
        return {r[0]: dict(json.loads(r[1])) for r in self._db.execute("SELECT key, body FROM canary_status")}

    def all_manual(self) -> dict[str, dict[str, Any]]:
        return {r[0]: dict(json.loads(r[1])) for r in self._db.execute("SELECT key, body FROM manual")}

    def latest_history(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """The newest history row of each canary: one index seek each (a GROUP BY would scan all history)."""
        out = {}
        for key in keys:
            row = self._db.execute(
                "SELECT body FROM history WHERE key = ? ORDER BY id DESC LIMIT 1", (key,)
            ).fetchone()
            if row is not None:
                out[key] = dict(json.loads(row[0]))
        return out

    def canary_rows(self, kind: str, key: str | None = None) -> list[CanaryRows]:
        """Every object of `kind` (or the one `key`) with its status, manual requests and newest history row,
        ordered by key, in one query (an index seek each) and not decoded."""
        sql = (
            "SELECT o.key, o.body, s.body, m.body, "
            "(SELECT h.body FROM history h WHERE h.key = o.key ORDER BY h.id DESC LIMIT 1) "
            "FROM objects o LEFT JOIN canary_status s ON s.key = o.key LEFT JOIN manual m ON m.key = o.key "
            "WHERE o.kind = ?"
        )
        args: tuple[str, ...] = (kind,)
        if key is not None:
            sql += " AND o.key = ?"
            args = (kind, key)
        rows = self._db.execute(sql + " ORDER BY o.key", args).fetchall()
        return [CanaryRows(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def get_manual(self, key: str) -> dict[str, Any]:
        row = self._db.execute("SELECT body FROM manual WHERE key = ?", (key,)).fetchone()
        return {} if row is None else dict(json.loads(row[0]))

    def put_manual(self, key: str, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO manual (key, body) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET body = excluded.body",
            (key, json.dumps(body)),
        )
        self._changed("manual", key)

    # -- status of other kinds (sources, kustomizations): conditions, inventory, artifacts -------------

    def get_state(self, kind: str, key: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT body FROM state WHERE kind = ? AND key = ?", (kind, key)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def put_state(self, kind: str, key: str, body: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO state (kind, key, body, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET body = excluded.body, updated = excluded.updated",
            (kind, key, json.dumps(body), time.time()),
        )
        self._changed(f"{kind}.status", key)

    def list_states(self, kind: str) -> dict[str, dict[str, Any]]:
        rows = self._db.execute("SELECT key, body FROM state WHERE kind = ?", (kind,)).fetchall()
        return {r[0]: dict(json.loads(r[1])) for r in rows}

    def delete_state(self, kind: str, key: str) -> None:
        self._db.execute("DELETE FROM state WHERE kind = ? AND key = ?", (kind, key))
        self._changed(f"{kind}.status", key)

    # -- events and history --------------------------------------------------------------------------

    def add_event(
        self, kind: str, key: str, reason: str, message: str, warning: bool = False, ts: float | None = None
    ) -> None:
        self._db.execute(
            "INSERT INTO events (ts, kind, key, reason, message, warning) VALUES (?, ?, ?, ?, ?, ?)",
            (time.time() if ts is None else ts, kind, key, reason, message, int(warning)),
        )
        self._changed("event", key)

    def events(
        self, kind: str | None = None, key: str | None = None, after: int = 0, limit: int = 500
    ) -> list[EventRecord]:
        sql = "SELECT id, ts, kind, key, reason, message, warning FROM events WHERE id > ?"
        args: list[Any] = [after]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if key:
            sql += " AND key = ?"
            args.append(key)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        rows = self._db.execute(sql, args).fetchall()
        return [EventRecord(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in reversed(rows)]

    def add_history(self, key: str, body: dict[str, Any], ts: float | None = None) -> None:
        self._db.execute(
            "INSERT INTO history (ts, key, body) VALUES (?, ?, ?)",
            (time.time() if ts is None else ts, key, json.dumps(body)),
        )
        self._changed("history", key)

    def prune(self, kind: str, key: str, keep: int) -> None:
        """Keep the newest `keep` history rows and events of one object."""
        for table, where, args in (
            ("history", "key = ?", (key,)),
            ("events", "kind = ? AND key = ?", (kind, key)),
        ):
            self._db.execute(
                f"DELETE FROM {table} WHERE {where} AND id <= (SELECT id FROM {table} WHERE {where} "
                "ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (*args, *args, keep),
            )

    def history(self, key: str, limit: int = 1000) -> list[HistoryRecord]:
        rows = self._db.execute(
            "SELECT id, ts, key, body FROM history WHERE key = ? ORDER BY id DESC LIMIT ?", (key, limit)
        ).fetchall()
        return [HistoryRecord(r[0], r[1], r[2], json.loads(r[3])) for r in reversed(rows)]
