"""The state machine: `next_step(canary, status, observations)` is pure; the engine does the I/O.

It follows Flagger's tick (pkg/controller/scheduler.go, as described in docs/architecture.md) with a few
traps removed: a failed check that reaches the threshold rolls back in the same tick, a gate that keeps
failing does not loop iterations, and reverting the target mid-run cancels the run instead of analysing
the version that is already live.
"""

from __future__ import annotations

from dataclasses import replace

from rheostat.model.canary import Analysis, Canary, Strategy
from rheostat.plugins.notifiers.base import Severity
from rheostat.plugins.platforms.base import Readiness
from rheostat.plugins.routers.base import Routes, StickyCookie
from rheostat.rollout.types import (
    AT_REST,
    REQUESTS,
    STALE_AT_START,
    ActionKind,
    CanaryStatus,
    Check,
    Decision,
    Event,
    MetricValue,
    NeedCheck,
    Observations,
    Outcome,
    Phase,
    Step,
    Verdict,
)
from rheostat.rollout.weights import next_step_weight

ALL_PRIMARY = Routes(100, 0)
WAITING_EVIDENCE = "is waiting for conclusive evidence before promotion"  # in the status message while so
GATES = {Check.CONFIRM_ROLLOUT, Check.CONFIRM_TRAFFIC_INCREASE, Check.CONFIRM_PROMOTION}


def has_hooks(canary: Canary, kind: str) -> bool:
    return any(h.kind == kind for h in canary.spec.the_analysis.webhooks)


def next_step(canary: Canary, status: CanaryStatus, obs: Observations) -> Step:
    return _Tick(canary, status, obs).step()


