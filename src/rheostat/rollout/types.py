"""Values that cross the pure state machine's boundary: status in, observations in, a decision out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from rheostat.plugins.notifiers.base import Severity
from rheostat.plugins.platforms.base import Readiness
from rheostat.plugins.routers.base import Routes


class Phase(enum.StrEnum):
    INITIALIZING = "Initializing"
    INITIALIZED = "Initialized"
    WAITING = "Waiting"
    PROGRESSING = "Progressing"
    WAITING_PROMOTION = "WaitingPromotion"
    PROMOTING = "Promoting"
    FINALISING = "Finalising"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINATING = "Terminating"
    TERMINATED = "Terminated"


RUNNING = frozenset(
    {Phase.PROGRESSING, Phase.WAITING, Phase.WAITING_PROMOTION, Phase.PROMOTING, Phase.FINALISING}
)
AT_REST = frozenset({Phase.INITIALIZED, Phase.SUCCEEDED, Phase.FAILED})


@dataclass(frozen=True)
class CanaryStatus:
    """Everything that lasts between ticks. Persisted as JSON, one row per canary."""

    phase: Phase = Phase.INITIALIZING
    canary_weight: int = 0
    failed_checks: int = 0
    iterations: int = 0
    mirrored: bool = False
    last_applied_spec: str = ""
    last_promoted_spec: str = ""
    last_transition_time: float = 0.0
    message: str = ""
    waiting_alerted: bool = False  # the "waiting for approval" alert goes out once per wait
    session_cookie: str = ""  # value of the sticky cookie of the current run
    run_started: float = 0.0  # when the canary group was first seen ready in this run; 0: not yet
    tick: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "canaryWeight": self.canary_weight,
            "failedChecks": self.failed_checks,
            "iterations": self.iterations,
            "mirrored": self.mirrored,
            "lastAppliedSpec": self.last_applied_spec,
            "lastPromotedSpec": self.last_promoted_spec,
            "lastTransitionTime": self.last_transition_time,
            "message": self.message,
            "waitingAlerted": self.waiting_alerted,
            "sessionAffinityCookie": self.session_cookie,
            "runStarted": self.run_started,
            "tick": self.tick,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> CanaryStatus:
        def num(key: str) -> int:
            value = data.get(key, 0)
            return int(value) if isinstance(value, int | float) else 0

        def real(key: str) -> float:
            value = data.get(key, 0.0)
            return float(value) if isinstance(value, int | float) else 0.0

        return cls(
            phase=Phase(str(data.get("phase", Phase.INITIALIZING.value))),
            canary_weight=num("canaryWeight"),
            failed_checks=num("failedChecks"),
            iterations=num("iterations"),
            mirrored=bool(data.get("mirrored", False)),
            last_applied_spec=str(data.get("lastAppliedSpec", "")),
            last_promoted_spec=str(data.get("lastPromotedSpec", "")),
            last_transition_time=real("lastTransitionTime"),
            message=str(data.get("message", "")),
            waiting_alerted=bool(data.get("waitingAlerted", False)),
            session_cookie=str(data.get("sessionAffinityCookie", "")),
            run_started=real("runStarted"),
            tick=num("tick"),
        )


class Check(enum.StrEnum):
    """The groups of checks a tick may need; the engine runs one group when the step asks for it."""

    CONFIRM_ROLLOUT = "confirm-rollout"
    PRE_ROLLOUT = "pre-rollout"
    ANALYSIS = "analysis"  # rollout hooks, then metrics, judged
    CONFIRM_TRAFFIC_INCREASE = "confirm-traffic-increase"
    CONFIRM_PROMOTION = "confirm-promotion"
    ROLLBACK = "rollback"  # rollback hooks: a 2xx asks for a rollback


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float | None  # None: no data or provider error (see message)
    min: float | None = None
    max: float | None = None
    ok: bool = False
    message: str = ""
    primary: float | None = None  # the same metric measured on the primary, for comparison (builtin metrics)
    no_data: bool = False  # the query ran and found nothing (no traffic yet), as opposed to an error


class Verdict(enum.StrEnum):
    """A judge's conclusion, for judges that can be conclusive (the sequential judge). None: threshold rules."""

    PASS = "pass"  # conclusive: the canary is not worse; traffic steps up and promotion may follow
    CONTINUE = "continue"  # not conclusive yet: traffic may step up, promotion waits
    FAIL = "fail"  # conclusive: the canary is worse; roll back now, whatever the threshold


@dataclass(frozen=True)
class CheckOutcome:
    ok: bool
    message: str = ""
    metrics: tuple[MetricValue, ...] = ()
    verdict: Verdict | None = None  # None: `ok` alone decides (a failure counts toward the threshold)
    no_data: bool = False  # failed only for lack of data: early in a run that means "wait", not "failed"


@dataclass(frozen=True)
class Manual:
    """What people asked for through the CLI or API, kept until the run it applies to ends."""

    approve: bool = False  # open every confirm-* gate
    halt: bool = False  # hold the current weight; checks keep running
    rollback: bool = False  # roll back now
    promote: bool = False  # skip the rest of the analysis and promote
    paused: bool = False  # no ticks at all until resumed; outlives the run


REQUESTS = frozenset({"approve", "halt", "rollback", "promote"})  # per run; `paused` outlives runs
STALE_AT_START = frozenset({"halt", "rollback", "promote"})  # an approval given while Waiting carries on


@dataclass(frozen=True)
class Observations:
    now: float
    revision: str  # what the target declares now
    primary_revision: str | None  # what the primary is given (None: not created yet)
    primary: Readiness
    canary: Readiness
    routes: Routes
    manual: Manual = Manual()
    checks: dict[Check, CheckOutcome] = field(default_factory=dict)

    def with_check(self, check: Check, outcome: CheckOutcome) -> Observations:
        return replace(self, checks={**self.checks, check: outcome})


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    warning: bool = False
    alert: Severity | None = None  # also sent to the canary's alert providers at this severity


class ActionKind(enum.StrEnum):
    INIT_PRIMARY = "init-primary"  # create the primary from the target, scale the target to 0
    SCALE_UP = "scale-up"  # the canary group, to its declared replicas
    SCALE_DOWN = "scale-down"  # the canary group, to 0
    PROMOTE = "promote"  # primary takes the canary's template
    POST_ROLLOUT = "post-rollout"  # run post-rollout hooks


class Outcome(enum.StrEnum):
    """A finished run, for the successes/failures counters."""

    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class Decision:
    status: CanaryStatus
    routes: Routes | None = None  # applied first; None leaves the live routes alone
    actions: tuple[ActionKind, ...] = ()  # applied in order, after the routes
    events: tuple[Event, ...] = ()
    outcome: Outcome | None = None
    clear_manual: frozenset[str] = frozenset()  # manual requests that no longer apply (see REQUESTS)


@dataclass(frozen=True)
class NeedCheck:
    """The step cannot decide without this group of checks; run it and step again."""

    check: Check


Step = Decision | NeedCheck
