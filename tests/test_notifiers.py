"""Notifiers post the right JSON to a real local HTTP server, and never show a secret when they fail."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast, get_args

import pytest

from rheostat.model.alert_provider import AlertProviderSpec, AlertType
from rheostat.model.metric_template import SecretRef
from rheostat.plugins.notifiers import NOTIFIERS
from rheostat.plugins.notifiers.base import Alert, NotifierError, Severity
from rheostat.plugins.notifiers.chat import SlackNotifier
from rheostat.plugins.notifiers.delivery import (
    DeliveryError,
    NotifierConfigError,
    NotifierSettings,
    redact_url,
)
from rheostat.plugins.notifiers.factory import SLACK_POST_MESSAGE, SeverityFilter, notifier_from_provider
from rheostat.plugins.notifiers.memory import MemoryNotifier
from rheostat.plugins.notifiers.webhook import SIGNATURE_HEADER, WebhookNotifier, verify_signature
from tests.servers import free_port, serving

SECRET_PATH = "/services/T000/B000/XsecretX"
TOKEN = "xoxb-token-XsecretX"


class Receiver(ThreadingHTTPServer):
    """Answers each POST with `status` and `reply`, and keeps what it was sent."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.status = 200
        self.reply = b"ok"
        self.seen: list[tuple[str, dict[str, str], bytes]] = []

    def url(self, path: str = SECRET_PATH) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def last_json(self) -> Any:
        return json.loads(self.seen[-1][2])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server = cast(Receiver, self.server)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server.seen.append((self.path, dict(self.headers), body))
        # Echo the path back, as some endpoints do, so tests see that errors scrub it.
        reply = server.reply.replace(b"{path}", self.path.encode())
        self.send_response(server.status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving(Receiver(), "notifier-receiver") as server:
        yield server


closed_port = free_port


def alert(severity: Severity = Severity.INFO) -> Alert:
    return Alert(
        name="podinfo",
        namespace="test",
        phase="Progressing",
        message="New revision detected! Scaling up podinfo.test",
        severity=severity,
        fields={"Target": "Deployment/podinfo.test", "Traffic routing": "Weight step: 10 max: 50"},
        cluster="prod-eu",
    )


def provider(kind: AlertType, address: str | None, **extra: Any) -> AlertProviderSpec:
    return AlertProviderSpec(type=kind, address=address, **extra)


async def test_slack_posts_an_incoming_webhook_attachment(receiver: Receiver) -> None:
    notifier = notifier_from_provider(
        provider("slack", receiver.url(), channel="deploys", username="rheo"), None
    )

    await notifier.post(alert(Severity.ERROR))

    path, headers, _ = receiver.seen[0]
    assert path == SECRET_PATH
    assert headers["Content-Type"] == "application/json"
    assert "Authorization" not in headers
    payload = receiver.last_json()
    assert (payload["channel"], payload["username"]) == ("deploys", "rheo")
    [attachment] = payload["attachments"]
    assert attachment["color"] == "danger"
    assert attachment["author_name"] == "podinfo.test"
    assert attachment["text"] == "New revision detected! Scaling up podinfo.test"
    assert attachment["fields"] == [
        {"title": "Target", "value": "Deployment/podinfo.test", "short": False},
        {"title": "Traffic routing", "value": "Weight step: 10 max: 50", "short": False},
        {"title": "Cluster", "value": "prod-eu", "short": False},
    ]


@pytest.mark.parametrize("severity", [Severity.INFO, Severity.WARN])
async def test_slack_colors_anything_but_errors_good(receiver: Receiver, severity: Severity) -> None:
    await notifier_from_provider(provider("slack", receiver.url()), None).post(alert(severity))

    assert receiver.last_json()["attachments"][0]["color"] == "good"


async def test_slack_with_a_token_uses_the_web_api_with_a_bearer(receiver: Receiver) -> None:
    receiver.reply = b'{"ok": true}'
    secret = {"address": receiver.url("/api/chat.postMessage"), "token": TOKEN}
    spec = provider("slack", None, secretRef=SecretRef(name="slack"))

    await notifier_from_provider(spec, secret).post(alert())

    path, headers, _ = receiver.seen[0]
    assert path == "/api/chat.postMessage"
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert receiver.last_json()["channel"] == "general"


async def test_slack_web_api_refusal_is_an_error_without_the_token(receiver: Receiver) -> None:
    receiver.reply = b'{"ok": false, "error": "channel_not_found"}'
    notifier = SlackNotifier(NotifierSettings(address=receiver.url(), token=TOKEN))

    with pytest.raises(DeliveryError, match="channel_not_found") as caught:
        await notifier.post(alert())

    assert caught.value.status == 200
    assert "XsecretX" not in str(caught.value)


def test_slack_token_without_address_defaults_to_chat_post_message() -> None:
    spec = provider("slack", None, secretRef=SecretRef(name="slack"))

    notifier = notifier_from_provider(spec, {"token": TOKEN})

    assert isinstance(notifier, SlackNotifier)
    assert notifier.settings.address == SLACK_POST_MESSAGE


async def test_discord_posts_slack_payload_to_the_slack_path(receiver: Receiver) -> None:
    await notifier_from_provider(provider("discord", receiver.url("/api/webhooks/1/abc/")), None).post(
        alert()
    )

    assert receiver.seen[0][0] == "/api/webhooks/1/abc/slack"
    assert receiver.last_json()["attachments"][0]["author_name"] == "podinfo.test"


async def test_rocket_posts_slack_payload(receiver: Receiver) -> None:
    await notifier_from_provider(provider("rocket", receiver.url("/hooks/abc")), None).post(alert())

    assert receiver.seen[0][0] == "/hooks/abc"
    assert receiver.last_json()["attachments"][0]["color"] == "good"


async def test_msteams_posts_an_adaptive_card(receiver: Receiver) -> None:
    await notifier_from_provider(provider("msteams", receiver.url()), None).post(alert(Severity.WARN))

    payload = receiver.last_json()
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard"
    title, message, facts = card["body"]
    assert (title["text"], title["color"]) == ("podinfo.test", "Warning")
    assert message["text"] == "New revision detected! Scaling up podinfo.test"
    assert {"title": "Cluster", "value": "prod-eu"} in facts["facts"]


async def test_gchat_posts_text_and_a_card(receiver: Receiver) -> None:
    await notifier_from_provider(provider("gchat", receiver.url()), None).post(alert())

    payload = receiver.last_json()
    assert payload["text"] == "*podinfo.test* New revision detected! Scaling up podinfo.test"
    card = payload["cardsV2"][0]["card"]
    assert card["header"]["title"] == "podinfo.test"
    widgets = card["sections"][0]["widgets"]
    assert widgets[0] == {"textParagraph": {"text": "New revision detected! Scaling up podinfo.test"}}
    assert {"decoratedText": {"topLabel": "Target", "text": "Deployment/podinfo.test"}} in widgets


async def test_webhook_posts_the_alert_signed_with_hmac(receiver: Receiver) -> None:
    when = datetime(2025, 5, 1, 12, 30, tzinfo=UTC)
    settings = NotifierSettings(address=receiver.url("/alerts"), token="s3cret")
    notifier = WebhookNotifier(settings, clock=lambda: when)

    await notifier.post(alert(Severity.ERROR))

    _, headers, body = receiver.seen[0]
    assert headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature(body, headers[SIGNATURE_HEADER], "s3cret")
    assert not verify_signature(body, headers[SIGNATURE_HEADER], "other")
    assert json.loads(body) == {
        "name": "podinfo",
        "namespace": "test",
        "cluster": "prod-eu",
        "phase": "Progressing",
        "severity": "error",
        "message": "New revision detected! Scaling up podinfo.test",
        "fields": {"Target": "Deployment/podinfo.test", "Traffic routing": "Weight step: 10 max: 50"},
        "timestamp": "2025-05-01T12:30:00Z",
    }


async def test_webhook_from_provider_signs_with_the_secret_token(receiver: Receiver) -> None:
    spec = provider("webhook", receiver.url("/alerts"), secretRef=SecretRef(name="hook"))

    await notifier_from_provider(spec, {"token": "s3cret"}).post(alert())

    _, headers, body = receiver.seen[0]
    assert verify_signature(body, headers[SIGNATURE_HEADER], "s3cret")


def test_webhook_without_a_token_refuses_to_build() -> None:
    with pytest.raises(NotifierConfigError, match="needs a `token` key"):
        notifier_from_provider(provider("webhook", "http://127.0.0.1/alerts"), None)


def test_secret_address_overrides_spec_address() -> None:
    spec = provider("rocket", "http://spec.example/hook", secretRef=SecretRef(name="rocket"))

    notifier = notifier_from_provider(spec, {"address": "http://secret.example/hook"})

    assert cast(Any, notifier).settings.address == "http://secret.example/hook"


def test_missing_address_names_the_field() -> None:
    spec = provider("msteams", None, secretRef=SecretRef(name="teams"))

    with pytest.raises(NotifierConfigError, match=r"spec\.address.*'teams'"):
        notifier_from_provider(spec, {"token": "unused"})


def test_unread_secret_names_the_secret_ref() -> None:
    spec = provider("slack", None, secretRef=SecretRef(name="slack-url"))

    with pytest.raises(NotifierConfigError, match=r"spec\.secretRef.*'slack-url'"):
        notifier_from_provider(spec, None)


def test_bad_address_is_refused_without_echoing_it() -> None:
    spec = provider("slack", None, secretRef=SecretRef(name="slack"))

    with pytest.raises(NotifierConfigError, match="AlertProvider address") as caught:
        notifier_from_provider(spec, {"address": "ftp://hooks.example/XsecretX"})

    assert "XsecretX" not in str(caught.value)


def test_every_alert_provider_type_has_a_notifier() -> None:
    assert NOTIFIERS.names() == sorted(get_args(AlertType))


async def test_server_error_is_a_notifier_error_with_the_status_and_no_secret(receiver: Receiver) -> None:
    receiver.status = 500
    receiver.reply = b"internal error at {path}"
    notifier = SlackNotifier(NotifierSettings(address=receiver.url(), token=TOKEN))

    with pytest.raises(NotifierError) as caught:
        await notifier.post(alert())

    assert isinstance(caught.value, DeliveryError)
    assert caught.value.status == 500
    text = str(caught.value)
    assert "answered 500" in text
    assert f"http://127.0.0.1:{receiver.server_address[1]}/…" in text
    assert "XsecretX" not in text
    assert caught.value.__cause__ is None


async def test_connection_refused_is_a_notifier_error_without_a_status() -> None:
    spec = provider(
        "webhook", f"http://127.0.0.1:{closed_port()}{SECRET_PATH}", secretRef=SecretRef(name="h")
    )
    notifier = notifier_from_provider(spec, {"token": TOKEN})

    with pytest.raises(DeliveryError, match="failed") as caught:
        await notifier.post(alert())

    assert caught.value.status is None
    assert "XsecretX" not in str(caught.value)


async def test_proxy_carries_the_request(receiver: Receiver) -> None:
    spec = provider("rocket", f"http://hooks.example.invalid{SECRET_PATH}", proxy=receiver.url("/"))

    await notifier_from_provider(spec, None).post(alert())

    # An HTTP proxy is sent the absolute URL.
    assert receiver.seen[0][0] == f"http://hooks.example.invalid{SECRET_PATH}"


async def test_request_log_shows_no_secret(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")

    await notifier_from_provider(provider("slack", receiver.url()), None).post(alert())

    assert "HTTP Request: POST" in caplog.text
    assert "XsecretX" not in caplog.text


async def test_severity_filter_passes_what_reaches_the_subscription() -> None:
    memory = MemoryNotifier()
    notifier = SeverityFilter(memory, Severity.WARN)

    for severity in Severity:
        await notifier.post(alert(severity))

    assert [a.severity for a in memory.alerts] == [Severity.WARN, Severity.ERROR]


def test_redact_url_keeps_only_the_origin() -> None:
    assert redact_url("https://hooks.slack.com/services/T/B/X?x=1") == "https://hooks.slack.com/…"
    assert redact_url("http://user:pw@127.0.0.1:8080/p") == "http://127.0.0.1:8080/…"
    assert redact_url("not a url") == "<url>"


def test_settings_repr_hides_secrets() -> None:
    settings = NotifierSettings(
        address=f"https://hooks.slack.com{SECRET_PATH}", token=TOKEN, proxy="http://u:p@x"
    )

    assert "XsecretX" not in repr(settings)
    assert "u:p" not in repr(settings)
