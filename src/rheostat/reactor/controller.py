"""The controller: store, Envoy, local platform, metrics, engine, scheduler and repository watcher."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Protocol

import httpx
from watchfiles import awatch

from rheostat.flags.kill import KillSwitch
from rheostat.flags.rollout import FlagRollouts
from rheostat.flags.store import FlagSetError, FlagStore, sources_from_store
from rheostat.gitops.fetch import source_fetchers
from rheostat.gitops.gate import Finding, PolicyGate
from rheostat.gitops.helm_release import HelmReleases
from rheostat.gitops.reconciler import KUSTOMIZATION, SOURCE, GitOps, Hooks
from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.flags import FeatureFlag, FlagSet
from rheostat.model.load import Manifest, parse_object
from rheostat.model.metric_template import MetricTemplate
from rheostat.model.policy import (
    Constraint,
    ConstraintTemplate,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
)
from rheostat.plugins.http_limits import BoundedTransport
from rheostat.plugins.kube.api import KubeAPI
from rheostat.plugins.kube.cache import CachedKube
from rheostat.plugins.kube.kinds import READ_CACHED
from rheostat.plugins.kube.lease import Fenced
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.app_counters import AppCountersProvider, VariantTarget
from rheostat.plugins.metrics.base import Counts, CountSource, MetricProvider, MetricQuery
from rheostat.plugins.metrics.envoy_stats import EnvoyStatsProvider
from rheostat.plugins.metrics.mesh_queries import MeshMetrics, MeshTarget, mesh_target
from rheostat.plugins.metrics.prometheus import DEFAULT_TIMEOUT_S, PrometheusProvider, tls_context
from rheostat.plugins.platforms.base import Group
from rheostat.plugins.platforms.local import LocalPlatform
from rheostat.plugins.routers.envoy import EnvoyRouter
from rheostat.policy import PolicyError
from rheostat.reactor import cluster_audit, datadir
from rheostat.reactor.alerts import Alerter, Secrets
from rheostat.reactor.cluster import ClusterMirror, cluster_backends, connect, release
from rheostat.reactor.cluster_gitops import ClusterGitOps
from rheostat.reactor.flux_alerts import FluxAlerts
from rheostat.reactor.leader import Leadership, elector
from rheostat.reactor.settings import Settings
from rheostat.reactor.wiring import Handover
from rheostat.rollout.analysis import Checker, Monitor
from rheostat.rollout.engine import CANARY, Engine, target_of
from rheostat.rollout.scheduler import Scheduler
from rheostat.rollout.strategy import routes_in_force
from rheostat.rollout.types import RUNNING
from rheostat.rollout.webhooks import HookCaller
from rheostat.store import Store
from rheostat.store.port import State
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)


ROOT = "flux-system/flux-system"
POLICY_TYPES = (ConstraintTemplate, Constraint, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding)


def root_objects(settings: Settings) -> list[Manifest]:
    """The GitRepository and Kustomization `rheostat run --repo` stands for, as Flux's bootstrap writes them."""
    if settings.repo is None:
        return []
    ref = {"branch": settings.branch} if settings.branch else {}
    repo = parse_object(
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1",
            "kind": "GitRepository",
            "metadata": {"name": "flux-system", "namespace": "flux-system"},
            "spec": {
                "url": str(settings.repo.resolve()),
                "interval": f"{max(settings.poll_interval_s, 1.0):g}s",
                **({"ref": ref} if ref else {}),
            },
        },
        "rheostat run --repo",
    )
    ks = parse_object(
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": "flux-system", "namespace": "flux-system"},
            "spec": {
                "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
                "path": settings.path,
                "prune": True,
                "interval": "10m",
            },
        },
        "rheostat run --repo",
    )
    return [repo, ks]


def ensure_token(data_dir: Path) -> tuple[str, bool]:
    """The API token: made at first start, mode 0600. Returns (token, created)."""
    path = data_dir / "token"
    if path.exists():
        return path.read_text().strip(), False
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(token + "\n")
    tmp.rename(path)
    return token, True


