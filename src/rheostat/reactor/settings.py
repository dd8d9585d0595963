"""One documented settings object, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rheostat.plugins.kube.lease import DURATION_S, RENEW_DEADLINE_S, RETRY_S


@dataclass(frozen=True)
class LeaderElection:
    """`rheostat run --leader-elect`: replicas share one Lease; only its holder ticks and writes to the cluster,
    the others serve the API read-only and take over when the holder stops renewing (plugins/kube/lease.py)."""

    name: str = "rheostat-leader"
    namespace: str | None = None  # None: the pod's own namespace (outside a pod: the kubeconfig context's)
    duration_s: int = DURATION_S
    renew_deadline_s: float = RENEW_DEADLINE_S
    retry_s: float = RETRY_S


@dataclass(frozen=True)
class ClusterSettings:
    """`rheostat run --kubeconfig`: roll out Deployments and DaemonSets of a cluster, as Flagger does."""

    kubeconfig: str | None = None  # None: $KUBECONFIG, ~/.kube/config, or the pod's service account
    context: str | None = None
    namespace: str | None = None  # watch one namespace; None: every namespace
    mesh_provider: str = "istio"  # the provider of a Canary that names none (Flagger's -mesh-provider)
    leader_election: LeaderElection | None = None  # None: this replica writes, alone (no Lease)


@dataclass(frozen=True)
class WebhookSettings:
    """`rheostat run --webhook`: the policies served as a validating admission webhook over TLS."""

    host: str = "127.0.0.1"  # the install passes 0.0.0.0 in the cluster
    port: int = 9443
    namespace: str = (
        "rheostat-system"  # of the Service `rheostat-webhook` and the Secret `rheostat-webhook-tls`
    )
    cert_dir: Path | None = None  # tls.crt and tls.key given (cert-manager); None: made and renewed here
    fail_closed: bool = True  # an evaluation error denies; False: allows with a warning
    cert_check_s: float = 600.0  # how often the certificate is looked at (renewed when a third is left)


@dataclass(frozen=True)
class Settings:
    repo: Path | None  # a Git repository or a plain folder of manifests; None: nothing applied from Git
    data_dir: Path = Path(".rheostat")
    branch: str | None = None  # None: the repository's HEAD branch (the checked-out one, for a local repo)
    path: str = "./"  # the folder the root Kustomization applies, as Flux bootstrap's --path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8470
    poll_interval_s: float = 1.0  # how often the repository is looked at; a commit shows within this
    audit_interval_s: float = 60.0  # how often live objects are checked against the policies again
    sync_interval_s: float = 1.0  # how often the scheduler looks for new or deleted canaries
    flags_token: str | None = None  # OFREP asks for this bearer token when set (reading is open otherwise)
    loadtester_exec: bool = False  # let the built-in load tester run commands other than `hey`
    metrics_server: str | None = None  # Prometheus URL: builtin checks in PromQL, inline queries (Flagger's)
    envoy_stats_port: int | None = None  # serve Envoy's /stats/prometheus on 127.0.0.1:<port> for Prometheus
    cluster: ClusterSettings | None = None  # set: the targets are a cluster's, not local processes
    webhook: WebhookSettings | None = None  # set: serve the admission webhook (every replica, leader or not)

    @property
    def state_db(self) -> Path:
        return self.data_dir / "state.db"
