"""`rheostat run` (the controller and its API) and `rheostat down`."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

import click
import uvloop

from rheostat import __version__
from rheostat.cli import logs
from rheostat.cli.common import data_dir_option, err, fail
from rheostat.cli.narrate import Narrator
from rheostat.plugins.kube.api import KubeError
from rheostat.plugins.platforms.base import PlatformError
from rheostat.plugins.routers.base import RouterError
from rheostat.reactor import datadir, dataplane
from rheostat.reactor.datadir import DataDirInUse
from rheostat.reactor.settings import ClusterSettings, LeaderElection, Settings, WebhookSettings
from rheostat.server.main import Server, run_forever


@click.command("run")
@click.option(
    "--repo",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A Git repository or a plain folder of manifests (the embedded default; with --kubeconfig, applied "
    "into that cluster). Without it, roll out the Canaries of a cluster beside Flux.",
)
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Roll out the Canaries of this cluster, and with --repo apply Git into it (default without --repo: "
    "$KUBECONFIG, ~/.kube/config, or the pod's service account).",
)
@click.option(
    "--context", "kube_context", default=None, help="The kubeconfig context (default: its current one)."
)
@click.option(
    "--namespace",
    "watch_namespace",
    default=None,
    help="Watch Canaries in this namespace only (default: all).",
)
@click.option(
    "--mesh-provider",
    default="istio",
    show_default=True,
    help="The provider of a Canary that sets no spec.provider (Flagger's -mesh-provider).",
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=None,
    help="Against a cluster (default: on): replicas share a Lease; only its holder ticks and writes, the "
    "others serve the API read-only and take over within 15 s of its death.",
)
@click.option(
    "--lease-name", default="rheostat-leader", show_default=True, help="The Lease of --leader-elect."
)
@click.option(
    "--lease-namespace",
    default=None,
    help="The Lease's namespace (default: the pod's own; outside a pod, the kubeconfig context's).",
)
@click.option("--branch", default=None, help="Branch to follow (default: the repository's HEAD branch).")
@click.option("--listen", default="127.0.0.1:8470", show_default=True, help="HOST:PORT of the API.")
@data_dir_option
@click.option(
    "--loadtester-exec", is_flag=True, help="Let the built-in load tester run commands other than hey."
)
@click.option(
    "--path",
    "root_path",
    default="./",
    show_default=True,
    help="Folder of the repository the root Kustomization applies (Flux bootstrap's --path).",
)
@click.option(
    "--metrics-server", default=None, help="Prometheus URL: builtin checks in PromQL, inline queries."
)
@click.option(
    "--envoy-stats-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve Envoy's /stats/prometheus on 127.0.0.1:PORT for Prometheus to scrape.",
)
@click.option(
    "--flags-token",
    envvar="RHEOSTAT_FLAGS_TOKEN",
    default=None,
    help="Bearer token OFREP clients must send (needed when --listen is not loopback).",
)
@click.option(
    "--audit-interval",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds between policy audits of live objects.",
)
@click.option(
    "--webhook",
    is_flag=True,
    help="Serve the policies as a validating admission webhook over TLS (docs/policy.md#policy-at-admission).",
)
@click.option(
    "--webhook-port",
    type=click.IntRange(1, 65535),
    default=9443,
    show_default=True,
    help="Port of the webhook.",
)
@click.option(
    "--webhook-host",
    default="127.0.0.1",
    show_default=True,
    help="Address the webhook binds (in the cluster the install passes 0.0.0.0).",
)
@click.option(
    "--webhook-namespace",
    default=None,
    help="Namespace of the Service rheostat-webhook and the Secret rheostat-webhook-tls (default: the pod's, "
    "else rheostat-system).",
)
@click.option(
    "--webhook-cert-dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Serve tls.crt and tls.key from this folder (e.g. cert-manager's Secret) instead of making them.",
)
@click.option(
    "--webhook-fail-open",
    is_flag=True,
    help="Allow (with a warning) when a policy cannot be evaluated; by default such a request is denied.",
)
@click.option(
    "--stop-data-plane",
    is_flag=True,
    help="On exit also end Envoy and the replicas (by default they keep serving, for the next start).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text: a line per change on stdout, warnings on stderr. json: one JSON object per line on both "
    "(time, level, logger, message, kind and object where known).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log what goes well, and tracebacks with warnings.")
def run_cmd(
    repo: Path | None,
    kubeconfig: str | None,
    kube_context: str | None,
    watch_namespace: str | None,
    mesh_provider: str,
    leader_elect: bool | None,
    lease_name: str,
    lease_namespace: str | None,
    branch: str | None,
    listen: str,
    data_dir: Path,
    loadtester_exec: bool,
    root_path: str,
    metrics_server: str | None,
    envoy_stats_port: int | None,
    flags_token: str | None,
    audit_interval: float,
    webhook: bool,
    webhook_port: int,
    webhook_host: str,
    webhook_namespace: str | None,
    webhook_cert_dir: Path | None,
    webhook_fail_open: bool,
    stop_data_plane: bool,
    log_format: str,
    verbose: bool,
) -> None:
    """Start the controller and its API: for the manifests in REPO on this machine (Envoy and local
    processes), or for the Canaries of a cluster (`--kubeconfig`, or no `--repo`).

    \b
    Examples:
      rheostat run --repo deploy
      rheostat run --kubeconfig ~/.kube/config --metrics-server http://127.0.0.1:9090
      rheostat run --repo fleet --path ./clusters/prod --kubeconfig ~/.kube/config

    A data plane left running by a previous `rheostat run` on the same data dir is adopted, not restarted.

    While it runs it prints a line per change on stdout (a revision applied, a rollout started, each step,
    promoted, rolled back and why, a revision blocked by policy, a source that cannot be fetched);
    `rheostat events` has the rest.
    """
    # --repo with --kubeconfig: Git applied into the cluster; no --repo: the cluster's Canaries beside Flux;
    # --repo alone: the embedded default.
    if leader_elect and repo is not None and kubeconfig is None:
        fail(ValueError("--leader-elect is for a cluster (--kubeconfig, or no --repo)"))
    election = LeaderElection(lease_name, lease_namespace) if leader_elect is not False else None
    cluster = (
        ClusterSettings(kubeconfig, kube_context, watch_namespace, mesh_provider, election)
        if repo is None or kubeconfig is not None
        else None
    )
    if cluster is not None and (envoy_stats_port is not None or stop_data_plane):
        fail(ValueError("--envoy-stats-port and --stop-data-plane are for the embedded default (--repo)"))
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(ValueError(f"--listen {listen!r}: expected HOST:PORT with a port from 1 to 65535"))
    hook = None
    if webhook:
        hook = WebhookSettings(
            host=webhook_host.strip("[]"),
            port=webhook_port,
            namespace=webhook_namespace or pod_namespace(),
            cert_dir=webhook_cert_dir,
            fail_closed=not webhook_fail_open,
        )
    try:
        datadir.acquire(data_dir)  # before anything of the data dir is read or written
    except DataDirInUse as exc:
        fail(exc)
    except OSError as exc:  # e.g. a full disk
        fail(RuntimeError(f"cannot take the data dir {data_dir}: {exc}"))
    logs.setup(verbose=verbose, fmt=log_format)
    started = time.time()
    settings = Settings(
        repo=repo,
        data_dir=data_dir,
        branch=branch,
        listen_host=host.strip("[]"),
        listen_port=int(port),
        loadtester_exec=loadtester_exec,
        path=root_path,
        metrics_server=metrics_server,
        envoy_stats_port=envoy_stats_port,
        flags_token=flags_token,
        audit_interval_s=audit_interval,
        cluster=cluster,
        webhook=hook,
    )
    what = str(repo) if repo is not None else f"the Canaries of {kubeconfig or 'the current cluster'}"
    if repo is not None and cluster is not None:
        what = f"{repo} into the cluster of {kubeconfig}"

    def announce(server: Server) -> None:
        logs.adopt_uvicorn()
        say(log_format, f"rheostat {__version__} serving {what} on {server.url} (data in {data_dir})")
        if log_format == "json":  # machine logs are shipped and kept: the token stays in its file
            say(log_format, f"API token in {data_dir / 'token'}")
        elif server.token_unseen:
            err.print(f"API token (shown once, kept in {data_dir / 'token'}): {server.token}")
            server.token_seen()
        Narrator(server.controller.store, since=started, fmt=log_format)

    try:
        # uvloop: 3 to 45% more OFREP and API requests per second than asyncio's loop (docs/benchmarks.md)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_forever(settings, announce, stop_data_plane=stop_data_plane))
    except (RouterError, PlatformError, KubeError, OSError, DataDirInUse) as exc:
        fail(exc)
    except ValueError as exc:  # a kubeconfig that cannot be used: one line naming the file, not a traceback
        if cluster is None:
            raise
        fail(exc)
    except sqlite3.Error as exc:  # e.g. a full disk: one line, not a traceback
        fail(RuntimeError(f"cannot write the state store in {data_dir}: {exc}"))
    finally:
        datadir.release(data_dir)
    if not stop_data_plane and cluster is None:
        say(
            log_format,
            f"rheostat stopped; Envoy and the replicas keep serving (the next `rheostat run` adopts them); "
            f"end them with `rheostat down --data-dir {data_dir}`",
        )


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def pod_namespace() -> str:
    """The namespace the pod runs in (its service account says), else the install's default."""
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "rheostat-system"
    except OSError:
        return "rheostat-system"


