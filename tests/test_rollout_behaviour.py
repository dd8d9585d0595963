"""Flagger's behaviours, tick by tick on the fakes, with fake time."""

from __future__ import annotations

from rheostat.plugins.platforms.base import Group
from rheostat.plugins.routers.base import Routes
from rheostat.rollout.types import Phase
from tests.harness import Harness, canary_yaml

METRICS = """
interval: 10s
threshold: 2
stepWeight: 10
maxWeight: 50
metrics:
- {name: request-success-rate, thresholdRange: {min: 99}, interval: 1m}
- {name: request-duration, thresholdRange: {max: 500}, interval: 30s}
"""


async def test_first_install_initializes_without_analysis() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.tick()
    assert h.state().phase is Phase.INITIALIZED
    assert h.weights == (100, 0)
    assert h.metrics.queries == []
    assert h.platform.workloads[h.target].scale[Group.CANARY] == 0
    assert h.platform.workloads[h.target].primary_revision == "rev-1"
    await h.tick()  # nothing new: nothing runs
    assert h.state().phase is Phase.INITIALIZED and h.metrics.queries == []


async def test_failed_checks_reaching_threshold_roll_back() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.initialized()
    await h.run(3)  # detect, pre-rollout tick (10), analysis tick (20)
    assert h.weights == (80, 20)
    h.metrics.values["request-success-rate"] = 90.0
    await h.tick()
    assert h.state().phase is Phase.PROGRESSING and h.state().failed_checks == 1
    assert h.weights == (80, 20)  # a failed check holds the weight
    await h.tick()
    st = h.state()
    assert st.phase is Phase.FAILED
    assert h.weights == (100, 0)
    assert h.platform.workloads[h.target].scale[Group.CANARY] == 0
    assert h.platform.workloads[h.target].primary_revision == "rev-1"
    events = [e.reason for e in h.store.events(key=h.key)]
    assert "Rollback" in events


async def test_no_data_waits_while_nan_infinity_and_provider_errors_fail_checks_never_pass() -> None:
    h = Harness(canary_yaml(METRICS.replace("threshold: 2", "threshold: 3")))
    await h.initialized()
    await h.run(2)
    h.metrics.values["request-duration"] = None
    await h.tick()  # no traffic measured yet: wait, no failed check, the weight holds
    assert (h.state().failed_checks, h.weights) == (0, (90, 10))
    assert "waiting for traffic to measure request-duration" in h.state().message
    assert [e.reason for e in h.store.events(key=h.key)][-1] == "WaitingForData"
    h.metrics.values["request-duration"] = float("nan")
    await h.tick()
    assert h.state().failed_checks == 1 and "the value is nan" in h.state().message
    h.metrics.values["request-duration"] = float("inf")
    await h.tick()
    assert h.state().failed_checks == 2 and "the value is inf" in h.state().message
    h.metrics.values["request-duration"] = 10.0
    h.metrics.online = False
    await h.tick()
    assert h.state().phase is Phase.FAILED


async def test_no_data_becomes_a_failed_check_past_the_progress_deadline() -> None:
    h = Harness(canary_yaml(METRICS, progressDeadlineSeconds=60))
    await h.initialized()
    await h.run(2)  # the run started at the first of these ticks (the canary was ready)
    h.metrics.values["request-success-rate"] = None
    started = h.state().run_started
    assert started > 0
    waited = await h.run(5)  # 10 to 50 s after the run started: waiting
    assert [w[2] for w in waited] == [10] * 5 and h.state().failed_checks == 0
    waiting = [e for e in h.store.events(key=h.key) if e.reason == "WaitingForData"]
    assert len(waiting) == 1  # said once, not every tick
    assert h.clock.t - started == 60
    await h.tick()  # 60 s: the deadline
    assert h.state().failed_checks == 1
    assert "no data within the progress deadline" in h.state().message


async def test_new_revision_mid_analysis_resets_and_restarts() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.initialized()
    await h.run(3)
    assert h.weights == (80, 20)
    h.platform.set_revision(h.target, "rev-3")
    await h.tick()
    st = h.state()
    assert (st.phase, st.canary_weight, st.failed_checks, st.last_applied_spec) == (
        Phase.PROGRESSING,
        0,
        0,
        "rev-3",
    )
    assert h.weights == (100, 0)
    assert await h.run(2) == [("Progressing", 90, 10), ("Progressing", 80, 20)]


