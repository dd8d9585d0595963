"""OpenFeature Remote Evaluation Protocol (OFREP) over the flags in force.

`ofrep_app(store, ...)` is a Starlette app with:

- `POST /ofrep/v1/evaluate/flags/{key}`: one flag. 200 `{key, value?, reason, variant, metadata}`; 404
  `{key, errorCode: FLAG_NOT_FOUND, errorDetails}`; 400 `{key, errorCode, errorDetails}` with errorCode one of
  PARSE_ERROR, TARGETING_KEY_MISSING, INVALID_CONTEXT, GENERAL;
- `POST /ofrep/v1/evaluate/flags`: every flag. 200 `{flags: [...], eventStreams: [...]}` with a strong `ETag`;
  `If-None-Match` that matches gives 304 with no body; a bad request 400 `{errorCode, errorDetails}`;
- `GET /ofrep/v1/events`: server-sent events, one `refetchEvaluation` message per change of the flags.

`variant` is always sent (the stock Python provider fails without it): "" when no variant applies (a disabled
flag, or a flag whose code default applies; `value` is then left out). With a token configured, a request
without one is 401 and one with a wrong one 403 (`Authorization: Bearer <token>` or `X-API-Key: <token>`).
With a rate limit, a client over it gets 429 and `Retry-After` in whole seconds. A fault is a 500
`{errorDetails}` without a stack trace; an evaluation error is never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from rheostat.flags.evaluate import (
    DISABLED,
    FLAG_NOT_FOUND,
    GENERAL,
    INVALID_CONTEXT,
    PARSE_ERROR,
    TARGETING_KEY_MISSING,
    Context,
    InvalidContext,
    Resolution,
)
from rheostat.flags.store import FlagChange, FlagStore

log = logging.getLogger(__name__)

BASE = "/ofrep/v1"
EVENTS_PATH = f"{BASE}/events"
OFREP_400_CODES = frozenset({PARSE_ERROR, TARGETING_KEY_MISSING, INVALID_CONTEXT, GENERAL})
MAX_BODY = 1_000_000


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per client (its token, else its address): `rate` requests a second, `burst` at once."""

    rate: float
    burst: int = 1


class _Buckets:
    def __init__(self, limit: RateLimit, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """0 when allowed, else the seconds until a request would be."""
        now = self.clock()
        tokens, at = self.buckets.get(client, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - at) * self.limit.rate)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.limit.rate if self.limit.rate > 0 else 3600.0


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(data, status, headers=headers, media_type="application/json")


def _success(res: Resolution) -> dict[str, Any]:
    out: dict[str, Any] = {"key": res.key}
    if res.has_value and res.reason != DISABLED:
        out["value"] = res.value
    out["reason"] = res.reason
    out["variant"] = res.variant if res.has_value and res.variant is not None else ""
    out["metadata"] = dict(res.metadata)
    return out


def _failure(res: Resolution) -> dict[str, Any]:
    code = res.error_code if res.error_code in OFREP_400_CODES else GENERAL
    details = res.error_message or ""
    if code != res.error_code:
        details = f"{res.error_code}: {details}"
    out: dict[str, Any] = {"key": res.key, "errorCode": code, "errorDetails": details}
    if res.metadata:
        out["metadata"] = dict(res.metadata)
    return out


def _etag_matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    bare = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == bare for tag in header.split(","))


