"""What `rheostat run` prints: a line per meaningful change, logs without tracebacks unless -v, JSON logs,
and event messages in user terms (no Python class names).

The narrator and the log handler are tested here on a real store; `tests/test_run_cli.py` runs the real
`rheostat run` and reads its stdout and stderr.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import re
import time
from pathlib import Path

import pytest

from rheostat.cli import logs
from rheostat.cli.narrate import Narrator
from rheostat.model.canary import Webhook
from rheostat.plugins.routers.base import RouterError
from rheostat.rollout.scheduler import Scheduler
from rheostat.rollout.webhooks import HookCaller
from rheostat.store import Store
from rheostat.util.errors import describe_error
from tests.harness import Harness, canary_yaml
from tests.servers import free_port

# What a person must never read in an event or a console line.
PYTHON_SPEAK = re.compile(r"\b\w*(Error|Exception)\b[:(]|Traceback|KeyError|TickError|\w+Error\('")


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_release_is_told_in_one_line_per_change(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    with store.transaction():
        store.add_event("Canary", "apps/web", "Promoted", "from an earlier run", ts=time.time() - 60)
    out = io.StringIO()
    narrator = Narrator(store, since=time.time() - 1, out=out)
    events = [
        (
            "GitRepository",
            "flux-system/flux-system",
            "NewArtifact",
            "stored artifact for revision 'main@sha1:0123456789abcdef0123456789abcdef01234567'",
            False,
        ),
        (
            "Kustomization",
            "flux-system/flux-system",
            "ReconciliationSucceeded",
            "applied revision main@sha1:0123456789abcdef0123456789abcdef01234567: 0 created, 1 updated, 0 repaired, "
            "0 pruned",
            False,
        ),
        ("Canary", "apps/web", "NewRevision", "New revision detected! Scaling up web", False),
        ("Canary", "apps/web", "Waiting", "waiting for the canary of web: 0/2 ready", False),
        ("Canary", "apps/web", "Advance", "Advance web canary weight 20", False),
        ("Canary", "apps/web", "Advance", "Advance web canary weight 40", False),
        ("Canary", "apps/web", "Promoting", "Copying web template to the primary", False),
        ("Canary", "apps/web", "Promoting", "promotion of web: primary weight 50", False),
        ("Canary", "apps/web", "Promoted", "Promotion completed! web promoted", False),
    ]
    for kind, key, reason, message, warning in events:
        with store.transaction():  # one commit each, as the controller writes them
            store.add_event(kind, key, reason, message, warning)
    await settle()
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]  # without the time
    assert lines == [
        "Kustomization flux-system/flux-system: applied revision main@0123456: 0 created, 1 updated, "
        "0 repaired, 0 pruned",
        "Canary apps/web: rollout started: New revision detected! Scaling up web",
        "Canary apps/web: step: canary weight 20%",
        "Canary apps/web: step: canary weight 40%",
        "Canary apps/web: promoting: Copying web template to the primary",
        "Canary apps/web: promoted",
    ]
    narrator.close()
    store.close()


async def test_a_fault_that_repeats_every_tick_is_told_once_and_again_after_a_recovery(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "state.db")
    out = io.StringIO()
    Narrator(store, since=0, out=out)
    clash = "listener for apps/web: port 127.0.0.1:9898 is held by pid 42 (envoy)"
    for message in [clash, clash, clash]:
        with store.transaction():
            store.add_event("Canary", "apps/web", "TickFailed", message, warning=True)
        await settle()
    with store.transaction():
        store.add_event(
            "Canary",
            "apps/web",
            "CheckFailed",
            "request-success-rate 80 < 99 (failed checks 1/2)",
            warning=True,
        )
        store.add_event(
            "Canary",
            "apps/web",
            "Rollback",
            "Rolling back web: failed checks threshold reached 2: request-success-rate 80 < 99",
            warning=True,
        )
        store.add_event(
            "Kustomization",
            "flux-system/flux-system",
            "PolicyViolation",
            "revision main@sha1:0123456789abcdef blocked by policy: Workload web has no readinessProbe",
            warning=True,
        )
        store.add_event(
            "Workload",
            "apps/web",
            "PolicyViolation",
            "[deny] workload-must-have-readiness-probe: Workload web has no readinessProbe (commit main@sha1:"
            "0123456789abcdef, found by gate)",
            warning=True,
        )
        store.add_event(
            "Workload",
            "apps/old",
            "PolicyViolation",
            "[deny] workload-must-have-readiness-probe: Workload old has no readinessProbe (commit -, found by audit)",
            warning=True,
        )
        store.add_event(
            "GitRepository",
            "flux-system/flux-system",
            "FetchFailed",
            "GitOperationFailed: repository not found",
            warning=True,
        )
    await settle()
    with store.transaction():
        store.add_event("Canary", "apps/web", "NewRevision", "New revision detected! Scaling up web")
        store.add_event("Canary", "apps/web", "TickFailed", clash, warning=True)
    await settle()
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert lines == [
        f"Canary apps/web: stuck: {clash}",
        "Canary apps/web: check failed: request-success-rate 80 < 99 (failed checks 1/2)",
        "Canary apps/web: rolled back: failed checks threshold reached 2: request-success-rate 80 < 99",
        "Kustomization flux-system/flux-system: revision main@0123456 blocked by policy: "
        "Workload web has no readinessProbe",
        "Workload apps/old: policy violation: [deny] workload-must-have-readiness-probe: Workload old has no "
        "readinessProbe (commit -, found by audit)",
        "GitRepository flux-system/flux-system: source fetch failing: GitOperationFailed: repository not found",
        "Canary apps/web: rollout started: New revision detected! Scaling up web",
        f"Canary apps/web: stuck: {clash}",  # the fault again after a change is news again
    ]
    store.close()


async def test_json_narration_is_one_object_per_line_naming_the_object(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    out = io.StringIO()
    Narrator(store, since=0, out=out, fmt="json")
    with store.transaction():
        store.add_event("Canary", "apps/web", "Rollback", "Rolling back web: no data", warning=True)
        store.add_event("Canary", "apps/web", "Advance", "Advance web canary weight 20")
    await settle()
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(o["level"], o["kind"], o["object"], o["reason"]) for o in objs] == [
        ("warning", "Canary", "apps/web", "Rollback"),
        ("info", "Canary", "apps/web", "Advance"),
    ]
    assert objs[0]["message"] == "Rolling back web: no data" and objs[0]["logger"] == "rheostat.events"
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$", o["time"]) for o in objs)
    store.close()


def _record(
    level: int, msg: str, *args: object, exc: BaseException | None = None, **extra: object
) -> logging.LogRecord:
    record = logging.LogRecord(
        "rheostat.x",
        level,
        __file__,
        1,
        msg,
        args,
        (type(exc), exc, exc.__traceback__) if exc is not None else None,
    )
    record.__dict__.update(extra)
    return record


def _raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_a_warning_is_one_line_without_traceback_unless_verbose() -> None:
    exc = _raised(RouterError("listener for apps/web: port 127.0.0.1:9898 is held by pid 42 (envoy)"))
    record = _record(logging.WARNING, "tick of %s failed", "apps/web", exc=exc)
    plain = logs.TextFormatter(verbose=False).format(record)
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d warning: tick of apps/web failed: listener for apps/web: port 127\.0\.0\.1:9898 is held "
        r"by pid 42 \(envoy\)",
        plain,
    ), plain
    verbose = logs.TextFormatter(verbose=True).format(record)
    assert "Traceback" in verbose and "rheostat.x" in verbose


def test_the_same_fault_is_logged_once_whoever_meets_it() -> None:
    repeats = logs.Repeats(window_s=60)
    clash = RouterError("port 9898 is held by pid 42")
    assert repeats.filter(
        _record(logging.ERROR, "the routes of %s could not follow", "a/b", exc=_raised(clash))
    )
    assert not repeats.filter(_record(logging.WARNING, "tick of %s failed", "a/b", exc=_raised(clash)))
    assert repeats.filter(_record(logging.WARNING, "something else"))
    assert not repeats.filter(_record(logging.WARNING, "something else"))


def test_json_logs_carry_time_level_logger_message_and_the_object() -> None:
    exc = _raised(KeyError("weights"))
    record = _record(
        logging.WARNING, "tick of %s failed", "apps/web", exc=exc, kind="Canary", object="apps/web"
    )
    body = json.loads(logs.JsonFormatter(verbose=False).format(record))
    assert set(body) == {"time", "level", "logger", "message", "kind", "object"}
    assert (body["level"], body["logger"], body["kind"], body["object"]) == (
        "warning",
        "rheostat.x",
        "Canary",
        "apps/web",
    )
    assert not PYTHON_SPEAK.search(body["message"]), body["message"]
    assert "traceback" in json.loads(logs.JsonFormatter(verbose=True).format(record))


def test_errors_are_described_without_python_class_names() -> None:
    said = {
        describe_error(KeyError("spec")): "spec",
        describe_error(OSError(errno.EADDRINUSE, "Address already in use")): "already in use",
        describe_error(
            FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y.yaml")
        ): "/x/y.yaml",
        describe_error(TimeoutError()): "timed out",
        describe_error(RuntimeError()): "internal error",
        describe_error(ValueError("interval '5x' is not a duration")): "interval '5x'",
    }
    for text, expected in said.items():
        assert expected in text and not PYTHON_SPEAK.search(text) and "Errno" not in text, text


async def test_a_failed_tick_is_an_event_in_user_terms() -> None:
    h = Harness(canary_yaml("interval: 100ms\nthreshold: 2\nstepWeight: 25\nmaxWeight: 50\n"))
    faults = [
        KeyError("canaryWeight"),
        RouterError("listener for test/podinfo: port 127.0.0.1:9 is held by pid 1"),
    ]

    async def failing(key: object) -> None:
        raise faults[0] if len(faults) == 1 else faults.pop(0)

    h.engine.tick = failing  # type: ignore[method-assign]
    sched = Scheduler(h.engine, sync_interval_s=0.02)
    task = asyncio.create_task(sched.run())
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if len([e for e in h.store.events(key=h.key) if e.reason == "TickFailed"]) >= 2:
                break
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    messages = [e.message for e in h.store.events(key=h.key) if e.reason == "TickFailed"]
    assert len(messages) >= 2, messages
    assert "canaryWeight is missing" in messages[0], messages
    assert messages[1] == "listener for test/podinfo: port 127.0.0.1:9 is held by pid 1", messages
    assert not any(PYTHON_SPEAK.search(m) or "rheostat." in m for m in messages), messages


async def test_a_webhook_that_cannot_be_reached_says_where_and_why() -> None:
    url = f"http://127.0.0.1:{free_port()}/"
    caller = HookCaller()
    try:
        res = await caller.call(Webhook(name="load-test", url=url, timeout="2s"), {"name": "web"})
    finally:
        await caller.aclose()
    assert not res.ok
    assert res.message == "webhook load-test failed: cannot connect", res.message
    assert not PYTHON_SPEAK.search(res.message) and "ConnectError" not in res.message, res.message


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_setup_routes_every_record_through_one_handler(fmt: str) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    try:
        logs.setup(verbose=False, fmt=fmt, stream=out)
        logging.getLogger("rheostat.test").info("hidden at the default level")
        logging.getLogger("rheostat.test").warning("shown")
        logging.getLogger("rheostat.run").info("what run says of itself")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines
    if fmt == "json":
        assert [json.loads(line)["message"] for line in lines] == ["shown", "what run says of itself"]
    else:
        assert lines[0].endswith("warning: shown") and lines[1].endswith("info: what run says of itself")


async def test_the_narrator_stays_quiet_when_the_store_closes_under_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    out = io.StringIO()
    loop = asyncio.get_running_loop()
    faults: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _, context: faults.append(context))
    try:
        Narrator(store, since=0, out=out)
        with store.transaction():
            store.add_event("Canary", "apps/web", "Promoted", "Promotion completed! web promoted")
        store.close()  # as the server stops: the read the commit woke comes after
        await settle()
    finally:
        loop.set_exception_handler(None)
    assert faults == [] and out.getvalue() == ""
