"""Canaries as `GET /api/v1/canaries` and `GET /api/v1/canaries/<ns>/<name>` return them.

Each item is rendered from the canary's stored rows (object, status, manual requests, newest history row)
and kept, encoded, for as long as those rows are unchanged. Every request reads the rows again as text in
one query and compares them, so a write to any of them shows in the next answer; only unchanged canaries
skip decoding, rendering and encoding.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.reactor.controller import Controller
from rheostat.rollout.engine import CANARY
from rheostat.rollout.types import CanaryStatus
from rheostat.store.sqlite import CanaryRows


def encode(content: Any) -> bytes:
    """As starlette's JSONResponse encodes, so a cached answer is byte for byte what it would send."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def head_json(canary: Canary, body: dict[str, Any]) -> dict[str, Any]:
    """An item's fields before `status`; they change only with the stored Canary."""
    return {
        "apiVersion": canary.apiVersion,
        "kind": canary.kind,
        "metadata": body["metadata"],
        "spec": body["spec"],
        "strategy": canary.strategy.value,
    }


def status_json(rows: CanaryRows) -> dict[str, Any]:
    """The status; the weights in force come from the newest history row when there is one."""
    st = CanaryStatus.from_json(json.loads(rows.status)) if rows.status is not None else CanaryStatus()
    last: dict[str, Any] = json.loads(rows.history) if rows.history is not None else {}
    manual: dict[str, Any] = json.loads(rows.manual) if rows.manual is not None else {}
    return {
        "phase": st.phase.value,
        "canaryWeight": int(last.get("canaryWeight", st.canary_weight)),
        "primaryWeight": int(last.get("primaryWeight", 100 - st.canary_weight)),
        "failedChecks": st.failed_checks,
        "iterations": st.iterations,
        "lastAppliedSpec": st.last_applied_spec,
        "lastPromotedSpec": st.last_promoted_spec,
        "lastTransitionTime": st.last_transition_time,
        "message": st.message,
        "manual": {k: v for k, v in manual.items() if v},
        "conditions": [
            {
                "type": "Promoted",
                "status": {"Succeeded": "True", "Initialized": "True", "Failed": "False"}.get(
                    st.phase.value, "Unknown"
                ),
                "reason": st.phase.value,
                "message": st.message,
            }
        ],
    }


@dataclass(frozen=True)
class Rendered:
    rows: CanaryRows  # what `item` was rendered from
    item: bytes


class CanaryListing:
    """The rendered-item cache of one API app. An item is kept whole while all its rows are unchanged; its
    head (metadata, spec) is kept while the Canary's row is, so a tick costs only the status. Entries of
    canaries no longer stored are dropped on each list."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.items: dict[str, Rendered] = {}
        self.heads: dict[str, tuple[str, bytes]] = {}  # key: (Canary row, encoded head without its "}")

    def _head(self, rows: CanaryRows, canary: Canary | None) -> bytes | None:
        cached = self.heads.get(rows.key)
        if cached is not None and cached[0] == rows.body:
            return cached[1]
        if canary is None:
            # As Controller.canaries: a Canary that does not parse is left out (the engine reports it).
            with suppress(Exception):
                canary = self.ctl.engine.canary(ObjectKey(rows.key))
            if canary is None:
                return None
        head = encode(head_json(canary, json.loads(rows.body)))[:-1]
        self.heads[rows.key] = (rows.body, head)
        return head

    def _item(self, rows: CanaryRows, canary: Canary | None = None) -> bytes | None:
        cached = self.items.get(rows.key)
        if cached is not None and cached.rows == rows:
            return cached.item
        head = self._head(rows, canary)
        if head is None:
            return None
        # "status" is the last field, so the item is the head's fields, then the status, byte for byte as
        # encoding the whole item at once gives it.
        item = b"".join((head, b',"status":', encode(status_json(rows)), b"}"))
        self.items[rows.key] = Rendered(rows, item)
        return item

    def all(self) -> bytes:
        """`{"items": [...]}`: every stored Canary that parses, ordered by key."""
        stored = self.ctl.store.canary_rows(CANARY)
        parts = [item for item in map(self._item, stored) if item is not None]
        keys = {rows.key for rows in stored}
        if not keys.issuperset(self.heads):  # canaries were deleted (an item never outlives its head)
            self.items = {k: v for k, v in self.items.items() if k in keys}
            self.heads = {k: v for k, v in self.heads.items() if k in keys}
        return b'{"items":[' + b",".join(parts) + b"]}"

    def one(self, canary: Canary) -> bytes:
        found = self.ctl.store.canary_rows(CANARY, canary.metadata.key)
        if not found:
            raise LookupError(f"canary {canary.metadata.key} not found")
        item = self._item(found[0], canary)
        assert item is not None
        return item
