"""Lasting state in one SQLite file (WAL): desired objects, canary status, events, history."""

from rheostat.store.sqlite import EventRecord, HistoryRecord, Store, StoredObject

__all__ = ["EventRecord", "HistoryRecord", "Store", "StoredObject"]