class _Tick:
    """One tick's reasoning. Each method returns a Step or None to go on."""

    def __init__(self, canary: Canary, status: CanaryStatus, obs: Observations) -> None:
        self.c = canary
        self.a: Analysis = canary.spec.the_analysis
        self.s = replace(status, tick=status.tick + 1)
        self.obs = obs
        self.name = canary.metadata.name
        self.target = canary.spec.targetRef.name
        self.inconclusive = False  # a judge said "continue": traffic may step up, promotion waits
        self.early: str | None = None  # with promoteEarly, the judge's "not worse" evidence: promote now

    # -- helpers -------------------------------------------------------------------------------------

    def status(self, **changes: object) -> CanaryStatus:
        new = replace(self.s, **changes)  # type: ignore[arg-type]
        if new.phase != self.s.phase:
            new = replace(new, last_transition_time=self.obs.now)
        return new

    def decide(self, status: CanaryStatus | None = None, *events: Event, **kw: object) -> Decision:
        status = status or self.s
        if events:
            status = replace(status, message=events[-1].message)
        if status.phase == self.s.phase:  # the same news every tick (still waiting) is one event, not many
            events = tuple(e for e in events if e.message != self.s.message or e.alert is not None)
        return Decision(status=status, events=events, **kw)  # type: ignore[arg-type]

    def gate(self, check: Check) -> Step | bool:
        """A confirm-* gate: open when approved by hand, or when every hook of its type says 2xx."""
        if self.obs.manual.approve or not has_hooks(self.c, check.value):
            return True
        outcome = self.obs.checks.get(check)
        if outcome is None:
            return NeedCheck(check)
        return outcome.ok

    def deadline_passed(self, r: Readiness) -> bool:
        if r.fatal:
            return True
        since = r.not_ready_since
        return since is not None and self.obs.now - since >= self.c.spec.progressDeadlineSeconds

    def sticky(self) -> StickyCookie | None:
        sa = self.a.sessionAffinity
        if sa is None or not self.s.session_cookie:
            return None
        return StickyCookie(sa.cookieName, self.s.session_cookie, sa.maxAge)

    def rest_routes(self) -> Routes:
        if self.s.phase is Phase.FAILED and self.s.canary_weight == 100:
            return Routes(0, 100)  # a failed promotion keeps serving from the canary
        return ALL_PRIMARY

    def new_run(self, revision: str) -> CanaryStatus:
        """A fresh run of `revision`: weight, checks and iterations start from zero."""
        return self.status(
            phase=Phase.PROGRESSING,
            canary_weight=0,
            failed_checks=0,
            iterations=0,
            mirrored=False,
            last_applied_spec=revision,
            waiting_alerted=False,
            session_cookie=revision,
            run_started=0.0,
        )

    def rollback(self, message: str, alert: Severity = Severity.ERROR) -> Decision:
        return self.decide(
            self.status(
                phase=Phase.FAILED, canary_weight=0, mirrored=False, last_applied_spec=self.obs.revision
            ),
            Event("Rollback", f"Rolling back {self.name}: {message}", warning=True, alert=alert),
            routes=ALL_PRIMARY,
            actions=(ActionKind.SCALE_DOWN, ActionKind.POST_ROLLOUT),
            outcome=Outcome.FAILED,
            clear_manual=REQUESTS,
        )

    def failed_check(self, what: str) -> Decision:
        failed = self.s.failed_checks + 1
        event = Event("CheckFailed", f"{what} (failed checks {failed}/{self.a.threshold})", warning=True)
        self.s = replace(self.s, failed_checks=failed)
        if failed >= self.a.threshold:
            return self.rollback(f"failed checks threshold reached {failed}: {what}")
        return self.decide(None, event)

    # -- the tick ------------------------------------------------------------------------------------

    def step(self) -> Step:
        if self.c.spec.suspend:
            return Decision(status=self.s)
        for part in (
            self.initialize,
            self.at_rest,
            self.moved_while_promoting,
            self.primary_ready,
            self.start_run,
            self.revision_changed,
            self.canary_ready,
            self.skip_analysis,
            self.manual_rollback,
            self.promoting,
            self.finalising,
            self.threshold,
            self.checks,
        ):
            out = part()
            if out is not None:
                return out
        return self.advance()

    def initialize(self) -> Step | None:
        if self.s.phase is not Phase.INITIALIZING:
            return None
        if not self.c.spec.skipAnalysis and not self.obs.primary.ready:
            if self.deadline_passed(self.obs.primary):
                return self.decide(
                    self.status(phase=Phase.FAILED),
                    Event(
                        "InitFailed",
                        f"primary of {self.name} not ready: {self.obs.primary.message}",
                        True,
                        Severity.ERROR,
                    ),
                    outcome=Outcome.FAILED,
                )
            return self.decide(None, Event("Waiting", f"waiting for the primary: {self.obs.primary.message}"))
        rev = self.obs.primary_revision
        if rev is None:  # the platform has not created the primary yet
            return self.decide(
                None, Event("Waiting", f"waiting for the primary of {self.name} to be created")
            )
        events = [Event("Initialized", f"Initialization done! {self.name}", alert=Severity.INFO)]
        if self.obs.revision != rev:  # changed while initializing: the primary keeps the first, this one runs
            events.append(
                Event("NewRevision", f"{self.target} changed while initializing; its new revision runs next")
            )
        return self.decide(
            self.status(
                phase=Phase.INITIALIZED, last_applied_spec=rev, last_promoted_spec=rev, canary_weight=0
            ),
            *events,
            routes=ALL_PRIMARY,
            actions=(ActionKind.SCALE_DOWN,),
        )

    @property
    def new_revision(self) -> bool:
        rev = self.obs.revision
        return rev not in (self.s.last_applied_spec, self.s.last_promoted_spec)

    def at_rest(self) -> Step | None:
        if self.s.phase not in AT_REST or self.new_revision:
            return None
        status = self.s
        if self.obs.revision != status.last_applied_spec:  # back at the promoted revision: nothing to run
            status = replace(status, last_applied_spec=self.obs.revision)
        want = self.rest_routes()
        live = self.obs.routes
        if (live.primary, live.canary, live.mirror, live.match, live.sticky) != (
            want.primary,
            want.canary,
            False,
            (),
            None,
        ):
            return self.decide(
                status,
                Event(
                    "RoutesRepaired", f"routes of {self.name} set back to {want.primary}/{want.canary}", True
                ),
                routes=want,
            )
        return Decision(status=status)

    def moved_while_promoting(self) -> Step | None:
        """The target changed after its analysis passed: finish promoting what was analysed, nothing newer.

        The primary keeps the analysed revision; the canary group no longer runs it, so it gets no more
        traffic. The new revision runs as a new canary once the promotion is recorded.
        """
        if self.s.phase not in (Phase.PROMOTING, Phase.FINALISING):
            return None
        analysed = self.s.last_applied_spec
        if self.obs.primary_revision != analysed:
            if self.obs.revision == analysed:  # the promotion did not take (lost platform state): again
                return self.decide(
                    None,
                    Event("Promoting", f"Copying {self.target} template to the primary"),
                    actions=(ActionKind.PROMOTE,),
                )
            return self.decide(
                self.new_run(self.obs.revision),
                Event(
                    "NewRevision",
                    f"the primary of {self.name} never took {analysed} and {self.target} moved on; "
                    "restarting analysis",
                    True,
                    Severity.WARN,
                ),
                routes=ALL_PRIMARY,
                actions=(ActionKind.SCALE_UP,),
                clear_manual=REQUESTS,
            )
        if self.obs.revision == analysed or (self.s.phase is Phase.FINALISING and self.s.canary_weight == 0):
            return None
        return self.decide(
            self.status(phase=Phase.FINALISING, canary_weight=0),
            Event(
                "TargetChanged",
                f"{self.target} changed during the promotion of {analysed}: all traffic of {self.name} on the "
                "primary; the new revision runs next",
                True,
            ),
            routes=ALL_PRIMARY if self.obs.routes != ALL_PRIMARY else None,
            actions=(ActionKind.SCALE_DOWN,),
        )

    def primary_ready(self) -> Step | None:
        if self.c.spec.skipAnalysis or self.obs.primary.ready:
            return None
        r = self.obs.primary
        if self.deadline_passed(r) and self.s.phase not in AT_REST:
            moved = self.obs.revision != self.s.last_applied_spec  # the canary no longer runs what passed
            if self.s.phase in (Phase.PROMOTING, Phase.FINALISING) and not moved:
                return self.decide(
                    self.status(phase=Phase.FAILED, canary_weight=100),
                    Event(
                        "PromotionFailed",
                        f"Promotion failed, primary not ready: {r.message}",
                        True,
                        Severity.ERROR,
                    ),
                    routes=Routes(0, 100),
                    actions=(ActionKind.POST_ROLLOUT,),
                    outcome=Outcome.FAILED,
                    clear_manual=REQUESTS,
                )
            return self.rollback(f"primary not ready, progress deadline exceeded: {r.message}")
        return self.decide(None, Event("Waiting", f"waiting for the primary of {self.name}: {r.message}"))

    def start_run(self) -> Step | None:
        if self.s.phase not in AT_REST and self.s.phase is not Phase.WAITING:
            return None
        if self.s.phase is Phase.WAITING and not self.new_revision:
            return self.decide(
                self.status(phase=Phase.SUCCEEDED, last_applied_spec=self.obs.revision),
                Event("Cancelled", f"{self.target} is back at the promoted revision; nothing to roll out"),
                clear_manual=REQUESTS,
            )
        if self.s.phase is Phase.WAITING and self.obs.manual.rollback:
            return self.decide(
                self.status(phase=Phase.FAILED, last_applied_spec=self.obs.revision),
                Event(
                    "Rollback", f"rollout of {self.name} refused by hand while waiting", True, Severity.WARN
                ),
                outcome=Outcome.FAILED,
                clear_manual=REQUESTS,
            )
        gate = self.gate(Check.CONFIRM_ROLLOUT)
        if isinstance(gate, NeedCheck):
            return gate
        if not gate:
            first = not self.s.waiting_alerted
            muted = all(h.muteAlert for h in self.a.webhooks if h.kind == Check.CONFIRM_ROLLOUT.value)
            return self.decide(
                self.status(phase=Phase.WAITING, waiting_alerted=True),
                Event(
                    "Waiting",
                    f"{self.name} is waiting for approval (confirm-rollout)",
                    True,
                    Severity.WARN if first and not muted else None,
                ),
            )
        rev = self.obs.revision
        return self.decide(
            self.new_run(rev),
            Event("NewRevision", f"New revision detected! Scaling up {self.target}", alert=Severity.INFO),
            routes=ALL_PRIMARY if self.obs.routes != ALL_PRIMARY else None,
            actions=(ActionKind.SCALE_UP,),
            clear_manual=STALE_AT_START,
        )

    def revision_changed(self) -> Step | None:
        if self.s.phase not in (Phase.PROGRESSING, Phase.WAITING_PROMOTION):
            return None
        rev = self.obs.revision
        if rev == self.s.last_applied_spec:
            return None
        if rev == self.s.last_promoted_spec:
            return self.decide(
                self.status(phase=Phase.SUCCEEDED, canary_weight=0, last_applied_spec=rev),
                Event(
                    "Cancelled", f"{self.target} was set back to the promoted revision; run cancelled", True
                ),
                routes=ALL_PRIMARY,
                actions=(ActionKind.SCALE_DOWN,),
                clear_manual=REQUESTS,
            )
        return self.decide(
            self.new_run(rev),
            Event(
                "NewRevision",
                f"New revision detected! Restarting analysis for {self.target}",
                alert=Severity.INFO,
            ),
            routes=ALL_PRIMARY,
            actions=(ActionKind.SCALE_UP,),
            clear_manual=REQUESTS,
        )

    def canary_ready(self) -> Step | None:
        r = self.obs.canary
        if r.ready:
            if self.s.run_started <= 0 and self.s.phase in (Phase.PROGRESSING, Phase.WAITING_PROMOTION):
                self.s = replace(self.s, run_started=self.obs.now)  # metric windows start here
            return None
        if self.deadline_passed(r):
            return self.rollback(f"canary not ready, progress deadline exceeded: {r.message}")
        return self.decide(None, Event("Waiting", f"waiting for the canary of {self.name}: {r.message}"))

    def skip_analysis(self) -> Step | None:
        if not self.c.spec.skipAnalysis or self.s.phase not in (Phase.PROGRESSING, Phase.WAITING_PROMOTION):
            return None
        return self.decide(
            self.status(phase=Phase.SUCCEEDED, canary_weight=0, last_promoted_spec=self.s.last_applied_spec),
            Event(
                "Promoted",
                f"Promotion completed! Canary analysis was skipped for {self.target}",
                alert=Severity.INFO,
            ),
            routes=ALL_PRIMARY,
            actions=(ActionKind.PROMOTE, ActionKind.SCALE_DOWN, ActionKind.POST_ROLLOUT),
            outcome=Outcome.SKIPPED,
            clear_manual=REQUESTS,
        )

    def manual_rollback(self) -> Step | None:
        if self.s.phase not in (Phase.PROGRESSING, Phase.WAITING_PROMOTION):
            return None
        if self.obs.manual.rollback:
            return self.rollback("rollback requested by hand", Severity.WARN)
        if self.obs.manual.promote:
            return self.decide(
                self.status(phase=Phase.PROMOTING),
                Event(
                    "Promoting",
                    f"promotion of {self.target} requested by hand: copying its template to the primary",
                    alert=Severity.INFO,
                ),
                actions=(ActionKind.PROMOTE,),
            )
        if not has_hooks(self.c, Check.ROLLBACK.value):
            return None
        outcome = self.obs.checks.get(Check.ROLLBACK)
        if outcome is None:
            return NeedCheck(Check.ROLLBACK)
        if outcome.ok:
            return self.rollback("Rolling back manual webhook invoked", Severity.WARN)
        return None

    def promoting(self) -> Step | None:
        if self.s.phase is not Phase.PROMOTING:
            return None
        step = self.a.stepWeightPromotion or 0
        live = self.obs.routes
        if step <= 0 or self.a.strategy is Strategy.AB_TESTING or live.match:
            primary = 100
        else:
            primary = min(100, live.primary + step)
        if primary >= 100:
            return self.decide(
                self.status(phase=Phase.FINALISING, canary_weight=0),
                Event("Finalising", f"all traffic of {self.name} back on the primary"),
                routes=ALL_PRIMARY,
            )
        return self.decide(
            self.status(canary_weight=100 - primary),
            Event("Promoting", f"promotion of {self.name}: primary weight {primary}"),
            routes=Routes(primary, 100 - primary, sticky=self.sticky()),
        )

    def finalising(self) -> Step | None:
        if self.s.phase is not Phase.FINALISING:
            return None
        return self.decide(
            self.status(phase=Phase.SUCCEEDED, canary_weight=0, last_promoted_spec=self.s.last_applied_spec),
            Event("Promoted", f"Promotion completed! {self.target} promoted", alert=Severity.INFO),
            routes=ALL_PRIMARY if self.obs.routes != ALL_PRIMARY else None,
            actions=(ActionKind.SCALE_DOWN, ActionKind.POST_ROLLOUT),
            outcome=Outcome.COMPLETED,
            clear_manual=REQUESTS,
        )

    def threshold(self) -> Step | None:
        if self.s.failed_checks >= self.a.threshold:  # e.g. resumed after a crash right after a failure
            return self.rollback(f"failed checks threshold reached {self.s.failed_checks}")
        return None

    def checks(self) -> Step | None:
        live = self.obs.routes
        first = (
            live.canary == 0
            and self.s.iterations == 0
            and not live.match
            and not (self.a.mirror and live.mirror)
        )
        check = Check.PRE_ROLLOUT if first else Check.ANALYSIS
        if first and not has_hooks(self.c, Check.PRE_ROLLOUT.value):
            return None
        outcome = self.obs.checks.get(check)
        if outcome is None:
            return NeedCheck(check)
        if outcome.verdict is Verdict.FAIL:  # conclusive evidence of a regression: no threshold to wait for
            return self.rollback(outcome.message or f"{check.value}: the canary is worse than the primary")
        if not outcome.ok and outcome.no_data:
            return self.no_data(outcome.message)
        if not outcome.ok:
            return self.failed_check(outcome.message or f"{check.value} checks failed")
        self.inconclusive = outcome.verdict is Verdict.CONTINUE
        if check is Check.ANALYSIS and outcome.verdict is Verdict.PASS and self.a.promoteEarly:
            self.early = outcome.message
        return None

    def no_data(self, message: str) -> Decision:
        """No traffic measured yet: wait, until the progress deadline (from the run's start) says otherwise."""
        started = self.s.run_started or self.obs.now
        if self.obs.now - started >= self.c.spec.progressDeadlineSeconds:
            return self.failed_check(f"no data within the progress deadline: {message}")
        names = ", ".join(m.name for m in self.obs_outcome_metrics() if m.no_data) or "its metrics"
        return self.decide(
            None, Event("WaitingForData", f"{self.name} is waiting for traffic to measure {names}")
        )

    def obs_outcome_metrics(self) -> tuple[MetricValue, ...]:
        outcome = self.obs.checks.get(Check.ANALYSIS)
        return outcome.metrics if outcome is not None else ()

    # -- moving forward ------------------------------------------------------------------------------

    def hold(self, why: str) -> Decision:
        return self.decide(None, Event("Halted", why))  # decide() keeps a repeated message to one event

    def wait_promotion(self) -> Decision:
        first = self.s.phase is not Phase.WAITING_PROMOTION
        muted = all(h.muteAlert for h in self.a.webhooks if h.kind == Check.CONFIRM_PROMOTION.value)
        return self.decide(
            self.status(phase=Phase.WAITING_PROMOTION),
            Event(
                "Waiting",
                f"{self.name} is waiting for approval (confirm-promotion)",
                True,
                Severity.WARN if first and not muted else None,
            ),
        )

    def wait_evidence(self) -> Decision:
        return self.hold(f"{self.name} {WAITING_EVIDENCE}")

    def promotion_blocked(self) -> Step | None:
        """None when promotion may go ahead: the judge has enough evidence and confirm-promotion is open."""
        if self.inconclusive:
            return self.wait_evidence()
        gate = self.gate(Check.CONFIRM_PROMOTION)
        if isinstance(gate, NeedCheck):
            return gate
        if not gate:
            return self.wait_promotion()
        return None

    def promote(self) -> Step:
        if (blocked := self.promotion_blocked()) is not None:
            return blocked
        return self.decide(
            self.status(phase=Phase.PROMOTING),
            Event("Promoting", f"Copying {self.target} template to the primary"),
            actions=(ActionKind.PROMOTE,),
        )

    def advance(self) -> Step:
        if self.obs.manual.halt:
            return self.hold(f"{self.name} is halted by hand; checks go on, traffic stays")
        if self.early is not None and (early := self.promote_early(self.early)) is not None:
            return early
        strategy = self.a.strategy
        if strategy is Strategy.BLUE_GREEN:
            return self.blue_green()
        if strategy is Strategy.AB_TESTING:
            return self.ab_testing()
        return self.weighted()

    def promote_early(self, evidence: str) -> Step | None:
        """`promoteEarly`: the judge says "not worse" on anytime-valid evidence, so the remaining steps are
        skipped. Promotion itself is the ordinary one: confirm-promotion first, post-rollout at the end."""
        live = self.obs.routes
        strategy = self.a.strategy
        if strategy is Strategy.CANARY and live.canary >= self.a.max_weight:
            return None  # the last step already: the ordinary promotion
        if strategy is Strategy.BLUE_GREEN and self.s.iterations > (self.a.iterations or 0):
            return None  # already switched: blue_green() promotes
        if (blocked := self.promotion_blocked()) is not None:
            return blocked
        where = (
            f"at canary weight {live.canary} of {self.a.max_weight}"
            if strategy is Strategy.CANARY
            else f"after iteration {self.s.iterations} of {self.a.iterations or 0}"
        )
        event = Event(
            "PromotingEarly",
            f"Promoting {self.target} early, {where}: {evidence}",
            alert=Severity.INFO,
        )
        if strategy is Strategy.BLUE_GREEN:  # blue/green promotes after one tick with all traffic switched
            total = self.a.iterations or 0
            return self.decide(
                self.status(phase=Phase.PROGRESSING, iterations=total + 1, canary_weight=100, mirrored=False),
                event,
                routes=Routes(0, 100),
            )
        return self.decide(self.status(phase=Phase.PROMOTING), event, actions=(ActionKind.PROMOTE,))

    def weighted(self) -> Step:
        live = self.obs.routes
        weight = live.canary
        if weight >= self.a.max_weight:
            return self.promote()
        step = next_step_weight(self.a, weight)
        if step > 0 and not live.mirror and self.s.phase is Phase.PROGRESSING:
            gate = self.gate(Check.CONFIRM_TRAFFIC_INCREASE)
            if isinstance(gate, NeedCheck):
                return gate
            if not gate:
                return self.hold(f"{self.name} is waiting for approval (confirm-traffic-increase)")
        if self.a.mirror and weight == 0 and not live.mirror:
            routes = Routes(100, 0, mirror=True, mirror_weight=self.a.mirrorWeight or 100)
            return self.decide(
                self.status(phase=Phase.PROGRESSING, mirrored=True),
                Event("Mirroring", f"Starting traffic mirroring to {self.target}"),
                routes=routes,
            )
        new = weight + step
        return self.decide(
            self.status(phase=Phase.PROGRESSING, canary_weight=new, mirrored=False),
            Event("Advance", f"Advance {self.name} canary weight {new}"),
            routes=Routes(100 - new, new, sticky=self.sticky()),
        )

    def blue_green(self) -> Step:
        done = self.s.iterations
        total = self.a.iterations or 0
        if total > done:
            routes = (
                Routes(100, 0, mirror=True, mirror_weight=self.a.mirrorWeight or 100)
                if self.a.mirror
                else None
            )
            return self.decide(
                self.status(phase=Phase.PROGRESSING, iterations=done + 1, mirrored=self.a.mirror),
                Event("Advance", f"Advance {self.name} canary iteration {done + 1}/{total}"),
                routes=routes if routes != self.obs.routes else None,
            )
        if total == done:
            if (blocked := self.promotion_blocked()) is not None:
                return blocked
            return self.decide(
                self.status(phase=Phase.PROGRESSING, iterations=done + 1, canary_weight=100, mirrored=False),
                Event("Switch", f"Routing all traffic to the canary {self.target}"),
                routes=Routes(0, 100),
            )
        return self.decide(
            self.status(phase=Phase.PROMOTING),
            Event("Promoting", f"Copying {self.target} template to the primary"),
            actions=(ActionKind.PROMOTE,),
        )

    def ab_testing(self) -> Step:
        done = self.s.iterations
        total = self.a.iterations or 0
        if total > done:
            routes = Routes(100, 0, match=tuple(self.a.match or ()))
            return self.decide(
                self.status(phase=Phase.PROGRESSING, iterations=done + 1),
                Event("Advance", f"Advance {self.name} canary iteration {done + 1}/{total}"),
                routes=routes if routes != self.obs.routes else None,
            )
        return self.promote()