class OfrepServer:
    """The state behind one OFREP app: the store, the token, the rate limit, the event streams."""

    def __init__(
        self,
        store: FlagStore,
        *,
        token: str | None = None,
        rate_limit: RateLimit | None = None,
        clock: Callable[[], float] = time.monotonic,
        keepalive_s: float = 15.0,
        inactivity_delay_s: int = 120,
    ) -> None:
        self.store = store
        self.token = token
        self.buckets = _Buckets(rate_limit, clock) if rate_limit is not None else None
        self.keepalive_s = keepalive_s
        self.inactivity_delay_s = inactivity_delay_s
        self._streams: set[asyncio.Queue[FlagChange | None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe = store.subscribe(self._changed)

    # -- change push ------------------------------------------------------------------------------------------

    def _changed(self, change: FlagChange) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for queue in list(self._streams):
            loop.call_soon_threadsafe(queue.put_nowait, change)

    def close(self) -> None:
        """End every event stream (call before stopping the server) and stop listening to the store."""
        self._unsubscribe()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for queue in list(self._streams):
                loop.call_soon_threadsafe(queue.put_nowait, None)

    @property
    def subscribers(self) -> int:
        return len(self._streams)

    # -- checks every request passes --------------------------------------------------------------------------

    def _guard(self, request: Request) -> Response | None:
        presented: str | None = None
        auth = request.headers.get("authorization")
        if auth is not None and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        elif "x-api-key" in request.headers:
            presented = request.headers["x-api-key"]
        if self.token is not None:
            if not presented:
                return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer realm="ofrep"'})
            if not hmac.compare_digest(presented.encode(), self.token.encode()):
                return Response(status_code=403)
        if self.buckets is not None:
            client = presented or (request.client.host if request.client else "unknown")
            wait = self.buckets.take(client)
            if wait > 0:
                return Response(status_code=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
        return None

    async def _context(self, request: Request) -> Context:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise _TooLarge
        if not raw.strip():
            return Context()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidContext(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidContext("the request body must be a JSON object")
        return Context.from_json(body.get("context"))

    # -- endpoints --------------------------------------------------------------------------------------------

    async def evaluate_one(self, request: Request) -> Response:
        key = request.path_params["key"]
        denied = self._guard(request)
        if denied is not None:
            return denied
        try:
            context = await self._context(request)
            res = self.store.evaluate(key, context)
        except InvalidContext as exc:
            return _json({"key": key, "errorCode": INVALID_CONTEXT, "errorDetails": str(exc)}, 400)
        except _TooLarge:
            return _json({"errorDetails": f"request body over {MAX_BODY} bytes"}, 413)
        except Exception as exc:
            log.exception("OFREP evaluation of %s failed", key)
            return _json({"errorDetails": f"internal error: {type(exc).__name__}"}, 500)
        if res.error_code == FLAG_NOT_FOUND:
            return _json(
                {"key": key, "errorCode": FLAG_NOT_FOUND, "errorDetails": res.error_message or ""}, 404
            )
        if res.error_code is not None:
            return _json(_failure(res), 400)
        return _json(_success(res))

    async def evaluate_all(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        try:
            context = await self._context(request)
            results = self.store.evaluate_all(context)
        except InvalidContext as exc:
            return _json({"errorCode": INVALID_CONTEXT, "errorDetails": str(exc)}, 400)
        except _TooLarge:
            return _json({"errorDetails": f"request body over {MAX_BODY} bytes"}, 413)
        except Exception as exc:
            log.exception("OFREP bulk evaluation failed")
            return _json({"errorDetails": f"internal error: {type(exc).__name__}"}, 500)
        flags = [_failure(r) if r.error_code is not None else _success(r) for r in results]
        data = json.dumps(flags, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers={"ETag": etag})
        url = str(request.base_url).rstrip("/") + request.scope.get("root_path", "") + EVENTS_PATH
        body = {
            "flags": flags,
            "eventStreams": [{"type": "sse", "url": url, "inactivityDelaySec": self.inactivity_delay_s}],
        }
        return _json(body, headers={"ETag": etag, "Cache-Control": "no-cache"})

    async def events(self, request: Request) -> Response:
        denied = self._guard(request)
        if denied is not None:
            return denied
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[FlagChange | None] = asyncio.Queue()
        self._streams.add(queue)
        last = request.headers.get("last-event-id", "")
        missed = last.isdigit() and int(last) < self.store.version
        return StreamingResponse(
            self._stream(queue, missed),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, queue: asyncio.Queue[FlagChange | None], missed: bool) -> AsyncIterator[str]:
        try:
            yield "retry: 1000\n\n"
            if missed:  # changes happened while the client was away: one refetch covers them all
                yield self._event(self.store.version, self.store.etag, time.time())
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), self.keepalive_s)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if change is None:
                    return
                yield self._event(change.version, change.etag, change.at)
        finally:
            self._streams.discard(queue)

    @staticmethod
    def _event(version: int, etag: str, at: float) -> str:
        data = json.dumps({"type": "refetchEvaluation", "etag": etag, "lastModified": int(at)})
        return f"id: {version}\nevent: message\ndata: {data}\n\n"


class _TooLarge(Exception):
    pass


def ofrep_app(
    store: FlagStore,
    *,
    token: str | None = None,
    rate_limit: RateLimit | None = None,
    clock: Callable[[], float] = time.monotonic,
    keepalive_s: float = 15.0,
) -> Starlette:
    """The OFREP Starlette app over `store`; its `state.ofrep` is the OfrepServer (call `.close()` to end
    event streams before stopping the server)."""
    server = OfrepServer(store, token=token, rate_limit=rate_limit, clock=clock, keepalive_s=keepalive_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server._loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            server.close()

    app = Starlette(
        routes=[
            Route(f"{BASE}/evaluate/flags/{{key}}", server.evaluate_one, methods=["POST"]),
            Route(f"{BASE}/evaluate/flags", server.evaluate_all, methods=["POST"]),
            Route(EVENTS_PATH, server.events, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.ofrep = server
    return app