async def test_reverting_target_to_promoted_revision_starts_no_run() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.initialized()
    await h.run(2)
    h.platform.set_revision(h.target, "rev-1")  # back to what the primary runs
    await h.tick()
    assert h.state().phase is Phase.SUCCEEDED and h.weights == (100, 0)
    assert h.platform.workloads[h.target].scale[Group.CANARY] == 0
    queries = len(h.metrics.queries)
    await h.run(3)
    assert h.state().phase is Phase.SUCCEEDED and len(h.metrics.queries) == queries


async def test_failed_canary_runs_again_only_on_a_new_revision() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.initialized()
    h.metrics.values["request-success-rate"] = 50.0
    await h.run(4)
    assert h.state().phase is Phase.FAILED
    await h.run(3)
    assert h.state().phase is Phase.FAILED and h.weights == (100, 0)
    h.platform.set_revision(h.target, "rev-1")  # reverting to the primary's revision starts nothing
    await h.run(2)
    assert h.state().phase is Phase.FAILED
    h.metrics.values["request-success-rate"] = 100.0
    h.platform.set_revision(h.target, "rev-3")
    await h.tick()
    assert h.state().phase is Phase.PROGRESSING
    await h.run(10)
    assert h.state().phase is Phase.SUCCEEDED
    assert h.platform.workloads[h.target].primary_revision == "rev-3"


async def test_skip_analysis_promotes_in_two_ticks() -> None:
    h = Harness(canary_yaml(METRICS, skipAnalysis=True))
    await h.initialized()
    assert [p for p, *_ in await h.run(2)] == ["Progressing", "Succeeded"]
    assert h.platform.workloads[h.target].primary_revision == "rev-2"
    assert h.metrics.queries == []


async def test_suspend_stops_ticking() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.initialized()
    await h.run(2)
    h.put(canary_yaml(METRICS, suspend=True))
    before = h.state()
    assert await h.engine.tick(h.key) is None
    assert h.state() == before
    h.put(canary_yaml(METRICS))
    await h.tick()
    assert h.state().canary_weight == 20


async def test_progress_deadline_rolls_back_a_canary_that_never_gets_ready() -> None:
    h = Harness(canary_yaml(METRICS, progressDeadlineSeconds=60))
    await h.initialized()
    await h.tick()
    h.platform.set_ready(h.target, Group.CANARY, False)
    await h.tick()
    assert h.state().phase is Phase.PROGRESSING and h.state().failed_checks == 0  # waiting is not failing
    h.clock.t += 61
    await h.tick()
    assert h.state().phase is Phase.FAILED
    assert "progress deadline" in h.state().message
    assert h.weights == (100, 0)


async def test_crash_looping_canary_rolls_back_at_once() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.initialized()
    await h.tick()
    h.platform.set_ready(h.target, Group.CANARY, False, fatal=True)
    await h.tick()
    assert h.state().phase is Phase.FAILED


async def test_blue_green_runs_iterations_at_zero_then_switches() -> None:
    h = Harness(
        canary_yaml(
            "{interval: 10s, iterations: 3, metrics: [{name: request-success-rate, "
            "thresholdRange: {min: 99}}]}"
        )
    )
    await h.initialized()
    seen = await h.run(8)
    assert seen == [
        ("Progressing", 100, 0),
        ("Progressing", 100, 0),
        ("Progressing", 100, 0),
        ("Progressing", 100, 0),
        ("Progressing", 0, 100),
        ("Promoting", 0, 100),
        ("Finalising", 100, 0),
        ("Succeeded", 100, 0),
    ]
    canary_queries = [q for q in h.metrics.queries if q.group == "canary"]
    assert len(canary_queries) == 4  # three iterations plus the check before the switch


