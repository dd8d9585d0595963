"""Flagger's webhook contract: POST JSON, 200-202 is success, anything else, a timeout or an answer larger
than MAX_BODY is a failure."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from rheostat.model.canary import Canary, Webhook
from rheostat.plugins.http_limits import BodyTooLarge, MiB, request
from rheostat.util.durations import parse_duration
from rheostat.util.errors import network_error

MAX_BODY = 1 * MiB  # a hook's answer matters only for its message; past this the hook fails


@dataclass(frozen=True)
class HookResult:
    name: str
    ok: bool
    status: int | None
    message: str


def payload(canary: Canary, phase: str, checksum: str, hook: Webhook) -> dict[str, Any]:
    return {
        "name": canary.metadata.name,
        "namespace": canary.metadata.namespace,
        "phase": phase,
        "checksum": checksum,
        "metadata": dict(hook.metadata or {}),
    }


def event_payload(
    canary: Canary, phase: str, checksum: str, hook: Webhook, message: str, warning: bool
) -> dict[str, Any]:
    body = payload(canary, phase, checksum, hook)
    body["metadata"].update(
        eventMessage=message,
        eventType="Warning" if warning else "Normal",
        timestamp=str(int(time.time() * 1000)),
    )
    return body


class Caller(Protocol):
    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult: ...


class HookCaller:
    """Calls hooks with two pooled clients: one verifying TLS, one for hooks with disableTLS.

    Each attempt has one deadline, the hook's `timeout`, for connect, headers and body together, and reads
    at most MAX_BODY of the answer. `headers_for(url)` adds headers to a call (the API token for the
    controller's own load tester); they are sent, never logged or put in a result."""

    def __init__(self, headers_for: Callable[[str], Mapping[str, str]] | None = None) -> None:
        self._client = httpx.AsyncClient()
        self._insecure = httpx.AsyncClient(verify=False)  # only for hooks that ask for it
        self.headers_for = headers_for

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._insecure.aclose()

    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult:
        client = self._insecure if hook.disableTLS else self._client
        timeout = parse_duration(hook.timeout)
        attempts = 1 + max(0, hook.retries or 0)
        # identity: a compressed answer could expand past the cap inside one chunk
        headers = {
            "Accept-Encoding": "identity",
            **(self.headers_for(hook.url) if self.headers_for else {}),
        }
        result = HookResult(hook.name, False, None, "not called")
        for _ in range(attempts):
            try:
                reply = await request(
                    client,
                    "POST",
                    hook.url,
                    deadline_s=timeout,
                    cap=MAX_BODY,
                    json=body,
                    headers=headers,
                    timeout=timeout,
                )
            except (TimeoutError, httpx.TimeoutException):
                result = HookResult(
                    hook.name, False, None, f"webhook {hook.name} timed out after {hook.timeout}"
                )
                continue
            except BodyTooLarge as exc:
                return HookResult(hook.name, False, None, f"webhook {hook.name}: {exc}")
            except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
                result = HookResult(
                    hook.name, False, None, f"webhook {hook.name} failed: {network_error(exc)}"
                )
                continue
            if 200 <= reply.status <= 202:
                return HookResult(hook.name, True, reply.status, "")
            text = reply.text(300).strip()
            result = HookResult(
                hook.name,
                False,
                reply.status,
                f"webhook {hook.name} returned {reply.status}" + (f": {text}" if text else ""),
            )
            if reply.status < 500:
                break  # a refusal is an answer, not a fault to retry
        return result