class BuiltinByTarget:
    """The builtin checks of a Canary: from the router's stats for a Workload, from the app for a flag."""

    def __init__(
        self,
        workloads: EnvoyStatsProvider | PrometheusProvider,
        flags: AppCountersProvider,
        is_flag: Callable[[ObjectKey], bool],
    ) -> None:
        self.workloads = workloads
        self.flags = flags
        self.is_flag = is_flag

    async def query(self, q: MetricQuery) -> float:
        return await (self.flags if self.is_flag(q.canary) else self.workloads).query(q)

    async def counts(self, canary: ObjectKey) -> Counts:
        return await (self.flags if self.is_flag(canary) else self.workloads).counts(canary)

    async def is_online(self) -> bool:
        return await self.workloads.is_online()


class Builtin(MetricProvider, CountSource, Protocol):
    """The builtin checks' source: single values for the checks, counts for the sequential judge."""


QUERIES_IN_FLIGHT = (
    16  # metric queries at once, per TLS setting (more: httpcore scans a larger pool per request)
)


class MetricProviders:
    """Where each metric is measured.

    * builtin checks and the sequential judge's counts: Prometheus at `metrics_server` (PromQL on Envoy's
      metric names) when it is set, else Envoy's own stats read through the admin socket;
    * inline `query:` metrics: Prometheus at `metrics_server` (Flagger's `-metrics-server`);
    * a MetricTemplate with `provider.type: prometheus`: its own `address`, headers, TLS setting and secret
      (from the data dir's secrets; the secret lives in the template's namespace).
    """

    def __init__(
        self,
        metrics_server: str | None,
        envoy: EnvoyStatsProvider,
        secrets: Secrets,
        app: AppCountersProvider,
        is_flag: Callable[[ObjectKey], bool],
    ) -> None:
        self.secrets = secrets
        self.kube: KubeAPI | None = None  # set by the controller against a cluster
        # One client per TLS setting for every query of the controller's lifetime: connections are reused.
        self.http = {
            insecure: httpx.AsyncClient(
                timeout=DEFAULT_TIMEOUT_S,
                # every canary may query at once: they wait their turn outside httpcore's pool
                transport=BoundedTransport(QUERIES_IN_FLIGHT, verify=tls_context(insecure)),
            )
            for insecure in (False, True)
        }
        self.server = PrometheusProvider(metrics_server, client=self.http[False]) if metrics_server else None
        self.builtin: Builtin = BuiltinByTarget(self.server or envoy, app, is_flag)
        self.by_kind: dict[str, MetricProvider] = {"builtin": self.builtin}
        if self.server is not None:
            self.by_kind["prometheus"] = self.server

    def for_template(self, template: MetricTemplate) -> MetricProvider:
        spec = template.spec.provider
        if spec.type in self.by_kind and spec.type != "prometheus":
            return self.by_kind[spec.type]
        kind = sources.kind_of(spec.type)  # UnknownPlugin (a LookupError) names the known types
        ns = template.metadata.namespace
        secret = None
        if spec.secretRef is not None:
            secret = self.secrets.get(ns, spec.secretRef.name)
            if secret is None:
                raise LookupError(f"secret {ns}/{spec.secretRef.name} not found")
        context = sources.SourceContext(
            spec=spec,
            namespace=ns,
            secret=secret,
            client=self.http[bool(spec.insecureSkipVerify)],
            default_address=self.server.address if self.server is not None else None,
            environ=os.environ,
            kube=self.kube,
        )
        return kind.make(context)

    async def aclose(self) -> None:
        for client in self.http.values():
            await client.aclose()


