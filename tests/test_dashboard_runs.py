"""The release history's parts without a browser: runs cut from events, one run's history rows, the version
people name a release by, and health as what users are served."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from rheostat.reactor.controller import Controller
from rheostat.rollout.engine import CANARY
from rheostat.server.api import history_between
from rheostat.server.dashboard import health
from rheostat.server.dashboard.releases import RELEASE, RunCache, run_events, runs, version_of
from rheostat.store import Store

KEY = "e2e/web"


def ctl_of(store: Store) -> Controller:
    return cast(Controller, SimpleNamespace(store=store))


def test_a_release_is_named_by_the_version_in_its_command_or_environment() -> None:
    assert version_of({"command": ["app", "--port", "{port}", "--version", "9.0.1"]}) == "9.0.1"
    assert version_of({"command": ["app", "--version=2.1", "--port={port}"]}) == "2.1"
    assert version_of({"command": ["app", "{port}"], "env": {"APP_VERSION": "3"}}) == "3"
    assert version_of({"command": ["app", "{port}"]}) == ""


def row(phase: str, primary: int = 100, canary: int = 0, **extra: Any) -> dict[str, Any]:
    return {"phase": phase, "primaryWeight": primary, "canaryWeight": canary, **extra}


def test_health_is_what_users_are_served() -> None:
    # Rolled back: everyone is on a ready primary, so users are served well; the phase still says Failed.
    assert health([row("Failed")], primary=True) == "Healthy"
    assert health([row("Failed")], primary=False) == "Degraded"
    # A failed promotion that still serves from the canary is not healthy.
    assert health([row("Failed", 0, 100)], primary=True) == "Degraded"
    # A canary that gets traffic (weight, mirror or an A/B rule) and is not ready degrades what users get.
    assert health([row("Progressing", 90, 10)], primary=True, canary=False) == "Degraded"
    assert health([row("Progressing", match=[{"headers": {}}])], primary=True, canary=False) == "Degraded"
    assert health([row("Progressing", 90, 10)], primary=True, canary=True) == "Progressing"
    # A canary group that gets no traffic does not matter to users.
    assert health([row("Progressing")], primary=True, canary=False) == "Progressing"
    assert health([row("Succeeded")], primary=True) == "Healthy"
    assert health([], primary=None) == "Unknown"


def test_runs_are_cut_from_the_canary_events_newest_first() -> None:
    store = Store(":memory:")
    t = 1000.0

    def ev(reason: str, message: str, dt: float = 1.0, warning: bool = False) -> int:
        nonlocal t
        t += dt
        store.add_event(CANARY, KEY, reason, message, warning, ts=t)
        return store.events(kind=CANARY, key=KEY, limit=1)[-1].id

    ev("Initialized", "Initialization done! web")
    ev("NewRevision", "web changed while initializing; its new revision runs next", dt=0)  # same tick
    first = ev("NewRevision", "New revision detected! Scaling up web")
    ev("Advance", "Advance web canary weight 10")
    ev("ManualRequest", "requested by hand: approve=True")
    promoted = ev("Promoted", "Promotion completed! web promoted", dt=10)
    second = ev("NewRevision", "New revision detected! Scaling up web")
    third = ev("NewRevision", "New revision detected! Restarting analysis for web")
    ev("ManualRequest", "requested by hand: rollback=True")
    ev("Rollback", "Rolling back web: rollback requested by hand", warning=True)
    fourth = ev("NewRevision", "New revision detected! Scaling up web")
    ev("CheckFailed", "request-success-rate 50 < 99 (failed checks 1/1)", warning=True)
    ev("Rollback", "Rolling back web: failed checks threshold reached 1", warning=True)
    fifth = ev("NewRevision", "New revision detected! Scaling up web")
    with store.transaction():
        store.put_state(RELEASE, KEY, {"runs": {str(first): {"revision": "abc", "version": "9.0.1"}}})

    found, events = runs(ctl_of(store), KEY)
    assert [r["id"] for r in found] == [fifth, fourth, third, second, first]
    assert [r["outcome"] for r in found] == ["running", "rolled back", "aborted", "superseded", "promoted"]
    assert found[1]["reason"] == "failed checks threshold reached 1"
    assert found[2]["by"] and found[2]["reason"] == "rollback requested by hand"
    assert found[4]["version"] == "9.0.1" and found[4]["approvedBy"] and not found[4]["by"]
    assert found[4]["duration"] == 12.0 and found[4]["endEvent"] == promoted
    assert found[0]["end"] is None and found[0]["duration"] is None

    one = run_events(found, events, first)
    assert [e.reason for e in one] == ["NewRevision", "Advance", "ManualRequest", "Promoted"]
    assert [e.id for e in run_events(found, events, 0)] == [fifth]  # 0: the newest run
    assert run_events(found, events, 999_999) == []
    assert runs(ctl_of(store), KEY, limit=2)[0][1]["id"] == fourth


def test_one_runs_history_rows_are_found_however_old() -> None:
    store = Store(":memory:")
    with store.transaction():
        for i in range(3000):
            store.add_history(KEY, {"tick": i}, ts=float(i))
    ctl = ctl_of(store)
    rows = history_between(ctl, KEY, 100, 199, 10_000)
    assert [r.body["tick"] for r in rows] == list(range(100, 200))
    assert len(history_between(ctl, KEY, 0, 2**63 - 1, 50)) == 50  # no span: the newest `limit`
    assert history_between(ctl, KEY, 100, 199, 0) == []
    assert [r.body["tick"] for r in history_between(ctl, KEY, 100, 199, 10)] == list(range(190, 200))


def test_the_run_cache_sees_every_new_event_and_recorded_revision() -> None:
    store = Store(":memory:")
    cache = RunCache(ctl_of(store))
    store.add_event(CANARY, KEY, "NewRevision", "New revision detected! Scaling up web", ts=1.0)
    found, _ = cache.get(KEY)
    assert [r["outcome"] for r in found] == ["running"]
    assert cache.get(KEY)[0] is found  # unchanged: kept
    store.add_event(CANARY, KEY, "Promoted", "Promotion completed! web promoted", ts=2.0)
    assert [r["outcome"] for r in cache.get(KEY)[0]] == ["promoted"]
    run = cache.get(KEY)[0][0]["id"]
    with store.transaction():
        store.put_state(RELEASE, KEY, {"runs": {str(run): {"revision": "abc", "version": "1.2.3"}}})
    assert cache.get(KEY)[0][0]["version"] == "1.2.3"
