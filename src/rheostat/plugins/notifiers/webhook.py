"""A generic JSON webhook, signed so the receiver can tell the alert came from us and was not altered.

Header `X-Rheostat-Signature: sha256=<hex>` is HMAC-SHA256 of the raw body under the secret's `token`.
Receivers should compare it with `verify_signature`, which is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

from rheostat.plugins.notifiers.base import Alert
from rheostat.plugins.notifiers.delivery import NotifierConfigError, NotifierSettings, post_json

SIGNATURE_HEADER = "X-Rheostat-Signature"


def sign(body: bytes, token: str) -> str:
    return "sha256=" + hmac.new(token.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str, token: str) -> bool:
    return hmac.compare_digest(sign(body, token), header)


def webhook_body(alert: Alert, timestamp: datetime) -> bytes:
    payload = {
        "name": alert.name,
        "namespace": alert.namespace,
        "cluster": alert.cluster,
        "phase": alert.phase,
        "severity": str(alert.severity),
        "message": alert.message,
        "fields": alert.fields,
        "timestamp": timestamp.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


class WebhookNotifier:
    def __init__(self, settings: NotifierSettings, *, clock: Callable[[], datetime] | None = None) -> None:
        if not settings.token:
            # An unsigned alert could be forged by anyone who can reach the receiver.
            raise NotifierConfigError(
                "AlertProvider type webhook: the secret named by spec.secretRef needs a `token` key "
                "to sign requests (HMAC-SHA256)"
            )
        self.settings = settings
        self._token = settings.token
        self._clock = clock or (lambda: datetime.now(UTC))

    async def post(self, alert: Alert) -> None:
        body = webhook_body(alert, self._clock())
        headers = {SIGNATURE_HEADER: sign(body, self._token), "User-Agent": "rheostat"}
        await post_json(self.settings, self.settings.address, body, what="webhook", headers=headers)
