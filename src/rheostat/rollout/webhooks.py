"""Flagger's webhook contract: POST JSON, 200-202 is success, anything else or a timeout is a failure."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from rheostat.model.canary import Canary, Webhook
from rheostat.util.durations import parse_duration


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
    """Calls hooks with two pooled clients: one verifying TLS, one for hooks with disableTLS."""

    def __init__(self) -> None:
        self._client = httpx.AsyncClient()
        self._insecure = httpx.AsyncClient(verify=False)  # only for hooks that ask for it

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._insecure.aclose()

    async def call(self, hook: Webhook, body: dict[str, Any]) -> HookResult:
        client = self._insecure if hook.disableTLS else self._client
        timeout = parse_duration(hook.timeout)
        attempts = 1 + max(0, hook.retries or 0)
        result = HookResult(hook.name, False, None, "not called")
        for _ in range(attempts):
            try:
                resp = await client.post(hook.url, json=body, timeout=timeout)
            except httpx.TimeoutException:
                result = HookResult(
                    hook.name, False, None, f"webhook {hook.name} timed out after {hook.timeout}"
                )
                continue
            except httpx.HTTPError as exc:
                result = HookResult(
                    hook.name, False, None, f"webhook {hook.name} failed: {type(exc).__name__}"
                )
                continue
            if 200 <= resp.status_code <= 202:
                return HookResult(hook.name, True, resp.status_code, "")
            text = resp.text.strip()[:300]
            result = HookResult(
                hook.name,
                False,
                resp.status_code,
                f"webhook {hook.name} returned {resp.status_code}" + (f": {text}" if text else ""),
            )
            if resp.status_code < 500:
                break  # a refusal is an answer, not a fault to retry
        return result
