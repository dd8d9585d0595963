"""The canary list keeps rendered items, but never serves a stale one: every write shows in the next list."""

from __future__ import annotations

import json
from contextlib import suppress
from types import SimpleNamespace
from typing import Any, cast

from starlette.responses import JSONResponse

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.reactor.controller import Controller
from rheostat.rollout.engine import CANARY
from rheostat.rollout.types import CanaryStatus, Phase
from rheostat.server.listing import CanaryListing
from tests.harness import Harness, canary_yaml

ANALYSIS = "interval: 10s\nthreshold: 2\nstepWeight: 10\nmaxWeight: 50"


def expected(h: Harness) -> list[dict[str, Any]]:
    """The list as the API built it before the cache, from the decoded rows, one canary at a time."""
    items = []
    for stored in h.store.list_objects(CANARY):
        canary = None
        with suppress(Exception):  # as Controller.canaries: one that does not parse is left out
            canary = h.engine.canary(ObjectKey(stored.key))
        if not isinstance(canary, Canary):
            continue
        raw = h.store.get_status(stored.key)
        st = CanaryStatus() if raw is None else CanaryStatus.from_json(raw)
        rows = h.store.history(stored.key, limit=1)
        last = rows[0].body if rows else {}
        items.append(
            {
                "apiVersion": canary.apiVersion,
                "kind": canary.kind,
                "metadata": stored.body["metadata"],
                "spec": stored.body["spec"],
                "strategy": canary.strategy.value,
                "status": {
                    "phase": st.phase.value,
                    "canaryWeight": int(last.get("canaryWeight", st.canary_weight)),
                    "primaryWeight": int(last.get("primaryWeight", 100 - st.canary_weight)),
                    "failedChecks": st.failed_checks,
                    "iterations": st.iterations,
                    "lastAppliedSpec": st.last_applied_spec,
                    "lastPromotedSpec": st.last_promoted_spec,
                    "lastTransitionTime": st.last_transition_time,
                    "message": st.message,
                    "manual": {k: v for k, v in h.store.get_manual(stored.key).items() if v},
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
                },
            }
        )
    return items


def listed(listing: CanaryListing, h: Harness) -> dict[str, Any]:
    """The cached answer, checked byte for byte against what JSONResponse sent for the uncached list."""
    body = listing.all()
    assert body == JSONResponse({"items": expected(h)}).body
    for item in expected(h):
        key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
        canary = h.engine.canary(ObjectKey(key))
        assert canary is not None
        assert listing.one(canary) == JSONResponse(item).body
    return {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in json.loads(body)["items"]}


def status_of(listing: CanaryListing, h: Harness) -> dict[str, Any]:
    return cast(dict[str, Any], listed(listing, h)[h.key]["status"])


async def test_every_write_shows_in_the_next_list() -> None:
    h = Harness(canary_yaml(ANALYSIS))
    listing = CanaryListing(cast(Controller, SimpleNamespace(store=h.store, engine=h.engine)))
    assert status_of(listing, h)["phase"] == "Initializing"  # stored, never ticked

    await h.initialized()
    assert status_of(listing, h)["phase"] == "Initialized"
    cached = listing.items[h.key].item
    listing.all()
    assert listing.items[h.key].item is cached  # an unchanged canary is served from the cache

    # Engine ticks: status and history move the phase and the weights.
    for _ in range(4):
        await h.tick()
        st = status_of(listing, h)
        assert (st["phase"], st["primaryWeight"], st["canaryWeight"]) == (h.state().phase.value, *h.weights)
    assert st["phase"] == Phase.PROGRESSING.value and st["canaryWeight"] > 0

    # Manual requests, a status and a history row written straight to the store.
    h.engine.request(h.key, approve=True)
    assert status_of(listing, h)["manual"] == {"approve": True}
    raw = h.store.get_status(h.key)
    assert raw is not None
    with h.store.transaction():
        h.store.put_status(h.key, {**raw, "message": "changed by hand"})
    assert status_of(listing, h)["message"] == "changed by hand"
    with h.store.transaction():
        h.store.add_history(h.key, {"canaryWeight": 42, "primaryWeight": 58})
    assert (status_of(listing, h)["canaryWeight"], status_of(listing, h)["primaryWeight"]) == (42, 58)
    with h.store.transaction():
        h.store.prune(CANARY, h.key, keep=0)  # no history left: the weights come from the status again
    assert status_of(listing, h)["canaryWeight"] == h.state().canary_weight

    # A new spec, a second canary, one that does not parse (left out), and deletions.
    h.put(canary_yaml(ANALYSIS.replace("maxWeight: 50", "maxWeight: 30")))
    assert listed(listing, h)[h.key]["spec"]["analysis"]["maxWeight"] == 30
    other = canary_yaml(ANALYSIS).model_dump(mode="json", exclude_none=True)
    other["metadata"]["name"] = "other"
    with h.store.transaction():
        h.store.put_object(CANARY, "test/other", other)
        h.store.put_object(CANARY, "test/broken", {"metadata": {"name": "broken", "namespace": "test"}})
    assert list(listed(listing, h)) == ["test/other", h.key]
    with h.store.transaction():
        h.store.delete_object(CANARY, h.key)
        h.store.delete_status(h.key)
    assert list(listed(listing, h)) == ["test/other"]
    assert set(listing.items) == set(listing.heads) == {"test/other"}