def say(fmt: str, message: str) -> None:
    """A line about `rheostat run` itself on stderr: plain, or a log record in the JSON format."""
    if fmt == "json":
        logging.getLogger("rheostat.run").info(message)
    else:
        err.print(message, highlight=False)


@click.command("down")
@data_dir_option
def down_cmd(data_dir: Path) -> None:
    """End the data plane (Envoy and every replica) a stopped `rheostat run` left running on a data dir.

    `rheostat run` leaves Envoy and the replicas serving when it stops (so users are served while the
    controller restarts), unless it was started with --stop-data-plane.

    \b
    Examples:
      rheostat down
      rheostat down --data-dir /var/lib/rheostat
    """
    try:
        ended = dataplane.down(data_dir)
    except DataDirInUse as exc:
        fail(RuntimeError(f"{exc}: stop it first (with --stop-data-plane, or then run `rheostat down`)"))
    except OSError as exc:
        fail(exc)
    parts = []
    if ended.envoy is not None:
        parts.append(f"Envoy (pid {ended.envoy})")
    if ended.replicas:
        parts.append(f"{len(ended.replicas)} replica(s) (pids {', '.join(map(str, ended.replicas))})")
    click.echo(f"ended {' and '.join(parts)}" if parts else f"nothing was running for {data_dir}")
