"""lightkube's and httpx's failures as the port's typed errors, and the retry of the transient ones."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import httpx2
from lightkube.core.exceptions import ApiError

from rheostat.plugins.kube.api import Conflict, Forbidden, Kind, KubeError, NotInstalled, Unavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """A handful of tries, 0.2 s doubling up to 5 s; a Retry-After is honoured up to `cap_s`."""

    tries: int = 5
    base_s: float = 0.2
    cap_s: float = 5.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, compare=False)

    def delay(self, attempt: int, exc: BaseException) -> float:
        after = retry_after(exc)
        return min(self.cap_s, after if after is not None else self.base_s * 2 ** (attempt - 1))


def _response(exc: BaseException) -> httpx2.Response | None:
    if isinstance(exc, httpx2.HTTPStatusError):
        try:
            return exc.response
        except RuntimeError:  # an ApiError decoded from a watch stream has no response
            return None
    return None


def retry_after(exc: BaseException) -> float | None:
    response = _response(exc)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _status(exc: BaseException) -> tuple[int, str, bool]:
    """(HTTP status, message, whether the Status names an object) of a failed request."""
    if isinstance(exc, ApiError) and exc.status is not None:
        details = exc.status.details
        return int(exc.status.code or 0), exc.status.message or "", bool(details and details.name)
    response = _response(exc)
    if response is None:
        return 0, str(exc) or type(exc).__name__, False
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    about = body.get("details") if isinstance(body.get("details"), dict) else {}
    message = str(body.get("message") or response.reason_phrase or "")
    return response.status_code, message, bool(about and about.get("name"))


def is_gone(exc: BaseException) -> bool:
    """410 Gone: the watch's resourceVersion is too old (compacted); only a relist helps."""
    return isinstance(exc, httpx2.HTTPStatusError) and _status(exc)[0] == 410


def failure(exc: BaseException, verb: str, kind: Kind, name: str, note: str = "") -> KubeError:
    """The port's error for a failed request; `Unavailable` for the transient ones (retry them)."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, httpx2.TransportError):
        return Unavailable(0, verb, kind, f"cannot reach the API server: {exc!r}{note}", name)
    if not isinstance(exc, httpx2.HTTPStatusError):
        return Unavailable(0, verb, kind, f"{type(exc).__name__}: {exc}{note}", name)
    status, message, names_object = _status(exc)
    message += note
    if status == 403:
        return Forbidden(status, verb, kind, message, name)
    if status == 404 and not names_object:
        return NotInstalled(status, verb, kind, message, name)
    if status == 409:
        return Conflict(status, verb, kind, message, name)
    if status == 429 or status >= 500:
        return Unavailable(status, verb, kind, message, name)
    return KubeError(status, verb, kind, message, name)


async def retried(retry: Retry, verb: str, kind: Kind, name: str, fn: Callable[[], Awaitable[T]]) -> T:
    """`fn()`, tried again after 429/5xx/connection errors, up to `retry.tries`; then Unavailable."""
    for attempt in range(1, retry.tries + 1):
        try:
            return await fn()
        except (httpx2.HTTPError, ApiError) as exc:
            error = failure(exc, verb, kind, name)
            if not isinstance(error, Unavailable):
                raise error from exc
            if attempt == retry.tries:
                raise failure(exc, verb, kind, name, f" (after {retry.tries} tries)") from exc
            await retry.sleep(retry.delay(attempt, exc))
    raise AssertionError("unreachable")  # pragma: no cover