async def test_ab_testing_routes_only_matching_requests() -> None:
    h = Harness(
        canary_yaml("""
interval: 10s
iterations: 2
match:
- headers: {x-canary: {exact: insider}}
- headers: {cookie: {regex: "^(.*?;)?(canary=always)(;.*)?$"}}
""")
    )
    await h.initialized()
    await h.run(2)
    r = h.router.routes[h.key]
    assert (r.primary, r.canary) == (100, 0)
    assert [m.headers for m in r.match if m.headers] and len(r.match) == 2
    assert r.match[0].headers is not None and r.match[0].headers["x-canary"].exact == "insider"
    seen = await h.run(4)
    assert [p for p, *_ in seen] == ["Progressing", "Promoting", "Finalising", "Succeeded"]
    assert h.router.routes[h.key] == Routes(100, 0)


async def test_mirroring_shadows_before_shifting() -> None:
    h = Harness(canary_yaml("{interval: 10s, stepWeight: 10, maxWeight: 20, mirror: true, mirrorWeight: 50}"))
    await h.initialized()
    await h.run(2)
    r = h.router.routes[h.key]
    assert (r.primary, r.canary, r.mirror, r.mirror_weight) == (100, 0, True, 50)
    await h.tick()
    r = h.router.routes[h.key]
    assert (r.primary, r.canary, r.mirror) == (90, 10, False)


async def test_blue_green_with_mirroring_mirrors_every_iteration() -> None:
    h = Harness(canary_yaml("{interval: 10s, iterations: 2, mirror: true}"))
    await h.initialized()
    await h.run(3)
    assert h.router.routes[h.key].mirror
    await h.tick()
    assert h.weights == (0, 100) and not h.router.routes[h.key].mirror


async def test_broken_primary_during_promotion_keeps_traffic_on_canary() -> None:
    h = Harness(canary_yaml("{interval: 10s, stepWeight: 50}", progressDeadlineSeconds=60))
    await h.initialized()
    await h.run(4)
    assert h.state().phase is Phase.PROMOTING
    h.platform.set_ready(h.target, Group.PRIMARY, False)
    await h.tick()
    assert h.state().phase is Phase.PROMOTING  # waits for the primary's rollout
    h.clock.t += 61
    await h.tick()
    assert h.state().phase is Phase.FAILED and h.state().canary_weight == 100
    assert h.weights == (0, 100)
    assert h.platform.workloads[h.target].scale[Group.CANARY] == 2  # the canary is kept
    await h.tick()  # at rest, the failed promotion keeps serving from the canary
    assert h.weights == (0, 100)


async def test_session_affinity_pins_canary_clients_while_shifting() -> None:
    h = Harness(
        canary_yaml(
            "{interval: 10s, stepWeight: 50, sessionAffinity: {cookieName: flagger-cookie, maxAge: 600}}"
        )
    )
    await h.initialized()
    await h.run(2)
    sticky = h.router.routes[h.key].sticky
    assert sticky is not None and sticky.name == "flagger-cookie" and sticky.max_age == 600
    assert sticky.value == h.state().session_cookie != ""
    await h.run(4)
    assert h.state().phase is Phase.SUCCEEDED and h.router.routes[h.key].sticky is None


async def test_routes_drifted_at_rest_are_put_back() -> None:
    h = Harness(canary_yaml(METRICS))
    await h.tick()
    await h.router.set_routes(h.key, Routes(50, 50))
    await h.tick()
    assert h.weights == (100, 0)
    assert "RoutesRepaired" in [e.reason for e in h.store.events(key=h.key)]


async def test_threshold_judge_bounds_and_deprecated_threshold() -> None:
    h = Harness(
        canary_yaml("""
interval: 10s
threshold: 5
stepWeight: 10
metrics:
- {name: request-success-rate, threshold: 99}
- {name: request-duration, threshold: 500}
- {name: custom, thresholdRange: {min: 1, max: 2}, query: "sum(x)"}
"""),
        metrics={"request-success-rate": 99.5, "request-duration": 499, "custom": 1.5},
    )
    await h.initialized()
    await h.run(3)
    assert h.state().failed_checks == 0
    h.metrics.values["custom"] = 2.5
    await h.tick()
    assert h.state().failed_checks == 1 and "custom 2.5 > 2" in h.state().message
    hist = h.store.history(h.key)[-1].body
    assert {m["name"]: m["ok"] for m in hist["metrics"]} == {
        "request-success-rate": True,
        "request-duration": True,
        "custom": False,
    }


