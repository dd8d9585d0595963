"""Webhooks as gates and hooks, and the manual requests of the CLI and API."""

from __future__ import annotations

from rheostat.model.canary import Canary
from rheostat.rollout.types import CanaryStatus, Event, Phase
from tests.harness import Harness, canary_yaml

HOOKS = """
interval: 10s
threshold: 2
stepWeight: 25
maxWeight: 50
webhooks:
- {name: gate, type: confirm-rollout, url: "http://gate/"}
- {name: pre, type: pre-rollout, url: "http://pre/"}
- {name: load, url: "http://load/", metadata: {cmd: "hey -z 1m http://x/"}}
- {name: traffic, type: confirm-traffic-increase, url: "http://traffic/"}
- {name: promotion, type: confirm-promotion, url: "http://promotion/"}
- {name: post, type: post-rollout, url: "http://post/"}
- {name: panic, type: rollback, url: "http://panic/"}
- {name: events, type: event, url: "http://events/"}
"""


async def test_hooks_run_in_flagger_order_with_payload() -> None:
    h = Harness(canary_yaml(HOOKS))
    await h.initialized()
    seen = await h.run(6)
    await h.engine.drain()
    assert [p for p, *_ in seen] == [
        "Progressing",
        "Progressing",
        "Progressing",
        "Promoting",
        "Finalising",
        "Succeeded",
    ]
    names = [n for n, _ in h.hooks.calls if n not in ("events", "panic")]
    assert names[:3] == ["gate", "pre", "traffic"]
    assert h.hooks.called("pre") == 1 and h.hooks.called("post") == 1
    assert h.hooks.called("panic") == 3  # polled on each tick that analyses (the three before Promoting)
    assert h.hooks.called("load") == 2  # every analysis tick after the first
    body = dict(h.hooks.calls[0][1])
    assert set(body) == {"name", "namespace", "phase", "checksum", "metadata"}
    assert (body["name"], body["namespace"]) == ("podinfo", "test")
    load_body = next(b for n, b in h.hooks.calls if n == "load")
    assert load_body["metadata"] == {"cmd": "hey -z 1m http://x/"}
    event = next(b for n, b in h.hooks.calls if n == "events")
    assert {"eventMessage", "eventType", "timestamp"} <= set(event["metadata"])


async def test_confirm_rollout_keeps_waiting_until_approved() -> None:
    h = Harness(canary_yaml(HOOKS))
    h.hooks.answers["gate"] = False
    await h.initialized()
    await h.run(3)
    assert h.state().phase is Phase.WAITING and h.weights == (100, 0)
    h.hooks.answers["gate"] = True
    await h.tick()
    assert h.state().phase is Phase.PROGRESSING


async def test_manual_approve_opens_gates() -> None:
    h = Harness(canary_yaml(HOOKS))
    h.hooks.answers.update(gate=False, promotion=False)
    await h.initialized()
    await h.tick()
    assert h.state().phase is Phase.WAITING
    h.engine.request(h.key, approve=True)
    await h.run(4)
    assert h.state().phase is Phase.PROMOTING  # approval opens confirm-promotion too
    await h.run(2)
    assert h.state().phase is Phase.SUCCEEDED
    assert h.engine.manual(h.key).approve is False  # cleared at the end of the run


async def test_confirm_traffic_increase_holds_without_failing() -> None:
    h = Harness(canary_yaml(HOOKS))
    h.hooks.answers["traffic"] = False
    await h.initialized()
    await h.run(4)
    assert h.weights == (100, 0) and h.state().failed_checks == 0 and h.state().phase is Phase.PROGRESSING


async def test_confirm_promotion_waits_and_analysis_goes_on() -> None:
    h = Harness(canary_yaml(HOOKS))
    h.hooks.answers["promotion"] = False
    await h.initialized()
    await h.run(4)
    assert h.state().phase is Phase.WAITING_PROMOTION and h.weights == (50, 50)
    loads = h.hooks.called("load")
    await h.tick()
    assert h.hooks.called("load") == loads + 1
    h.hooks.answers["load"] = False
    await h.run(2)
    assert h.state().phase is Phase.FAILED


async def test_failing_pre_rollout_counts_as_a_failed_check() -> None:
    h = Harness(canary_yaml(HOOKS))
    h.hooks.answers["pre"] = False
    await h.initialized()
    await h.run(2)
    assert h.state().failed_checks == 1 and h.weights == (100, 0)
    await h.tick()
    assert h.state().phase is Phase.FAILED


async def test_rollback_hook_answering_2xx_rolls_back() -> None:
    h = Harness(canary_yaml(HOOKS))
    await h.initialized()
    await h.run(3)
    h.hooks.answers["panic"] = True
    await h.tick()
    assert h.state().phase is Phase.FAILED and h.weights == (100, 0)


async def test_manual_rollback_halt_and_promote() -> None:
    h = Harness(canary_yaml("{interval: 10s, stepWeight: 10}"))
    await h.initialized()
    await h.run(3)
    h.engine.request(h.key, halt=True)
    await h.run(3)
    assert h.weights == (80, 20)
    h.engine.request(h.key, halt=False)
    await h.tick()
    assert h.weights == (70, 30)
    h.engine.request(h.key, rollback=True)
    await h.tick()
    assert h.state().phase is Phase.FAILED and h.weights == (100, 0)
    h.platform.set_revision(h.target, "rev-3")
    await h.run(3)
    h.engine.request(h.key, promote=True)
    await h.run(3)
    assert h.state().phase is Phase.SUCCEEDED
    assert h.platform.workloads[h.target].primary_revision == "rev-3"


async def test_failing_notifier_never_blocks_a_rollout() -> None:

    calls = []

    async def broken(canary: Canary, event: Event, status: CanaryStatus) -> None:
        calls.append(event.reason)
        raise RuntimeError("slack is down")

    h = Harness(canary_yaml("{interval: 10s, stepWeight: 50}"))
    h.engine.alerts = broken
    await h.initialized()
    await h.run(6)
    await h.engine.drain()
    assert h.state().phase is Phase.SUCCEEDED
    assert "NewRevision" in calls and "Promoted" in calls


async def test_requests_left_at_rest_do_not_leak_into_the_next_run() -> None:
    h = Harness(canary_yaml("{interval: 10s, stepWeight: 50}"))
    await h.tick()
    h.engine.request(h.key, rollback=True, promote=True, halt=True)  # what a race with the API could leave
    h.platform.set_revision(h.target, "rev-2")
    seen = [p for p, *_ in await h.run(6)]
    assert seen == ["Progressing", "Progressing", "Progressing", "Promoting", "Finalising", "Succeeded"]
    assert h.engine.manual(h.key) == type(h.engine.manual(h.key))()


async def test_waiting_is_one_event_not_one_per_tick() -> None:
    from rheostat.plugins.platforms.base import Group

    h = Harness(canary_yaml("{interval: 10s, stepWeight: 50}"))
    h.platform.set_ready(h.target, Group.PRIMARY, False)
    await h.run(5)
    assert [e.reason for e in h.store.events(key=h.key)] == ["Waiting"]
    h.platform.set_ready(h.target, Group.PRIMARY, True)
    await h.run(4)  # at rest, nothing happens: no history rows either
    assert len(h.store.history(h.key)) == 2