def kicks_at_once(canary: Canary, status: CanaryStatus, verdict: Verdict) -> bool:
    """Whether a fresh verdict of the evidence watcher should tick the canary now, not at the interval's end:
    a conclusive regression, or a pass that promotion is waiting for (every step, with promoteEarly)."""
    if verdict is Verdict.FAIL:
        return True
    if verdict is not Verdict.PASS:
        return False
    if canary.spec.the_analysis.promoteEarly and status.phase is Phase.PROGRESSING:
        return True
    return WAITING_EVIDENCE in status.message


def routes_in_force(canary: Canary, status: CanaryStatus, primary: int, weight: int, mirror: bool) -> Routes:
    """The routes a canary had, rebuilt from its status and last recorded split (after a restart)."""
    a = canary.spec.the_analysis
    match = tuple(a.match or ()) if a.strategy is Strategy.AB_TESTING and status.iterations > 0 else ()
    if status.phase not in (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.PROMOTING):
        match = ()
    sticky = None
    if a.sessionAffinity is not None and status.session_cookie and weight > 0:
        sticky = StickyCookie(a.sessionAffinity.cookieName, status.session_cookie, a.sessionAffinity.maxAge)
    return Routes(
        primary, weight, mirror=mirror, mirror_weight=a.mirrorWeight or 100, match=match, sticky=sticky
    )