async def test_metric_without_template_or_query_fails_with_reason() -> None:
    h = Harness(canary_yaml("{interval: 10s, threshold: 1, stepWeight: 10, metrics: [{name: my-metric}]}"))
    await h.initialized()
    await h.run(3)
    assert h.state().phase is Phase.FAILED
    assert "no usable metrics template and query" in h.state().message


async def test_metric_template_is_rendered_with_flagger_variables() -> None:
    h = Harness(
        canary_yaml("""
interval: 10s
stepWeight: 10
metrics:
- name: latency
  templateRef: {name: latency, namespace: istio-system}
  templateVariables: {direction: inbound}
  thresholdRange: {max: 500}
  interval: 1m
"""),
        metrics={"latency": 10.0},
    )
    from rheostat.model.load import parse_text

    (tmpl,) = parse_text("""
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: latency, namespace: istio-system}
spec:
  provider: {type: prometheus, address: "http://prometheus:9090"}
  query: 'q{ns="{{ namespace }}",w="{{ target }}",d="{{ variables.direction }}"}[{{ interval }}]'
""")
    with h.store.transaction():
        h.store.put_object("MetricTemplate", "istio-system/latency", tmpl.model_dump(mode="json"), "t")
    await h.initialized()
    await h.run(3)
    # The run began serving 10 s before this check: the window never reaches back before it.
    assert h.metrics.queries[-1].text == 'q{ns="test",w="podinfo",d="inbound"}[10s]'
    await h.run(6)
    assert h.metrics.queries[-1].text == 'q{ns="test",w="podinfo",d="inbound"}[1m]'


async def test_builtin_metrics_of_the_primary_are_recorded_beside_the_canary() -> None:
    from rheostat.plugins.metrics.base import MetricQuery

    h = Harness(canary_yaml(METRICS))
    h.metrics.source = lambda q: (
        {"canary": 98.5, "primary": 99.9}[q.group]
        if q.name.endswith("rate")
        else ({"canary": 120.0, "primary": 80.0}[q.group])
    )
    await h.initialized()
    await h.run(3)
    rows = h.store.history(h.key)[-1].body["metrics"]
    by_name = {m["name"]: (m["value"], m["primaryValue"]) for m in rows}
    assert by_name == {"request-success-rate": (98.5, 99.9), "request-duration": (120.0, 80.0)}
    assert h.state().failed_checks == 1  # judged on the canary's value only
    assert all(isinstance(q, MetricQuery) for q in h.metrics.queries)


async def test_a_query_with_no_values_while_the_canary_serves_is_a_failed_check_not_a_wait() -> None:
    # A canary answering only 5xx has no 2xx series: `sum(rate(2xx)) / sum(rate(all))` is empty. While the
    # builtin source sees traffic, that is a failed check at once, not a wait that keeps users on it.
    from rheostat.model.load import parse_text

    h = Harness(
        canary_yaml("""
interval: 10s
threshold: 2
stepWeight: 25
metrics:
- name: ok-ratio
  templateRef: {name: ok-ratio}
  thresholdRange: {min: 99}
  interval: 10s
"""),
        metrics={"ok-ratio": None, "request-success-rate": 0.0},
    )
    (tmpl,) = parse_text("""
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: ok-ratio, namespace: test}
spec:
  provider: {type: prometheus, address: "http://prometheus:9090"}
  query: 'sum(rate(ok[{{ interval }}])) / sum(rate(all[{{ interval }}]))'
""")
    with h.store.transaction():
        h.store.put_object("MetricTemplate", "test/ok-ratio", tmpl.model_dump(mode="json"), "t")
    await h.initialized()
    await h.run(3)
    st = h.state()
    assert st.failed_checks == 1
    assert "although the canary served requests in the window" in st.message
    h.metrics.values["request-success-rate"] = None  # no traffic at all: then it waits
    await h.tick()
    assert h.state().failed_checks == 1 and "waiting for traffic to measure ok-ratio" in h.state().message
