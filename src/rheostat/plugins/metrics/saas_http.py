"""What the SaaS metric providers (Datadog, New Relic, Dynatrace) share: one GET under a deadline for the
whole exchange, its JSON answer checked, credentials refused told apart from other errors, and messages
that never carry a credential, whatever the server echoes back.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import BodyTooLarge, MiB, request
from rheostat.plugins.metrics.base import NoData, ProviderError
from rheostat.plugins.metrics.sources import Problem
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 5.0  # Flagger's for each of these providers
MAX_BODY = 10 * MiB  # one query's answer; past this it is a failed check, not memory spent

_NOT_JSON = object()  # (JSON's null is None)

# The provider's own words from an error answer: None when it has none.
ErrorText = Callable[[dict[str, Any]], str | None]


def redact(text: str, secrets: Collection[str]) -> str:
    """`text` with every credential replaced by `***` (a server may quote a key back in its error)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:  # a shorter value would blank out ordinary words, and is no secret
            text = text.replace(secret, "***")
    return text


def short(value: Any, limit: int = 300) -> str:
    """A field of an answer for a message: strings cut short, anything else by its type only."""
    if isinstance(value, str):
        return value[:limit] + ("..." if len(value) > limit else "")
    return f"<{type(value).__name__}>"


def shown(value: Any) -> str:
    """A value that should have been a number, for a message: a string quoted and cut, else its type."""
    return repr(short(value, 40)) if isinstance(value, str) else short(value)


def number(value: Any) -> float | None:
    """A JSON number as a float; None for anything else (bool, string, null, ...)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def finite(value: float, name: str, text: str) -> float:
    if not math.isfinite(value):
        raise ProviderError(f"{name} returned {value}, not a number to judge; query: {text}")
    return value


def secret_value(secret: Mapping[str, str] | None, key: str, name: str) -> str:
    """A credential from the template's secret; ValueError naming the key (never its value)."""
    if secret is None:
        raise ValueError(f"{name} needs provider.secretRef: a Secret with `{key}`")
    value = (secret.get(key) or "").strip()  # `echo key | base64` leaves a newline in many secrets
    if not value:
        raise ValueError(f"the secret named by provider.secretRef has no `{key}`")
    return value


def address_problems(spec: MetricProviderSpec, *, required: str | None = None) -> list[Problem]:
    """An http(s) URL with a host and nothing after the path; `required` says what to set when it is not."""
    if spec.address is None:
        return [("address", required)] if required else []
    parts = urlsplit(spec.address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [("address", f"must be an http(s) URL, got {spec.address[:80]!r}")]
    if parts.query or parts.fragment:
        return [("address", "must not have a query or fragment: the provider appends its API's path")]
    if parts.username or parts.password:
        return [("address", "must not carry credentials: they belong in the secret named by secretRef")]
    return []


def secret_problems(spec: MetricProviderSpec, keys: str) -> list[Problem]:
    if spec.secretRef is None:
        return [("secretRef", f"must name a Secret with {keys}: the credentials are read from it only")]
    return []


class Api:
    """One provider's HTTP API at `address`: a GET with the given headers, its JSON object or ProviderError."""

    def __init__(
        self,
        name: str,
        address: str,
        *,
        keys: str,
        error_text: ErrorText,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not address.startswith(("http://", "https://")):
            raise ValueError(f"{name} address must be an http(s) URL, got {address[:80]!r}")
        self.name = name
        self.address = address.rstrip("/")
        self.keys = keys  # how the credentials are named in the secret, for "refused" messages
        self.error_text = error_text
        self.timeout_s = timeout_s
        # The controller's shared client (connections reused); without one, each call has its own.
        self.client = client
        self.transport = transport

    async def get(
        self, path: str, params: Mapping[str, str], headers: Mapping[str, str], text: str
    ) -> tuple[int, dict[str, Any]]:
        """(status, JSON object) of an answer below 400; ProviderError for anything else."""
        where = f"{self.name} at {self.address}"
        try:
            async with contextlib.AsyncExitStack() as stack:
                client = self.client
                if client is None:
                    client = httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport)
                    stack.push_async_callback(client.aclose)
                reply = await request(
                    client,
                    "GET",
                    f"{self.address}{path}",
                    deadline_s=self.timeout_s,
                    cap=MAX_BODY,
                    params=dict(params),
                    headers=dict(headers),
                )
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(f"{where} did not answer within {self.timeout_s:g}s; query: {text}") from None
        except BodyTooLarge as exc:
            raise ProviderError(f"{where}: {exc}; query: {text}") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise ProviderError(f"{where} is unreachable ({network_error(exc)}); query: {text}") from None
        status = f"{self.name} answered HTTP {reply.status}"
        body: Any = _NOT_JSON
        if reply.body.strip():
            with contextlib.suppress(ValueError, RecursionError):
                body = json.loads(reply.body)
        said = self.error_text(body) if isinstance(body, dict) else None
        detail = f": {short(said)}" if said else ""
        if reply.status in (401, 403):
            raise ProviderError(
                f"{self.name} refused the credentials (HTTP {reply.status}{detail}); "
                f"check {self.keys} in the secret named by provider.secretRef; query: {text}"
            )
        if reply.status >= 400:
            if not detail and reply.body.strip():
                detail = f": {reply.text(120)!r}"
            raise ProviderError(f"{status}{detail}; query: {text}")
        if not reply.body.strip():
            raise ProviderError(f"{status} with an empty body; query: {text}")
        if body is _NOT_JSON:
            raise ProviderError(f"{status} with a body that is not JSON: {reply.text(80)!r}; query: {text}")
        if not isinstance(body, dict):
            raise ProviderError(f"{status} with JSON that is not an object; query: {text}")
        return reply.status, body


async def guarded(call: Callable[[], Awaitable[float]], secrets: Collection[str]) -> float:
    """Run a provider's query; any message it raises is redacted of the credentials."""
    try:
        result = await call()
    except ProviderError as exc:
        raise ProviderError(redact(str(exc), secrets)) from None
    except NoData as exc:
        raise NoData(redact(str(exc), secrets)) from None
    return result
