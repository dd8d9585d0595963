"""Flagger's `flagger.app/v1beta1` Canary, field for field, plus the strategy decided at load."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from rheostat.model.base import ObjectMeta, Strict
from rheostat.util.durations import parse_duration

API_VERSION = "flagger.app/v1beta1"
MIN_INTERVAL_S = 0.1  # Flagger clamps to 10s; we allow less so tests and demos run fast.

Provider = Literal[
    "apisix",
    "appmesh",
    "appmesh:v1beta2",
    "contour",
    "gatewayapi:v1",
    "gatewayapi:v1beta1",
    "gloo",
    "istio",
    "knative",
    "kubernetes",
    "kuma",
    "linkerd",
    "nginx",
    "osm",
    "skipper",
    "smi:v1alpha1",
    "smi:v1alpha2",
    "smi:v1alpha3",
    "traefik",
    "envoy",  # ours: the embedded Envoy (the default for Workload targets)
    "flags",  # ours: a flag rolled out to a share of users (the default for FeatureFlag and FlagSet targets)
    "nop",
]


def _duration(value: str, field: str) -> str:
    seconds = parse_duration(value)
    if seconds < MIN_INTERVAL_S:
        raise ValueError(f"{field} {value!r} is below the minimum of 100ms")
    return value


class Strategy(enum.StrEnum):
    CANARY = "canary"
    AB_TESTING = "ab-testing"
    BLUE_GREEN = "blue-green"


class Ref(Strict):
    apiVersion: str
    kind: str
    name: str


FLAG_TARGETS = {"FeatureFlag": "core.openfeature.dev/v1beta1", "FlagSet": "rheostat.dev/v1alpha1"}


class TargetRef(Ref):
    kind: Literal["Deployment", "DaemonSet", "Service", "Workload", "FeatureFlag", "FlagSet"]


class ScalerReplicas(Strict):
    minReplicas: int | None = None
    maxReplicas: int | None = None


class AutoscalerRef(Ref):
    kind: Literal["HorizontalPodAutoscaler", "ScaledObject"]
    primaryScalerQueries: dict[str, str] | None = None
    primaryScalerReplicas: ScalerReplicas | None = None


class IngressRef(Ref):
    kind: Literal["Ingress"]


class RouteRef(Ref):
    kind: Literal["ApisixRoute"]


class UpstreamRef(Ref):
    kind: Literal["Upstream"]
    namespace: str | None = None


class StringMatch(Strict):
    """One of exact, prefix, suffix or regex (Istio's StringMatch)."""

    exact: str | None = None
    prefix: str | None = None
    suffix: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> StringMatch:
        set_ = [k for k in ("exact", "prefix", "suffix", "regex") if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ValueError("set exactly one of exact, prefix, suffix, regex")
        return self


class ServiceMatch(Strict):
    """Istio HTTPMatchRequest, as `service.match` takes it."""

    name: str | None = None
    uri: StringMatch | None = None
    scheme: StringMatch | None = None
    method: StringMatch | None = None
    authority: StringMatch | None = None
    headers: dict[str, StringMatch] | None = None
    withoutHeaders: dict[str, StringMatch] | None = None
    queryParams: dict[str, StringMatch] | None = None
    ignoreUriCase: bool | None = None
    port: int | None = None
    sourceLabels: dict[str, str] | None = None
    sourceNamespace: str | None = None
    gateways: list[str] | None = None


class AnalysisMatch(Strict):
    """A/B condition: all headers (and query parameters) must match for the request to go to the canary."""

    headers: dict[str, StringMatch] | None = None
    queryParams: dict[str, StringMatch] | None = None
    sourceLabels: dict[str, str] | None = None


# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies; Istio's retryOn also takes status codes.
RETRY_ON = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)


class Retries(Strict):
    """`service.retries` (Istio's HTTPRetry): retries after the first attempt, for every method."""

    attempts: Annotated[int, Field(ge=0)] | None = None
    perTryTimeout: str | None = None
    retryOn: str | None = None

    @field_validator("perTryTimeout")
    @classmethod
    def _per_try(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) <= 0:
            raise ValueError(f"perTryTimeout {v!r} must be above 0")
        return v

    @field_validator("retryOn")
    @classmethod
    def _retry_on(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.split(",") if p.strip()]
        unknown = [p for p in parts if p not in RETRY_ON and not (p.isdigit() and 100 <= int(p) <= 599)]
        if unknown or not parts:
            raise ValueError(
                f"retryOn {v!r}: unknown {', '.join(unknown) or 'empty list'}; "
                f"use status codes or {', '.join(RETRY_ON)}"
            )
        return v


class Rewrite(Strict):
    uri: str | None = None
    authority: str | None = None
    type: str | None = None


class BackendRef(Strict):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    port: int | None = None


class MirrorFilter(Strict):
    backendRef: BackendRef


class HeaderOps(Strict):
    add: dict[str, str] | None = None
    set: dict[str, str] | None = None
    remove: list[str] | None = None


class Headers(Strict):
    request: HeaderOps | None = None
    response: HeaderOps | None = None


class GatewayRef(Strict):
    group: str | None = None
    kind: str | None = None
    name: str
    namespace: str | None = None
    sectionName: str | None = None
    port: int | None = None


class CorsPolicy(Strict):
    allowCredentials: bool | None = None
    allowHeaders: list[str] | None = None
    allowMethods: list[str] | None = None
    allowOrigin: list[str] | None = None
    allowOrigins: list[StringMatch] | None = None
    exposeHeaders: list[str] | None = None
    maxAge: str | None = None


class HttpPool(Strict):
    h2UpgradePolicy: Literal["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"] | None = None
    http1MaxPendingRequests: int | None = None
    http2MaxRequests: int | None = None
    idleTimeout: str | None = None
    maxRequestsPerConnection: int | None = None
    maxRetries: int | None = None


class ConnectionPool(Strict):
    http: HttpPool | None = None


class HttpCookie(Strict):
    name: str | None = None
    path: str | None = None
    ttl: str | None = None


class ConsistentHash(Strict):
    httpCookie: HttpCookie | None = None
    httpHeaderName: str | None = None
    httpQueryParameterName: str | None = None
    minimumRingSize: int | None = None
    useSourceIp: bool | None = None


class Distribute(Strict):
    from_: str | None = Field(default=None, alias="from")
    to: dict[str, int] | None = None


class Failover(Strict):
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None


class LocalityLb(Strict):
    distribute: list[Distribute] | None = None
    enabled: bool | None = None
    failover: list[Failover] | None = None


class LoadBalancer(Strict):
    consistentHash: ConsistentHash | None = None
    localityLbSetting: LocalityLb | None = None
    simple: (
        Literal["UNSPECIFIED", "RANDOM", "PASSTHROUGH", "ROUND_ROBIN", "LEAST_REQUEST", "LEAST_CONN"] | None
    ) = None
    warmupDurationSecs: str | None = None


class OutlierDetection(Strict):
    baseEjectionTime: str | None = None
    consecutive5xxErrors: int | None = None
    consecutiveErrors: int | None = None
    consecutiveGatewayErrors: int | None = None
    consecutiveLocalOriginFailures: int | None = None
    interval: str | None = None
    maxEjectionPercent: int | None = None
    minHealthPercent: int | None = None
    splitExternalLocalOriginErrors: bool | None = None


class ClientTls(Strict):
    caCertificates: str | None = None
    clientCertificate: str | None = None
    mode: Literal["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"] | None = None
    privateKey: str | None = None
    sni: str | None = None
    subjectAltNames: list[str] | None = None


class TrafficPolicy(Strict):
    connectionPool: ConnectionPool | None = None
    loadBalancer: LoadBalancer | None = None
    outlierDetection: OutlierDetection | None = None
    tls: ClientTls | None = None


class CustomMetadata(Strict):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class UnmanagedMetadata(Strict):
    annotations: list[str] | None = None
    labels: list[str] | None = None


class Service(Strict):
    port: Annotated[int, Field(ge=1, le=65535)]
    name: str | None = None
    portName: str | None = None
    appProtocol: str | None = None
    trafficDistribution: Literal["PreferClose", "PreferSameZone", "PreferSameNode"] | None = None
    targetPort: int | str | None = None
    portDiscovery: bool | None = None
    headless: bool | None = None
    timeout: str | None = None
    backendTimeout: str | None = None
    meshName: str | None = None
    backends: list[str] | None = None
    hosts: list[str] | None = None
    delegation: bool | None = None
    match: list[ServiceMatch] | None = None
    retries: Retries | None = None
    rewrite: Rewrite | None = None
    mirror: list[MirrorFilter] | None = None
    headers: Headers | None = None
    gateways: list[str] | None = None
    gatewayRefs: list[GatewayRef] | None = None
    corsPolicy: CorsPolicy | None = None
    trafficPolicy: TrafficPolicy | None = None
    apex: CustomMetadata | None = None
    primary: CustomMetadata | None = None
    canary: CustomMetadata | None = None
    unmanagedMetadata: UnmanagedMetadata | None = None


class ThresholdRange(Strict):
    min: float | None = None
    max: float | None = None


class TemplateRef(Strict):
    name: str
    namespace: str | None = None


class Metric(Strict):
    name: str
    interval: str = "1m"
    threshold: float | None = None  # deprecated by Flagger; a minimum (success rate) or maximum (duration)
    thresholdRange: ThresholdRange | None = None
    query: str | None = None
    templateRef: TemplateRef | None = None
    templateVariables: dict[str, str] | None = None

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        return _duration(v, "interval")


HookType = Literal[
    "",
    "confirm-rollout",
    "pre-rollout",
    "rollout",
    "confirm-traffic-increase",
    "confirm-promotion",
    "post-rollout",
    "event",
    "rollback",
]


class Webhook(Strict):
    name: str
    url: str
    type: HookType = "rollout"
    muteAlert: bool = False
    timeout: str = "10s"
    retries: int | None = None
    disableTLS: bool | None = None
    metadata: dict[str, str] | None = None

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        return _duration(v, "timeout")

    @property
    def kind(self) -> str:
        """The hook's type, with Flagger's empty type meaning `rollout`."""
        return self.type or "rollout"


class ProviderRef(Strict):
    name: str
    namespace: str | None = None


class AlertRef(Strict):
    name: str
    severity: Literal["", "info", "warn", "error"] = "info"  # Flagger: empty means info
    providerRef: ProviderRef


class SessionAffinity(Strict):
    cookieName: str
    primaryCookieName: str | None = None
    domain: str | None = None
    httpOnly: bool | None = None
    maxAge: int = 86400
    partitioned: bool | None = None
    path: str | None = None
    sameSite: Literal["Strict", "Lax", "None"] | None = None
    secure: bool | None = None


class Sequential(Strict):
    """`analysis.sequential`: settings of the sequential judge (docs/analysis.md explains each)."""

    alpha: float = Field(0.01, gt=0, lt=0.5)  # false-rollback rate of a release no worse than the primary
    beta: float = Field(0.05, gt=0, lt=0.5)  # chance of passing a release worse by minRegression or more
    minRegression: float = Field(1.5, gt=0)  # smallest regression worth catching: rate x (1 + this)
    negligibleRate: float = Field(0.002, gt=0, lt=1)  # a bad-request rate so low a canary under it passes
    latencyQuantile: float = Field(0.99, gt=0.5, lt=1)  # "slow" = slower than this quantile of the primary
    baselineRequests: int = Field(1000, ge=1)  # primary requests seen before the slow threshold is set


class Analysis(Strict):
    interval: str = "60s"
    threshold: int = 1
    iterations: int | None = None
    maxWeight: int | None = None
    stepWeight: int | None = None
    stepWeights: list[int] | None = None
    stepWeightPromotion: int | None = None
    mirror: bool = False
    mirrorWeight: int | None = None
    primaryReadyThreshold: int = 100
    canaryReadyThreshold: int = 100
    match: list[AnalysisMatch] | None = None
    metrics: list[Metric] = Field(default_factory=list)
    alerts: list[AlertRef] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    sessionAffinity: SessionAffinity | None = None
    judge: Literal["threshold", "sequential"] = "threshold"  # ours: which judge decides (docs/analysis.md)
    sequential: Sequential | None = None  # settings of the sequential judge; defaults when None
    promoteEarly: bool = False  # ours: promote on the sequential judge's "not worse" (docs/analysis.md)
    _strategy: Strategy = PrivateAttr(default=Strategy.CANARY)

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str) -> str:
        return _duration(v, "interval")

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: int) -> int:
        return v if v > 0 else 1  # Flagger: a threshold <= 0 means 1

    @field_validator("promoteEarly")
    @classmethod
    def _promote_early(cls, v: bool, info: ValidationInfo) -> bool:
        judge = info.data.get("judge")  # absent when the judge itself is invalid: that error is enough
        if v and judge not in (None, "sequential"):
            raise ValueError(
                f"needs judge: sequential (promotion on anytime-valid evidence); the judge is {judge}"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Analysis:
        for name in ("stepWeight", "maxWeight", "stepWeightPromotion", "mirrorWeight"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 100:
                raise ValueError(f"{name}: {value} is outside 0..100")
        if self.stepWeight is not None and self.stepWeight <= 0:
            raise ValueError("stepWeight: must be greater than 0")
        if self.stepWeights is not None:
            if not self.stepWeights:
                raise ValueError("stepWeights: must not be empty")
            if any(b <= a for a, b in zip(self.stepWeights, self.stepWeights[1:], strict=False)):
                raise ValueError(f"stepWeights: {self.stepWeights} must be strictly increasing")
            if self.stepWeights[0] <= 0:
                raise ValueError("stepWeights: must be greater than 0")
        if self.iterations is not None and self.iterations < 0:
            raise ValueError("iterations: must not be negative")
        if self.stepWeight is not None and self.maxWeight is not None and self.stepWeight > self.maxWeight:
            raise ValueError(f"stepWeight: {self.stepWeight} is greater than maxWeight {self.maxWeight}")
        if self.match and not self.iterations:
            raise ValueError(
                "match: A/B testing needs iterations (match selects requests for `iterations` checks)"
            )
        if not self.iterations and self.stepWeight is None and not self.stepWeights:
            raise ValueError("set stepWeight, stepWeights or iterations (Flagger's three analysis shapes)")
        sa = self.sessionAffinity
        if sa is not None and sa.primaryCookieName is not None and sa.primaryCookieName == sa.cookieName:
            raise ValueError("sessionAffinity.primaryCookieName: must differ from cookieName")
        return self

    @property
    def interval_s(self) -> float:
        return parse_duration(self.interval)

    def model_post_init(self, context: Any, /) -> None:
        # Decided once, at load, by Flagger's rule: match + iterations is A/B, iterations alone blue/green,
        # otherwise a weighted canary. Kept as a value so nothing downstream re-derives it.
        if self.iterations and self.match:
            self._strategy = Strategy.AB_TESTING
        elif self.iterations:
            self._strategy = Strategy.BLUE_GREEN
        else:
            self._strategy = Strategy.CANARY

    @property
    def strategy(self) -> Strategy:
        return self._strategy

    @property
    def max_weight(self) -> int:
        if self.stepWeight is None and self.stepWeights:
            return min(100, self.maxWeight if self.maxWeight is not None else self.stepWeights[-1])
        return self.maxWeight if self.maxWeight is not None else 100


class AppRef(Strict):
    name: str


class FlagTarget(Strict):
    """Ours: which flag of a FeatureFlag/FlagSet target is rolled out, and where its outcomes are counted."""

    key: str = Field(min_length=1)
    variant: str | None = None  # the variant judged as "canary"; the new definition's defaultVariant if unset
    appRef: AppRef | None = None  # the Workload whose processes count outcomes per variant on /metrics


class CanarySpec(Strict):
    targetRef: TargetRef
    flag: FlagTarget | None = None  # ours: set exactly when targetRef is a FeatureFlag or FlagSet
    analysis: Analysis | None = None
    canaryAnalysis: Analysis | None = None  # Flagger's deprecated alias, still read
    provider: Provider | None = None
    metricsServer: str | None = None
    progressDeadlineSeconds: int = 600
    autoscalerRef: AutoscalerRef | None = None
    ingressRef: IngressRef | None = None
    routeRef: RouteRef | None = None
    upstreamRef: UpstreamRef | None = None
    service: Service | None = None  # required for workload targets, meaningless for flags
    skipAnalysis: bool = False
    revertOnDeletion: bool = False
    suspend: bool = False

    @model_validator(mode="after")
    def _has_analysis(self) -> CanarySpec:
        if self.analysis is None and self.canaryAnalysis is None:
            raise ValueError("analysis: field required")
        if self.is_flag:
            self._flag_rules()
        else:
            if self.service is None:
                raise ValueError("service: field required")
            if self.flag is not None:
                raise ValueError("flag: only for a targetRef of kind FeatureFlag or FlagSet")
        return self

    def _flag_rules(self) -> None:
        ref = self.targetRef
        if ref.apiVersion != FLAG_TARGETS[ref.kind]:
            raise ValueError(f"targetRef.apiVersion: a {ref.kind} is {FLAG_TARGETS[ref.kind]}")
        if self.flag is None:
            raise ValueError(f"flag: field required for a {ref.kind} target (flag.key names the flag)")
        a = self.the_analysis
        for name in ("match", "mirror", "iterations", "sessionAffinity"):
            if getattr(a, name):
                raise ValueError(
                    f"analysis.{name}: a flag is rolled out by share of users (stepWeight/stepWeights) only"
                )

    @property
    def is_flag(self) -> bool:
        return self.targetRef.kind in FLAG_TARGETS

    @property
    def the_service(self) -> Service:
        assert self.service is not None  # checked at load for every workload target
        return self.service

    @property
    def the_analysis(self) -> Analysis:
        found = self.analysis or self.canaryAnalysis
        assert found is not None  # checked at load
        return found


class Canary(Strict):
    apiVersion: Literal["flagger.app/v1beta1"]
    kind: Literal["Canary"]
    metadata: ObjectMeta
    spec: CanarySpec
    status: dict[str, Any] | None = None  # what an export carries; the engine keeps its own status

    @property
    def strategy(self) -> Strategy:
        return self.spec.the_analysis.strategy

    @property
    def mirror(self) -> bool:
        return self.spec.the_analysis.mirror
