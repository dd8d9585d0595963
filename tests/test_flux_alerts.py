"""Flux's notification Provider and Alert: loaded, filtered as Flux does, and sent to a real HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.gitops.fetch import GitFetcher
from rheostat.gitops.reconciler import GitOps
from rheostat.gitops.sources import SourceFetchers
from rheostat.model.load import ManifestError, parse_object, read_documents
from rheostat.model.notification import Alert
from rheostat.plugins.notifiers.webhook import SIGNATURE_HEADER, sign
from rheostat.reactor.alerts import Secrets
from rheostat.reactor.flux_alerts import FluxAlerts, selects
from rheostat.store import Store
from rheostat.store.sqlite import EventRecord
from tests.test_gitops_e2e import WORKLOAD, kustomization, source
from tests.test_gitops_git import Repo
from tests.test_notifiers import Receiver, receiver  # noqa: F401  (receiver is a fixture)

N = "notification.toolkit.fluxcd.io"


def provider(name: str, spec: dict[str, Any], version: str = "v1beta3") -> dict[str, Any]:
    return {
        "apiVersion": f"{N}/{version}",
        "kind": "Provider",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    }


def alert(name: str, spec: dict[str, Any], version: str = "v1beta3") -> dict[str, Any]:
    return {
        "apiVersion": f"{N}/{version}",
        "kind": "Alert",
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    }


def event(kind: str, key: str, message: str, warning: bool = False, reason: str = "R") -> EventRecord:
    return EventRecord(1, time.time(), kind, key, reason, message, warning)


def test_provider_types_that_map_onto_notifiers_load_and_others_are_refused_by_name() -> None:
    for t in ("slack", "msteams", "discord", "rocket", "googlechat", "generic-hmac"):
        parse_object(provider("p", {"type": t, "address": "https://example.com/hook"}))
    with pytest.raises(ManifestError, match="github is not supported by Rheostat yet: the Provider types"):
        parse_object(provider("p", {"type": "github", "address": "https://github.com/o/r"}))
    with pytest.raises(
        ManifestError, match="generic is not supported by Rheostat: its webhooks are unsigned"
    ):
        parse_object(provider("p", {"type": "generic", "address": "https://example.com/hook"}))
    with pytest.raises(ManifestError, match="certSecretRef is not supported by Rheostat yet"):
        parse_object(provider("p", {"type": "slack", "certSecretRef": {"name": "ca"}}))
    with pytest.raises(ManifestError, match=r"Flux serves notification\.toolkit\.fluxcd\.io/v1beta3"):
        parse_object(provider("p", {"type": "slack"}, version="v1beta1"))
    loaded = read_documents(
        [
            alert(
                "a",
                {"providerRef": {"name": "p"}, "eventSources": [{"kind": "Kustomization", "name": "*"}]},
                "v1beta2",
            )
        ]
    )
    assert [w for _, w in loaded.warnings] == [f"apiVersion {N}/v1beta2 is deprecated; use {N}/v1beta3"]
    with pytest.raises(ManifestError, match="is not a regular expression"):
        parse_object(
            alert(
                "a",
                {
                    "providerRef": {"name": "p"},
                    "eventSources": [{"kind": "K", "name": "*"}],
                    "exclusionList": ["a(b"],
                },
            )
        )


def test_alerts_filter_events_as_flux_does() -> None:
    a = parse_object(
        alert(
            "a",
            {
                "providerRef": {"name": "p"},
                "eventSources": [
                    {"kind": "Kustomization", "name": "*", "matchLabels": {"team": "web"}},
                    {"kind": "GitRepository", "name": "flux-system"},
                    {"kind": "Canary", "name": "podinfo", "namespace": "apps"},
                ],
                "inclusionList": ["revision", "canary"],
                "exclusionList": ["^skip"],
            },
        )
    )
    assert isinstance(a, Alert)
    web = {"team": "web"}
    assert selects(a, event("Kustomization", "flux-system/apps", "applied revision main@sha1:1"), web)
    assert not selects(a, event("Kustomization", "flux-system/apps", "applied revision x"), {"team": "db"})
    assert not selects(
        a, event("Kustomization", "other/apps", "applied revision x"), web
    )  # Alert's namespace
    assert selects(a, event("GitRepository", "flux-system/flux-system", "stored revision 1"), {})
    assert not selects(a, event("GitRepository", "flux-system/app", "stored revision 1"), {})
    assert selects(a, event("Canary", "apps/podinfo", "canary promoted"), {})
    assert not selects(a, event("Canary", "apps/podinfo", "weight 10"), {})  # not in inclusionList
    assert not selects(a, event("Kustomization", "flux-system/apps", "skip this revision"), web)
    errors = a.model_copy(update={"spec": a.spec.model_copy(update={"eventSeverity": "error"})})
    assert not selects(errors, event("Canary", "apps/podinfo", "canary promoted"), {})
    assert selects(errors, event("Canary", "apps/podinfo", "canary failed", warning=True), {})


async def test_events_of_a_git_revision_reach_slack_and_a_signed_webhook(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    objects = [
        provider("slack", {"type": "slack", "channel": "ops", "address": receiver.url("/slack")}),
        provider(
            "hook", {"type": "generic-hmac", "address": receiver.url("/hook"), "secretRef": {"name": "hook"}}
        ),
        alert(
            "all",
            {
                "providerRef": {"name": "slack"},
                "eventSources": [{"kind": "Kustomization", "name": "*"}],
                "exclusionList": ["NotRun"],
                "eventMetadata": {"env": "prod"},
            },
        ),
        alert(
            "errors",
            {
                "providerRef": {"name": "hook"},
                "eventSeverity": "error",
                "eventSources": [{"kind": "Kustomization", "name": "app"}],
            },
        ),
    ]
    origin = Repo(tmp_path / "repo")
    origin.commit({"w.yaml": WORKLOAD.format(v="1"), "alerts.yaml": yaml.safe_dump_all(objects)}, "first")
    origin.git("branch", "-M", "main")
    origin.push("main")
    store = Store(":memory:")
    boot = [parse_object(source("app", str(origin.origin))), parse_object(kustomization("app", "app"))]
    (tmp_path / "secrets" / "flux-system").mkdir(parents=True)
    (tmp_path / "secrets" / "flux-system" / "hook.yaml").write_text("token: s3cret\n")
    secrets = Secrets(tmp_path / "secrets", environ={})
    g = GitOps(store, SourceFetchers(GitFetcher(tmp_path / "work", secrets.get)), bootstrap=boot)
    flux_alerts = FluxAlerts(store, secrets, cluster="prod-eu")
    await g.reconcile_once()
    await flux_alerts.send_new()
    slack = [json.loads(body) for path, _, body in receiver.seen if path == "/slack"]
    assert slack, receiver.seen
    text = json.dumps(slack)
    assert "applied revision main@sha1:" in text and "prod" in text and '"ops"' in text
    assert not [p for p, _, _ in receiver.seen if p == "/hook"]  # nothing went wrong: no error events

    origin.commit(
        {
            "w.yaml": "apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {name: w}\nspec: {bad: 1}\n"
        },
        "bad",
    )
    origin.push("main")
    await g.reconcile_once(force=True)
    await flux_alerts.send_new()
    hooks = [(headers, body) for path, headers, body in receiver.seen if path == "/hook"]
    assert len(hooks) == 1
    headers, body = hooks[0]
    assert headers[SIGNATURE_HEADER] == sign(body, "s3cret")
    sent = json.loads(body)
    assert sent["severity"] == "error" and sent["phase"] == "BuildFailed" and "w.yaml" in sent["message"]
    assert sent["fields"]["Kind"] == "Kustomization" and sent["name"] == "app"
    assert "s3cret" not in json.dumps([e.message for e in store.events(limit=500)])


async def test_the_watch_sends_at_once_and_a_missing_provider_is_an_event_on_the_alert(
    tmp_path: Path,
    receiver: Receiver,  # noqa: F811
) -> None:
    store = Store(":memory:")
    with store.transaction():
        for doc in (
            provider("slack", {"type": "slack", "address": receiver.url("/slack")}),
            alert(
                "a",
                {
                    "providerRef": {"name": "slack"},
                    "eventSources": [{"kind": "Canary", "name": "*", "namespace": "apps"}],
                },
            ),
            alert(
                "b",
                {
                    "providerRef": {"name": "gone"},
                    "eventSources": [{"kind": "Canary", "name": "*", "namespace": "apps"}],
                },
            ),
        ):
            obj = parse_object(doc)
            store.put_object(obj.kind, obj.metadata.key, doc)
    flux_alerts = FluxAlerts(store, Secrets(tmp_path, environ={}))
    task = asyncio.create_task(flux_alerts.run())
    try:
        await asyncio.sleep(0.05)
        with store.transaction():
            store.add_event("Canary", "apps/podinfo", "Promoted", "canary promoted")
        for _ in range(200):
            if receiver.seen and store.events(kind="Alert"):
                break
            await asyncio.sleep(0.05)
        assert "canary promoted" in json.dumps(receiver.last_json())
        failed = store.events(kind="Alert")
        assert [(e.key, e.reason) for e in failed] == [("flux-system/b", "AlertFailed")]
        assert "spec.providerRef: Provider flux-system/gone not found" in failed[0].message
        await asyncio.sleep(0.2)
        assert len(receiver.seen) == 1  # the AlertFailed event itself is not sent on (no loop)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
