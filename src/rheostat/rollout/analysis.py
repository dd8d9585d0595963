"""Runs one group of checks for a canary: hooks of a type, or the analysis (rollout hooks, then metrics)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary, Metric
from rheostat.model.metric_template import MetricTemplate
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import (
    MIN_WINDOW_S,
    CountSource,
    MetricProvider,
    MetricQuery,
    NoData,
    ProviderError,
    SidesProvider,
)
from rheostat.rollout.judges import BUILTIN, JUDGES, Judge, Sample, SequentialJudge
from rheostat.rollout.sequential import Assessment, Evidence, SequentialSettings
from rheostat.rollout.types import Check, CheckOutcome
from rheostat.rollout.webhooks import Caller, payload
from rheostat.util.durations import parse_duration
from rheostat.util.errors import describe_error

TemplateLookup = Callable[[str, str], MetricTemplate | None]  # (namespace, name)
TemplateProviders = Callable[[MetricTemplate], MetricProvider]  # a provider for a template's provider spec
_VAR = re.compile(r"{{\s*([a-zA-Z_][\w.]*)\s*}}")


class RenderError(Exception):
    pass


@dataclass(frozen=True)
class RunWindow:
    """The current run as the metrics see it: evidence is kept per `id`, windows never reach before `started`.

    `started` is when the canary group was first seen ready in this run (wall time); 0 means "not serving
    yet", and then windows are not clamped (checks that need no run, e.g. tests of the Checker alone).
    """

    id: str = ""
    started: float = 0.0
    now: float = 0.0

    def clamp(self, interval_s: float) -> float:
        if self.started <= 0:
            return interval_s
        return max(0.0, min(interval_s, self.now - self.started))


def format_window(seconds: float) -> str:
    """A clamped window for `{{ interval }}`: whole seconds (PromQL ranges), or milliseconds below 10 s."""
    return f"{int(seconds)}s" if seconds >= 10 else f"{int(seconds * 1000)}ms"


def render_query(
    text: str,
    canary: Canary,
    metric: Metric,
    window_s: float | None = None,
    interval: Callable[[float], str] | None = None,
) -> str:
    """Flagger's template variables; an unknown one is an error (Go's missingkey=error). `interval` writes
    `{{ interval }}` for a provider that reads durations its own way (Graphite)."""
    spec = canary.spec
    target = spec.targetRef.name
    values = {
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "target": target,
        "service": (spec.service.name if spec.service and spec.service.name else target),
        "ingress": spec.ingressRef.name if spec.ingressRef else target,
        "route": spec.routeRef.name if spec.routeRef else target,
        "interval": metric.interval if window_s is None else format_window(window_s),
    }
    if interval is not None:
        values["interval"] = interval(parse_duration(metric.interval) if window_s is None else window_s)
    if spec.flag is not None:  # ours: a flag canary's key and (when set) the variant it judges
        values["flag"] = spec.flag.key
        if spec.flag.variant is not None:
            values["variant"] = spec.flag.variant
    for k, v in (metric.templateVariables or {}).items():
        values[f"variables.{k}"] = v

    def sub(m: re.Match[str]) -> str:
        try:
            return values[m.group(1)]
        except KeyError:
            raise RenderError(f"template variable {m.group(1)!r} is not defined") from None

    return _VAR.sub(sub, text)


def sequential_settings(canary: Canary) -> SequentialSettings:
    s = canary.spec.the_analysis.sequential
    if s is None:
        return SequentialSettings()
    return SequentialSettings(
        alpha=s.alpha,
        beta=s.beta,
        min_regression=s.minRegression,
        negligible_rate=s.negligibleRate,
        latency_quantile=s.latencyQuantile,
        baseline_requests=s.baselineRequests,
    )


@dataclass
class _Run:
    run: str
    evidence: Evidence
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Monitor:
    """The sequential judge's evidence per running canary, fed with cumulative counts at every scrape.

    Both the scheduler's watcher (every scrape) and the analysis tick call `observe`; a new run (another
    checksum, other settings) starts from no evidence, and `forget` drops a canary's evidence at rest.
    """

    def __init__(self, source: CountSource | None) -> None:
        self.source = source
        self._runs: dict[ObjectKey, _Run] = {}

    def evidence(self, key: ObjectKey) -> Evidence | None:
        state = self._runs.get(key)
        return None if state is None else state.evidence

    def forget(self, key: ObjectKey) -> None:
        self._runs.pop(key, None)

    async def observe(self, canary: Canary, run: str) -> Assessment:
        if self.source is None:
            raise ProviderError(
                "the sequential judge needs the builtin metrics source, and none is configured"
            )
        key = canary.metadata.key
        settings = sequential_settings(canary)
        state = self._runs.get(key)
        if state is None or state.run != run or state.evidence.settings != settings:
            state = self._runs[key] = _Run(run, Evidence(settings))
        async with state.lock:
            counts = await self.source.counts(key)
            state.evidence.add(counts)
            return state.evidence.assess()


class Checker:
    def __init__(
        self,
        hooks: Caller,
        metrics: Mapping[str, MetricProvider],
        templates: TemplateLookup,
        *,
        template_providers: TemplateProviders | None = None,
        sequential: Monitor | None = None,
    ) -> None:
        self.hooks = hooks
        self.metrics = metrics
        self.templates = templates
        self.template_providers = template_providers
        self.sequential = sequential

    async def run(
        self, canary: Canary, check: Check, phase: str, checksum: str, run: RunWindow | None = None
    ) -> CheckOutcome:
        if check is Check.ANALYSIS:
            hooks = await self.run_hooks(canary, "rollout", phase, checksum)
            if not hooks.ok:
                return hooks
            return await self.run_metrics(canary, run or RunWindow(checksum))
        if check is Check.ROLLBACK:
            return await self.run_rollback_hooks(canary, phase, checksum)
        return await self.run_hooks(canary, check.value, phase, checksum)

    async def run_hooks(self, canary: Canary, kind: str, phase: str, checksum: str) -> CheckOutcome:
        hooks = [h for h in canary.spec.the_analysis.webhooks if h.kind == kind]
        for hook in hooks:  # in order, the first failure stops: as Flagger
            result = await self.hooks.call(hook, payload(canary, phase, checksum, hook))
            if not result.ok:
                return CheckOutcome(False, f"{kind} {result.message}")
        return CheckOutcome(True)

    async def run_rollback_hooks(self, canary: Canary, phase: str, checksum: str) -> CheckOutcome:
        """ok=True means a rollback hook answered 2xx: roll back."""
        hooks = [h for h in canary.spec.the_analysis.webhooks if h.kind == "rollback"]
        results = await asyncio.gather(
            *(self.hooks.call(h, payload(canary, phase, checksum, h)) for h in hooks)
        )
        asked = [r.name for r in results if r.ok]
        return CheckOutcome(
            bool(asked), f"rollback hook {', '.join(asked)} asked for a rollback" if asked else ""
        )

    async def run_metrics(self, canary: Canary, run: RunWindow) -> CheckOutcome:
        analysis = canary.spec.the_analysis
        if analysis.judge == "sequential":
            return await self._sequential(canary, run)
        if not analysis.metrics:
            return CheckOutcome(True)
        samples = await asyncio.gather(*(self.measure(canary, m, run) for m in analysis.metrics))
        judge: Judge = JUDGES.create(analysis.judge)
        return judge.verdict(samples)

    async def _sequential(self, canary: Canary, run: RunWindow) -> CheckOutcome:
        others = [m for m in canary.spec.the_analysis.metrics if m.name not in BUILTIN]
        samples = await asyncio.gather(*(self.measure(canary, m, run) for m in others))
        monitor = self.sequential or Monitor(None)
        try:
            assessment = await monitor.observe(canary, run.id)
        except ProviderError as exc:
            return SequentialJudge(None, str(exc)).verdict(samples)
        return SequentialJudge(assessment).verdict(samples)

    async def measure(self, canary: Canary, metric: Metric, run: RunWindow | None = None) -> Sample:
        """One metric over its interval, clamped to the current run: never the traffic of a run before it."""
        interval_s = parse_duration(metric.interval)
        window_s = (run or RunWindow()).clamp(interval_s)
        try:
            provider, text = self._provider(canary, metric, window_s if window_s < interval_s else None)
            if window_s < min(MIN_WINDOW_S, interval_s):
                raise NoData(f"the canary has served this revision for {window_s:.1f}s only")
            q = MetricQuery(
                canary.metadata.key,
                metric.name,
                window_s,
                text,
                variables=dict(metric.templateVariables or {}),
            )
            if text is None and isinstance(provider, SidesProvider):
                value, primary = await provider.sides(q)
            else:
                value = await provider.query(q)
                primary = await self._primary(provider, q) if text is None else None
            return Sample(metric, value, primary=primary)
        except NoData as exc:
            if text is not None and await self._served(canary, window_s):
                # Traffic, yet no values: the query cannot see it (e.g. no 2xx series of a canary that
                # only fails). Waiting would keep users on a broken canary: a failed check now.
                why = f"no values found ({exc}), although the canary served requests in the window"
                return Sample(metric, None, why)
            return Sample(metric, None, f"no values found ({exc})", no_data=True)
        except (ProviderError, RenderError, LookupError) as exc:
            return Sample(metric, None, describe_error(exc) if isinstance(exc, KeyError) else str(exc))

    async def _served(self, canary: Canary, window_s: float) -> bool:
        """Whether the builtin source saw the canary serve requests in the window (False if unknown)."""
        builtin = self.metrics.get("builtin")
        if builtin is None or window_s <= 0:
            return False
        try:
            await builtin.query(MetricQuery(canary.metadata.key, BUILTIN[0], window_s))
        except (NoData, ProviderError):
            return False
        return True

    @staticmethod
    async def _primary(provider: MetricProvider, q: MetricQuery) -> float | None:
        """A builtin metric of the primary, for people to compare (charts, history); never part of a verdict."""
        try:
            return await provider.query(dataclasses.replace(q, group="primary"))
        except (NoData, ProviderError):
            return None

    def _provider(
        self, canary: Canary, metric: Metric, window_s: float | None
    ) -> tuple[MetricProvider, str | None]:
        """The provider and rendered query; `window_s` replaces `{{ interval }}` when the run is younger."""
        if metric.templateRef is not None:
            ns = metric.templateRef.namespace or canary.metadata.namespace
            template = self.templates(ns, metric.templateRef.name)
            if template is None:
                raise LookupError(f"MetricTemplate {ns}/{metric.templateRef.name} not found")
            kind = template.spec.provider.type
            text = render_query(template.spec.query, canary, metric, window_s, sources.interval_format(kind))
            if self.template_providers is not None and kind != "builtin":
                try:
                    return self.template_providers(template), text
                except (ValueError, LookupError) as exc:
                    raise LookupError(
                        f"MetricTemplate {ns}/{metric.templateRef.name}: {describe_error(exc)}"
                    ) from exc
            return self._named(kind, f"MetricTemplate {ns}/{metric.templateRef.name}"), text
        if metric.query is not None:
            return self._named("prometheus", "inline query"), render_query(
                metric.query, canary, metric, window_s
            )
        if metric.name in BUILTIN:
            return self._named("builtin", f"builtin metric {metric.name}"), None
        raise LookupError(f"metric {metric.name}: no usable metrics template and query were configured")

    def _named(self, kind: str, what: str) -> MetricProvider:
        try:
            return self.metrics[kind]
        except KeyError:
            raise LookupError(f"{what} needs a {kind!r} metrics provider, and none is configured") from None