class Controller:
    """The embedded default (local processes behind Envoy), or with `settings.cluster` a cluster's Deployments
    and DaemonSets behind its mesh; `kube` is the cluster's API when a test brings its own."""

    def __init__(self, settings: Settings, *, kube: KubeAPI | None = None) -> None:
        self.settings = settings
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        self.store: State = Store(settings.state_db)
        self.flags = FlagStore()
        self.flag_rollouts = FlagRollouts(self.flags, self.store)
        self.kill_switch = KillSwitch(self.flags, self.store)
        self.router = EnvoyRouter(
            data / "envoy", on_event=self._router_event, stats_port=settings.envoy_stats_port
        )
        self.platform = LocalPlatform(
            data / "platform", on_event=self._platform_event, on_endpoints=self._endpoints_changed
        )
        self.metrics = EnvoyStatsProvider(self.router.admin_socket)
        self.hooks = HookCaller()
        self.secrets = Secrets(data / "secrets")
        self.app_counters = AppCountersProvider(self._flag_targets)
        self.providers = MetricProviders(
            settings.metrics_server, self.metrics, self.secrets, self.app_counters, self._is_flag_canary
        )
        self.checker = Checker(
            self.hooks,
            self.providers.by_kind,
            self._template,
            template_providers=self.providers.for_template,
            sequential=Monitor(self.providers.builtin),
        )
        self.alerter = Alerter(self.store, self.secrets)
        self.flux_alerts = FluxAlerts(self.store, self.secrets)  # Flux's Alert and Provider kinds
        self.kube: KubeAPI | None = None
        self.kube_reads: CachedKube | None = None  # the same API, its reads served from watch-fed caches
        self.mirror: ClusterMirror | None = None
        self.leadership: Leadership | None = None  # with leader election: whether this replica leads
        self._lease_api: KubeAPI | None = None
        # Writes every replica makes, leader or not (the admission webhook's certificate): not fenced.
        self.kube_every_replica: KubeAPI | None = None
        backends = None
        if settings.cluster is not None:
            election = settings.cluster.leader_election
            if election is None:
                self.kube = kube if kube is not None else connect(settings.cluster)
                self.kube_every_replica = self.kube
            else:
                # The Lease on its own connection, one try per request (its loop retries); every other write
                # goes through the fence, checked again before each retry by the real client.
                lease_api = kube if kube is not None else connect(settings.cluster, tries=1)
                self._lease_api = lease_api if kube is None else None  # ours to close
                self.kube_every_replica = lease_api
                chosen = elector(lease_api, election)
                api = kube if kube is not None else connect(settings.cluster, fence=chosen.fence.check)
                self.kube = Fenced(api, chosen.fence)
                self.leadership = Leadership(chosen, self.store, lead=self._lead, follow=self._follow)
            # The routers and the platform read through watch-fed caches: a tick at rest asks nothing.
            self.kube_reads = CachedKube(self.kube, READ_CACHED, settings.cluster.namespace)
            self.providers.kube = self.kube_reads
            backends = cluster_backends(self.kube_reads, settings.cluster.mesh_provider)
            self._mesh_builtins(backends.catalogue.provider)
        self.engine = Engine(
            self.store,
            self.router,
            self.platform,
            self.checker,
            alerts=self.alerter,
            flags=(self.flag_rollouts, self.flag_rollouts),
            backends=backends,
        )
        if self.kube is not None:
            assert settings.cluster is not None
            self.mirror = ClusterMirror(
                self.kube, self.store, self.engine, self._kick, namespace=settings.cluster.namespace
            )
            self.mirror.on_deleted = lambda canary: release(self.engine.backends, canary)
            if self.leadership is not None:
                self.mirror.leading = lambda: self.leadership is not None and self.leadership.leading
            self.secrets.cluster = self.mirror.secrets.get
        self.scheduler = Scheduler(
            self.engine,
            sync_interval_s=settings.sync_interval_s,
            on_tick=self.mirror.after_tick if self.mirror is not None else None,
        )
        self.gate = PolicyGate(self.store, on_findings=self._policy_alerts)
        self._audit_now = asyncio.Event()
        self.handover = Handover(self.engine, self.platform, self.router, self.scheduler)
        fetchers = source_fetchers((data / "sources").resolve(), self.secrets.get)
        # On a cluster: Git applied into it (--repo), or Flux's own objects shown read-only (no --repo).
        self.cluster_gitops = (
            ClusterGitOps(
                self.kube,
                self.store,
                fetcher=fetchers if settings.repo is not None else None,
                hooks=Hooks(on_applied=self._applied_in_cluster, gate=self.gate),
                bootstrap=root_objects(settings),
                namespace=settings.cluster.namespace if settings.cluster else None,
                poll_interval_s=settings.poll_interval_s,
                mesh_provider=settings.cluster.mesh_provider if settings.cluster else "istio",
            )
            if self.kube is not None
            else None
        )
        self.gitops = (self.cluster_gitops.gitops if self.cluster_gitops else None) or GitOps(
            self.store,
            fetchers,
            Hooks(
                on_applied=self._applied,
                health=self.handover.health,
                gate=self.gate,
                secrets=self.secrets.get,
            ),
            bootstrap=root_objects(settings),
        )
        self.gitops.helm = HelmReleases(self.gitops, self.secrets.get, (data / "charts").resolve())
        self._tasks: list[asyncio.Task[None]] = []
        self._leader_tasks: list[asyncio.Task[None]] = []
        self._locked = False

    def _template(self, ns: str, name: str) -> MetricTemplate | None:
        return self.engine.template(ns, name)

    def _kick(self, key: ObjectKey) -> None:
        self.scheduler.kick(key)

    def _mesh_builtins(self, provider: Callable[[Canary], str]) -> None:
        """On a cluster the builtin checks are PromQL on the mesh's own metrics (Flagger's queries)."""

        def target(key: ObjectKey) -> MeshTarget:
            canary = self.engine.canary(key)
            if canary is None:
                raise LookupError(f"Canary {key} not found")
            return mesh_target(canary, provider(canary))

        server = self.providers.server
        if server is None:
            return  # builtin checks then fail, naming the missing --metrics-server
        mesh = MeshMetrics(server, target)
        self.providers.builtin = mesh
        self.providers.by_kind["builtin"] = mesh
        self.checker.sequential = Monitor(mesh)

    @property
    def in_cluster(self) -> bool:
        return self.settings.cluster is not None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the data dir (DataDirInUse if another controller has it), then adopt or start the data plane."""
        datadir.acquire(self.settings.data_dir)
        self._locked = True
        if self.mirror is not None:
            await self._start_in_cluster(self.mirror)
            return
        try:
            await self.router.start()
        except BaseException:
            self._unlock()
            raise
        try:
            await self.platform.start()
            await self.metrics.start()
            await self.app_counters.start()
            self.flag_rollouts.restore()
            self.load_flags()
            await self._restore_routes()
            await self.gitops.reconcile_once(force=True)
        except BaseException:
            # A data plane taken over from a previous controller keeps serving; one we started is ended.
            await self.stop(stop_data_plane=not self.router.adopted)
            raise
        self._tasks = [
            supervised(self.scheduler.run(), name="scheduler"),
            supervised(self.gitops.run(self.settings.poll_interval_s), name="gitops"),
            supervised(self._watch(), name="repository-watch"),
            supervised(self._audit(), name="policy-audit"),
            supervised(self.flux_alerts.run(), name="flux-alerts"),
        ]

    async def _start_in_cluster(self, mirror: ClusterMirror) -> None:
        """The cluster's objects into the store first (and each Canary's status from the cluster), then ticks."""
        try:
            self.load_flags()
            await mirror.start()
            if self.cluster_gitops is not None and self.cluster_gitops.gitops is None:
                await self.cluster_gitops.start()  # Flux's objects, read-only: every replica shows them
        except BaseException:
            await self.stop()
            raise
        if self.leadership is None:
            self._tasks = self._leader_work()
        else:
            self._tasks = [supervised(self.leadership.run(), name="leader-election")]

    def _leader_work(self) -> list[asyncio.Task[None]]:
        """What only the leader runs: the ticks (and their status writes) and the policy audit (it alerts)."""
        return [
            supervised(self.scheduler.run(), name="scheduler"),
            supervised(self._audit(), name="policy-audit"),
            supervised(self.flux_alerts.run(), name="flux-alerts"),
            *(
                [
                    supervised(self._watch(), name="repository-watch"),
                    supervised(self._git_to_cluster(), name="gitops"),
                ]
                if self.cluster_gitops is not None and self.cluster_gitops.gitops is not None
                else []
            ),
        ]

    async def _git_to_cluster(self) -> None:
        """The leader's GitOps into the cluster (--repo): its loop and status writer, paused when it stops leading."""
        assert self.cluster_gitops is not None
        await self.cluster_gitops.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.cluster_gitops.pause()

    async def _lead(self) -> None:
        """This replica won the Lease: go on from the cluster's state, then tick."""
        assert self.mirror is not None
        await self.mirror.takeover()
        self._leader_tasks = self._leader_work()

    async def _follow(self) -> None:
        """The Lease is lost (the fence already stops every write): stop ticking, stand by."""
        tasks, self._leader_tasks = self._leader_tasks, []
        await cancel_all(tasks)
        await self.scheduler.stop()

    def standby_reason(self) -> str | None:
        """None when this replica may act; else why not (it is the standby), for the API's refusal."""
        return self.leadership.standby_reason() if self.leadership is not None else None

    async def stop(self, *, stop_data_plane: bool = True) -> None:
        """Stop the controller. With `stop_data_plane=False` Envoy and the replicas keep serving, and the next
        start on this data dir adopts them (what `rheostat run` does on SIGTERM)."""
        await cancel_all(self._tasks)
        await self._follow()
        await self.engine.close()
        await self.providers.aclose()
        if self.leadership is not None:
            await self.leadership.release()  # the ticks have stopped: a standby takes over at once
            if self._lease_api is not None:  # ours (a test's own API is closed by the test)
                with suppress(Exception):
                    await self._lease_api.close()
        if self.mirror is not None:
            await self.mirror.stop()
            if self.cluster_gitops is not None:
                await self.cluster_gitops.stop()
            if self.kube_reads is not None:
                with suppress(Exception):
                    await self.kube_reads.close()  # and the API client under it
            await self.hooks.aclose()
            self.store.close()
            self._unlock()
            return
        with suppress(Exception):
            await self.metrics.stop()
        with suppress(Exception):
            await self.app_counters.stop()
        with suppress(Exception):
            await self.platform.stop(end_processes=stop_data_plane)
        with suppress(Exception):
            await self.router.stop(end_envoy=stop_data_plane)
        await self.hooks.aclose()
        self.store.close()
        self._unlock()

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            datadir.release(self.settings.data_dir)

    # -- the repository ----------------------------------------------------------------------------

    def request_reconcile(self) -> None:
        self.gitops.request(SOURCE, ROOT)
        self.gitops.request(KUSTOMIZATION, ROOT)

    async def _watch(self) -> None:
        """A commit or an edit in the local repository is picked up at once, without waiting for a poll."""
        if self.settings.repo is None:
            return
        watched = self.settings.repo.resolve()
        # The data dir may be inside the repository (ignored by Git, as `rheostat bootstrap` writes it): its
        # own writes are not edits, or every write would ask for a reconcile.
        data = f"{self.settings.data_dir.resolve()}/"
        async for _ in awatch(
            watched,
            debounce=100,
            step=50,
            recursive=True,
            watch_filter=lambda change, path: "/.git/objects/" not in path and not path.startswith(data),
        ):
            self.request_reconcile()

    # -- wiring between components -------------------------------------------------------------------

    def canaries(self) -> list[Canary]:
        out = []
        for stored in self.store.list_objects(CANARY):
            with suppress(Exception):
                c = self.engine.canary(ObjectKey(stored.key))
                if c is not None:
                    out.append(c)
        return out

    async def _restore_routes(self) -> None:
        """After a restart Envoy starts empty: put back the split each running canary had."""
        for canary in self.canaries():
            status = self.engine.status(canary.metadata.key)
            history = self.store.history(canary.metadata.key, limit=1)
            if status.phase not in RUNNING or not history:
                continue
            row = history[-1].body
            routes = routes_in_force(
                canary, status, int(row["primaryWeight"]), int(row["canaryWeight"]), bool(row.get("mirror"))
            )
            with suppress(Exception):
                router, _ = self.engine.parts(canary)
                await router.reconcile(await self.engine.service_route(canary))
                await router.set_routes(canary.metadata.key, routes)

    def _is_flag_canary(self, key: ObjectKey) -> bool:
        with suppress(Exception):
            canary = self.engine.canary(key)
            return canary is not None and canary.spec.is_flag
        return False

    async def _flag_targets(self) -> dict[ObjectKey, VariantTarget]:
        """Flag canaries with an application that counts outcomes: its processes' /metrics."""
        out: dict[ObjectKey, VariantTarget] = {}
        for key in self.flag_rollouts.bound():  # not every Canary: this runs every second
            canary = self.engine.canary(key)
            flag = canary.spec.flag if canary is not None else None
            if canary is None or flag is None or flag.appRef is None:
                continue
            app = object_key(canary.metadata.namespace, flag.appRef.name)
            urls: list[str] = []
            with suppress(Exception):  # an app not running yet has no endpoints: no data, not a crash
                for group in (Group.PRIMARY, Group.CANARY):
                    urls += [
                        f"http://{u.host}:{u.port}/metrics" for u in await self.platform.endpoints(app, group)
                    ]
            info, pinned = self.flags.get(flag.key), self.flags.primary(flag.key)
            primary = pinned.config.flags[flag.key].defaultVariant if pinned is not None else None
            out[key] = VariantTarget(
                canary=key,
                flag=flag.key,
                canary_variant=flag.variant or (info.default_variant if info else None),
                primary_variant=primary or None,
                urls=tuple(urls),
            )
        return out

    async def _endpoints_changed(self, workload: ObjectKey) -> None:
        for canary in self.canaries():
            if not canary.spec.is_flag and target_of(canary) == workload:
                await self.router.reconcile(await self.engine.service_route(canary))

    async def _applied(self, objects: list[Manifest], deleted: list[tuple[str, str]]) -> None:
        await self.handover.applied(objects, deleted)
        if any(isinstance(o, FlagSet | FeatureFlag) for o in objects) or any(
            k in ("FlagSet", "FeatureFlag") for k, _ in deleted
        ):
            self.load_flags()
        if deleted or any(isinstance(o, POLICY_TYPES) for o in objects):
            self._audit_now.set()  # a new policy flags what already runs; a removed one clears its findings

    async def _applied_in_cluster(self, objects: list[Manifest], deleted: list[tuple[str, str]]) -> None:
        """Canaries come back through the cluster's watch; flags and policies are served from the store."""
        if any(isinstance(o, FlagSet | FeatureFlag) for o in objects) or deleted:
            self.load_flags()
        self._audit_now.set()

    def load_flags(self) -> None:
        """Serve what the store holds; a revision was already checked whole, so this does not fail on it."""
        try:
            self.flags.replace(sources_from_store(self.store))
            self.kill_switch.reconcile()
        except FlagSetError as exc:
            kind, _, key = exc.where.split(":")[0].partition(" ")
            with self.store.transaction():
                self.store.add_event(
                    kind or "FlagSet", key or exc.where, "FlagsNotServed", str(exc), warning=True
                )

    async def _audit(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._audit_now.wait(), self.settings.audit_interval_s)
            self._audit_now.clear()
            try:
                inputs = self.gate.audit_inputs()  # the store is read and written in this thread only
                self.gate.record_audit(await asyncio.to_thread(self.gate.evaluate_audit, inputs))
                if self.kube is not None:
                    await self._audit_cluster(self.kube)
            except Exception:  # an audit that fails is logged and tried again at the next interval
                log.exception("policy audit failed")

    async def _audit_cluster(self, kube: KubeAPI) -> None:
        """The cluster's live objects of the kinds the policies match (reactor/cluster_audit.py). Compiled and
        evaluated in worker threads, each set on the thread that compiled it."""
        docs = self.gate.live_policies()
        try:
            kinds = await asyncio.to_thread(cluster_audit.kinds_for, docs)
            ns = self.settings.cluster.namespace if self.settings.cluster is not None else None
            objects = await cluster_audit.live_objects(kube, kinds, ns) if kinds else []
            findings = await asyncio.to_thread(self.gate.evaluate_live, docs, objects) if kinds else []
        except PolicyError:
            return  # the store's audit records the unusable policy
        self.gate.record_audit(findings, key="audit: cluster")

    def _policy_alerts(self, findings: list[Finding]) -> None:
        self.engine.spawn(self.alerter.policy(findings))

    def _platform_event(self, key: ObjectKey, reason: str, message: str) -> None:
        with self.store.transaction():
            self.store.add_event("Workload", key, reason, message, warning=reason != "Ready")

    def _router_event(self, reason: str, message: str) -> None:
        with self.store.transaction():
            self.store.add_event("Router", "envoy", reason, message, warning=True)
