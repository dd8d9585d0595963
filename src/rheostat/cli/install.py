"""`rheostat install` and `rheostat uninstall`: Rheostat itself in a cluster (plugins/kube/install.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
import yaml

from rheostat.cli.common import fail, stdout
from rheostat.plugins.kube.api import KubeAPI, KubeError
from rheostat.plugins.kube.install import (
    IMAGE,
    NAMESPACE,
    InstallError,
    Options,
    Outcome,
    crd_objects,
    install,
    objects,
)
from rheostat.plugins.kube.install import uninstall as remove

T = TypeVar("T")
_NS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

namespace_option = click.option(
    "-n", "--namespace", default=NAMESPACE, show_default=True, help="The namespace of the controller."
)
kubeconfig_option = click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The cluster (default: $KUBECONFIG, ~/.kube/config, or the pod's service account).",
)
context_option = click.option("--context", "kube_context", default=None, help="The kubeconfig context.")


def _options(
    namespace: str, image: str = IMAGE, metrics_server: str | None = None, mesh_provider: str | None = None
) -> Options:
    if not _NS.match(namespace) or len(namespace) > 63:
        fail(
            ValueError(f"--namespace {namespace!r}: not a valid namespace name (lower case, digits and '-')")
        )
    return Options(
        namespace=namespace, image=image, metrics_server=metrics_server, mesh_provider=mesh_provider
    )


def _against(kubeconfig: str | None, context: str | None, work: Callable[[KubeAPI], Awaitable[T]]) -> T:
    from rheostat.plugins.kube.client import LightkubeAPI  # the client library only when a cluster is asked

    async def run() -> T:
        api = LightkubeAPI.from_kubeconfig(kubeconfig, context)
        try:
            return await work(api)
        finally:
            await api.close()

    try:
        return asyncio.run(run())
    except (KubeError, InstallError, ValueError) as exc:
        fail(exc)


def _say(outcome: Outcome) -> None:
    stdout().print(str(outcome), highlight=False)


@click.command("install", short_help="Install Rheostat in a cluster.")
@click.option("--dry-run", is_flag=True, help="Print every object as YAML; apply nothing.")
@namespace_option
@click.option("--image", default=IMAGE, show_default=True, help="The controller's image.")
@click.option(
    "--metrics-server", default=None, help="The controller's Prometheus URL (as for `rheostat run`)."
)
@click.option(
    "--mesh-provider", default=None, help="The provider of a Canary that sets none (default: istio)."
)
@kubeconfig_option
@context_option
def install_cmd(
    dry_run: bool,
    namespace: str,
    image: str,
    metrics_server: str | None,
    mesh_provider: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
) -> None:
    """Install the controller in a cluster, or upgrade it: its Namespace, the CRDs, a service account with
    least-privilege RBAC, a Deployment of two replicas, the Services (API and dashboard, OFREP, admission
    webhook), the ValidatingWebhookConfiguration and a PodDisruptionBudget. Server-side apply (field manager
    `rheostat`): running it again changes nothing, and after an upgrade of the CLI it upgrades the cluster.

    Flagger's, Flux's and OpenFeature's CRDs are applied only when the cluster has none of that name.

    \b
    Examples:
      rheostat install --dry-run > rheostat.yaml
      rheostat install --context prod --metrics-server http://prometheus.istio-system:9090
    """
    opts = _options(namespace, image, metrics_server, mesh_provider)
    if dry_run:
        foreign = {obj["metadata"]["name"]: k.owner for k, obj in crd_objects() if not k.own}
        docs = []
        for obj in objects(opts):
            head = ""
            if obj["kind"] == "CustomResourceDefinition" and obj["metadata"]["name"] in foreign:
                head = f"# {foreign[obj['metadata']['name']]}'s kind: install applies it only when absent\n"
            docs.append(head + yaml.safe_dump(obj, sort_keys=False))
        click.echo("---\n".join(docs), nl=False)
        return
    done = _against(kubeconfig, kube_context, lambda api: install(api, opts, _say))
    changed = sum(o.action in ("created", "configured") for o in done)
    stdout().print(f"rheostat installed in {namespace}: {changed} object(s) changed", highlight=False)


@click.command("uninstall", short_help="Remove what `rheostat install` made.")
@namespace_option
@click.option(
    "--crds",
    is_flag=True,
    help="Also delete the CRDs install made, and with them every object of their kinds.",
)
@kubeconfig_option
@context_option
def uninstall_cmd(namespace: str, crds: bool, kubeconfig: str | None, kube_context: str | None) -> None:
    """Delete what `rheostat install` made: the objects labelled `app.kubernetes.io/managed-by:
    rheostat-install`. Users' objects (Canaries, FeatureFlags, Flux's objects...) stay, and so do the CRDs,
    unless --crds: deleting a CRD deletes every object of its kind in the cluster.

    \b
    Examples:
      rheostat uninstall
      rheostat uninstall --crds
    """
    opts = _options(namespace)
    done = _against(kubeconfig, kube_context, lambda api: remove(api, opts, crds=crds, say=_say))
    deleted = sum(o.action == "deleted" for o in done)
    stdout().print(f"rheostat uninstalled from {namespace}: {deleted} object(s) deleted", highlight=False)
