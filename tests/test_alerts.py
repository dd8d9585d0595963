"""Alerts from a canary's `analysis.alerts` reach real receivers, filtered by severity, signed, never blocking."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from rheostat.model.load import parse_text
from rheostat.plugins.notifiers.webhook import SIGNATURE_HEADER, verify_signature
from rheostat.reactor.alerts import Alerter, Secrets
from rheostat.rollout.types import Phase
from tests.harness import Harness, canary_yaml
from tests.servers import serving

Received = list[tuple[str, dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    got: Received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got.append((self.path, dict(self.headers), body))
            self.send_response(200 if "down" not in self.path else 500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with serving(srv, "alert-receiver"):
        yield f"http://127.0.0.1:{srv.server_address[1]}", got


def providers(url: str) -> str:
    return f"""
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: on-call, namespace: test}}
spec: {{type: webhook, secretRef: {{name: on-call}}}}
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: team-chat, namespace: test}}
spec: {{type: slack, channel: releases, address: "{url}/slack/T0/B0/secret"}}
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {{name: broken, namespace: test}}
spec: {{type: slack, address: "{url}/down"}}
"""


async def test_alerts_reach_providers_by_severity_signed(
    tmp_path: Path, receiver: tuple[str, Received]
) -> None:
    url, got = receiver
    secrets = tmp_path / "secrets" / "test"
    secrets.mkdir(parents=True)
    (secrets / "on-call.yaml").write_text(yaml.safe_dump({"address": f"{url}/hook", "token": "s3cret"}))
    h = Harness(
        canary_yaml("""
interval: 10s
threshold: 1
stepWeight: 50
metrics: [{name: request-success-rate, thresholdRange: {min: 99}}]
alerts:
- {name: pager, severity: error, providerRef: {name: on-call}}
- {name: chat, providerRef: {name: team-chat}}
- {name: flaky, severity: info, providerRef: {name: broken}}
""")
    )
    with h.store.transaction():
        for p in parse_text(providers(url)):
            h.store.put_object(p.kind, p.metadata.key, p.model_dump(mode="json", exclude_none=True), "t")
    h.engine.alerts = Alerter(h.store, Secrets(tmp_path / "secrets"))
    await h.initialized()
    h.metrics.values["request-success-rate"] = 10.0
    await h.run(3)
    await h.engine.drain()
    assert h.state().phase is Phase.FAILED

    hook = [(hdrs, body) for path, hdrs, body in got if path == "/hook"]
    chat = [json.loads(body) for path, _, body in got if path.startswith("/slack")]
    assert len(hook) == 1  # only the error: the rollback
    headers, body = hook[0]
    sent = json.loads(body)
    assert sent["severity"] == "error" and "Rolling back" in sent["message"]
    signature = {k.lower(): v for k, v in headers.items()}[SIGNATURE_HEADER.lower()]
    assert verify_signature(body, signature, "s3cret")
    assert not verify_signature(body, signature, "wrong")
    texts = json.dumps(chat)
    assert "Initialization done" in texts and "New revision detected" in texts and "Rolling back" in texts
    assert all(c.get("channel") == "releases" for c in chat)
    assert any(path == "/down" for path, _, _ in got)  # the failing provider was tried, and blocked nothing
