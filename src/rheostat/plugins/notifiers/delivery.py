"""Posting JSON to an alert endpoint, with errors and logs that never show a secret.

A webhook URL is itself a credential (Slack, Teams and Discord put the key in the path), so errors and
httpx's own request log show only scheme://host/… .
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from rheostat.plugins.http_limits import BodyTooLarge, MiB, Reply, request
from rheostat.plugins.notifiers.base import NotifierError

DEFAULT_TIMEOUT = 5.0  # seconds for the whole exchange, body included
MAX_REPLY = 1 * MiB  # an alert endpoint's answer is only checked, never kept


@dataclass(frozen=True)
class NotifierSettings:
    """What every notifier is built from; secrets stay out of repr."""

    address: str = field(repr=False)
    channel: str = "general"
    username: str = "flagger"
    proxy: str | None = field(default=None, repr=False)  # may carry user:password
    token: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False, compare=False)  # test seam


class DeliveryError(NotifierError):
    """An alert was not delivered: `status` is the HTTP status, or None when no response came back."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotifierConfigError(ValueError):
    """A notifier cannot be built from what it was given; the message names the AlertProvider field."""


def redact_url(url: str) -> str:
    """scheme://host[:port]/… : enough to tell endpoints apart, nothing that grants access."""
    parsed = _origin(url)
    if parsed is None:
        return "<url>"
    scheme, host, port = parsed
    return f"{scheme}://{host}{f':{port}' if port else ''}/…"


def check_url(url: str, where: str, schemes: Iterable[str] = ("http", "https")) -> None:
    """NotifierConfigError naming `where` unless `url` is an absolute URL with one of `schemes`."""
    allowed = tuple(schemes)
    parsed = _origin(url)
    if parsed is None or parsed[0] not in allowed:
        raise NotifierConfigError(f"{where}: expected a {' or '.join(allowed)} URL, got {redact_url(url)}")


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # a bad port or bracketed host
        return None
    if not scheme or not host:
        return None
    return scheme, host, port


async def post_json(
    settings: NotifierSettings,
    url: str,
    body: bytes,
    *,
    what: str,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """POST `body` as JSON; DeliveryError on a network error, a timeout of the whole exchange, an answer
    larger than MAX_REPLY or a non-2xx reply. The answer is read (at most MAX_REPLY)."""
    _install_log_redaction()
    secrets = _secrets(url, settings)
    redacting = _redacting.set(True)
    sent = {"Content-Type": "application/json", "Accept-Encoding": "identity", **(headers or {})}
    try:
        # One client per alert: alerts are rare, and nothing is left open between them.
        async with httpx.AsyncClient(
            proxy=settings.proxy, timeout=settings.timeout, transport=settings.transport
        ) as client:
            reply = await request(
                client, "POST", url, deadline_s=settings.timeout, cap=MAX_REPLY, content=body, headers=sent
            )
    except (TimeoutError, httpx.TimeoutException):
        raise DeliveryError(f"{what}: POST {redact_url(url)} timed out after {settings.timeout:g}s") from None
    except BodyTooLarge as exc:
        raise DeliveryError(f"{what}: POST {redact_url(url)}: {exc}") from None
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        # `from None`: the cause's text can hold the URL, and tracebacks get logged.
        reason = _scrub(str(exc), secrets) or type(exc).__name__
        raise DeliveryError(f"{what}: POST {redact_url(url)} failed: {reason}") from None
    finally:
        _redacting.reset(redacting)
    if not 200 <= reply.status < 300:
        snippet = _scrub(reply.text(200), secrets).strip()
        raise DeliveryError(
            f"{what}: POST {redact_url(url)} answered {reply.status}: {snippet}",
            status=reply.status,
        )
    return reply


def _secrets(url: str, settings: NotifierSettings) -> list[str]:
    parts = urlsplit(url)
    candidates = [url, settings.token, settings.proxy, parts.path, parts.query]
    # Longest first, so a URL is hidden whole before its path is; "/" alone is no secret.
    return sorted({c for c in candidates if c and len(c) > 1}, key=len, reverse=True)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "…")
    return text


_redacting: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "rheostat_notifier_redacting", default=False
)


class _RedactRequestLog(logging.Filter):
    """httpx logs every request URL at INFO; inside a notifier post, show it redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _redacting.get() and isinstance(record.args, tuple):
            record.args = tuple(redact_url(str(a)) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactRequestLog) for f in logger.filters):
        logger.addFilter(_RedactRequestLog())
