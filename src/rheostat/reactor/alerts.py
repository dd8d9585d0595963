"""Alerts: a canary's `analysis.alerts` name AlertProviders; each gets the events at or above its severity."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import yaml

from rheostat.gitops.gate import Finding
from rheostat.model.alert_provider import AlertProvider
from rheostat.model.canary import Canary
from rheostat.model.load import parse_object
from rheostat.model.yaml_limits import safe_load
from rheostat.plugins.notifiers.base import Alert, Severity
from rheostat.plugins.notifiers.factory import notifier_from_provider
from rheostat.rollout.types import CanaryStatus, Event
from rheostat.store.port import State
from rheostat.util.errors import describe_error


def env_name(namespace: str, name: str) -> str:
    """RHEOSTAT_SECRET_<NAMESPACE>_<NAME>, upper case, anything else than letters and digits as `_`."""
    return "RHEOSTAT_SECRET_" + re.sub(r"[^A-Z0-9]", "_", f"{namespace}_{name}".upper())


class Secrets:
    """Secrets stay out of Git: a file `<dir>/<namespace>/<name>.yaml` (a mapping of keys to strings), or an
    environment variable RHEOSTAT_SECRET_<NAMESPACE>_<NAME> holding the same mapping as YAML or JSON."""

    def __init__(
        self,
        root: Path,
        environ: Mapping[str, str] | None = None,
        cluster: Callable[[str, str], dict[str, str] | None] | None = None,
    ) -> None:
        self.root = root
        self.environ = os.environ if environ is None else environ
        self.cluster = cluster  # against a cluster: its Secrets (kept in memory only, never on disk)

    def get(self, namespace: str, name: str) -> dict[str, str] | None:
        if self.cluster is not None and (found := self.cluster(namespace, name)) is not None:
            return found
        path = self.root / namespace / f"{name}.yaml"
        if path.is_file():
            text = path.read_text()
        elif env_name(namespace, name) in self.environ:
            text = self.environ[env_name(namespace, name)]
        else:
            return None
        try:
            data = safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or "not YAML"
            raise ValueError(f"secret {namespace}/{name}:{where}: {problem}") from None
        if not isinstance(data, dict):
            raise ValueError(f"secret {namespace}/{name}: expected a mapping of keys to strings")
        return {str(k): str(v) for k, v in data.items()}


class Alerter:
    def __init__(self, store: State, secrets: Secrets, cluster: str = "local") -> None:
        self.store = store
        self.secrets = secrets
        self.cluster = cluster

    async def __call__(self, canary: Canary, event: Event, status: CanaryStatus) -> None:
        if event.alert is None:
            return
        for ref in canary.spec.the_analysis.alerts:
            subscribed = Severity(ref.severity or "info")
            if not event.alert.reaches(subscribed):
                continue
            try:
                await self._send(
                    canary,
                    ref.providerRef.namespace or canary.metadata.namespace,
                    ref.providerRef.name,
                    event,
                    status,
                )
            except Exception as exc:  # an alert that cannot go out is an event on the canary, never a crash
                with self.store.transaction():
                    self.store.add_event(
                        "Canary",
                        canary.metadata.key,
                        "AlertFailed",
                        f"alert {ref.name} could not be sent: {describe_error(exc)}",
                        warning=True,
                    )

    async def policy(self, findings: list[Finding]) -> None:
        """Policy violations go to every AlertProvider annotated `rheostat.dev/alerts: policy`."""
        blocking = [f for f in findings if f.action == "deny" or f.kind == "error"]
        if not blocking:
            return
        for stored in self.store.list_objects("AlertProvider"):
            provider = parse_object(stored.body, stored.source)
            assert isinstance(provider, AlertProvider)
            if "policy" not in provider.metadata.annotations.get("rheostat.dev/alerts", "").split(","):
                continue
            ns = provider.metadata.namespace
            secret = self.secrets.get(ns, provider.spec.secretRef.name) if provider.spec.secretRef else None
            try:
                notifier = notifier_from_provider(provider.spec, secret)
                for f in blocking:
                    await notifier.post(
                        Alert(
                            name=f.object or f.policy,
                            namespace=ns,
                            phase="PolicyViolation",
                            message=f"{f.policy}: {f.message}",
                            severity=Severity.ERROR,
                            cluster=self.cluster,
                            fields={
                                "Policy": f.policy,
                                "Object": f.object,
                                "Commit": f.commit or "-",
                                "File": f.file or "-",
                                "Found by": f.found_by,
                            },
                        )
                    )
            except Exception as exc:  # an alert that cannot go out is an event, never a crash
                with self.store.transaction():
                    self.store.add_event(
                        "AlertProvider",
                        stored.key,
                        "AlertFailed",
                        f"policy alert could not be sent: {describe_error(exc)}",
                        warning=True,
                    )

    async def _send(self, canary: Canary, ns: str, name: str, event: Event, status: CanaryStatus) -> None:
        assert event.alert is not None
        stored = self.store.get_object("AlertProvider", f"{ns}/{name}")
        if stored is None:
            raise LookupError(f"AlertProvider {ns}/{name} not found")
        provider = parse_object(stored.body, stored.source)
        assert isinstance(provider, AlertProvider)
        secret = None
        if provider.spec.secretRef is not None:
            secret = self.secrets.get(ns, provider.spec.secretRef.name)
        notifier = notifier_from_provider(provider.spec, secret)
        await notifier.post(
            Alert(
                name=canary.metadata.name,
                namespace=canary.metadata.namespace,
                phase=status.phase.value,
                message=event.message,
                severity=event.alert,
                cluster=self.cluster,
                fields={
                    "Target": canary.spec.targetRef.name,
                    "Phase": status.phase.value,
                    "Failed checks": f"{status.failed_checks}/{canary.spec.the_analysis.threshold}",
                },
            )
        )
