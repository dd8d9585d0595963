"""OpenFeature Remote Evaluation Protocol (OFREP) over the flags in force.

`ofrep_app(store, ...)` is a Starlette app (`OfrepApp`) with:

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

The two evaluation endpoints are plain ASGI with orjson, and an answer's JSON is kept while the store returns
the same `Resolution` (docs/flags.md, "How it is served"; figures in docs/benchmarks.md).
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
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

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
from rheostat.server import limits

log = logging.getLogger(__name__)

BASE = "/ofrep/v1"
EVENTS_PATH = f"{BASE}/events"
EVALUATE_ALL_PATH = f"{BASE}/evaluate/flags"
EVALUATE_ONE_PREFIX = f"{EVALUATE_ALL_PATH}/"
OFREP_400_CODES = frozenset({PARSE_ERROR, TARGETING_KEY_MISSING, INVALID_CONTEXT, GENERAL})
MAX_BODY = limits.MAX_BODY

Headers = list[tuple[bytes, bytes]]
_JSON: Headers = [(b"content-type", b"application/json")]
_SORTED = orjson.OPT_NON_STR_KEYS | orjson.OPT_SORT_KEYS


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


def _dumps(body: Any, option: int = orjson.OPT_NON_STR_KEYS) -> bytes:
    try:
        return orjson.dumps(body, option=option)
    except TypeError:  # what orjson refuses (an integer over 64 bits): the standard library writes it
        sort = bool(option & orjson.OPT_SORT_KEYS)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False, sort_keys=sort).encode()


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:  # what orjson refuses the standard library may take (NaN, UTF-16, 2**64)
        return json.loads(raw)


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


def _header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (names are lower case in ASGI)."""
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


def _route_path(scope: Scope) -> str:
    """The path below the app's root_path, as Starlette's router sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


async def _send(send: Send, status: int, body: bytes = b"", headers: Headers | None = None) -> None:
    raw: Headers = [] if status == 304 else [(b"content-length", str(len(body)).encode())]
    if headers:
        raw.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_body(receive: Receive) -> bytes:
    first = b""
    chunks: list[bytes] | None = None
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge
        if chunks is not None:
            chunks.append(chunk)
        elif first:
            chunks = [first, chunk]
        else:
            first = chunk
        if not message.get("more_body", False):
            return b"".join(chunks) if chunks is not None else first


def _context(raw: bytes) -> Context:
    if not raw.strip():
        return Context()
    try:
        body = _loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidContext(f"the request body is not JSON: {exc}") from exc
    except RecursionError:  # orjson refused it (over 1024 levels), and so does the standard library
        raise InvalidContext("the request body is not JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise InvalidContext("the request body must be a JSON object")
    return Context.from_json(body.get("context"))


class OfrepServer:
    """The state behind one OFREP app: the store, the token, the rate limit, the event streams.

    The two evaluation endpoints are plain ASGI (`evaluate_one_asgi`, `evaluate_all_asgi`): no Request or
    Response objects, orjson, and the JSON of an answer kept while the store hands back the very same
    `Resolution` (a flag without targeting has one answer, made once per flag definition; see
    `FlagSetEvaluator`), so those answers cost a dictionary look-up.
    """

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
        # flag key -> (the Resolution, its JSON), for the store version `_answers_version`
        self._answers: dict[str, tuple[Resolution, bytes]] = {}
        self._answers_version = -1
        self._event_streams: dict[tuple[Any, ...], bytes] = {}  # the bulk answer's `eventStreams`, per host

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

    def _denied(self, scope: Scope) -> tuple[int, Headers] | None:
        """None when the request may go on, else the status and headers of the refusal."""
        if self.token is None and self.buckets is None:
            return None
        presented: str | None = None
        auth = _header(scope, b"authorization")
        if auth is not None and auth[:7].lower() == "bearer ":
            presented = auth[7:].strip()
        else:
            presented = _header(scope, b"x-api-key")
        if self.token is not None:
            if not presented:
                return 401, [(b"www-authenticate", b'Bearer realm="ofrep"')]
            if not hmac.compare_digest(presented.encode(), self.token.encode()):
                return 403, []
        if self.buckets is not None:
            client = presented or (scope["client"][0] if scope.get("client") else "unknown")
            wait = self.buckets.take(client)
            if wait > 0:
                return 429, [(b"retry-after", str(max(1, math.ceil(wait))).encode())]
        return None

    def _json_of(self, res: Resolution) -> bytes:
        """The JSON of one answer (keys sorted: the bulk ETag hashes it), kept while `res` is served."""
        version = self.store.version
        if version != self._answers_version:
            self._answers.clear()
            self._answers_version = version
        kept = self._answers.get(res.key)
        if kept is not None and kept[0] is res:
            return kept[1]
        data = _dumps(_failure(res) if res.error_code is not None else _success(res), _SORTED)
        self._answers[res.key] = (res, data)
        return data

    def _event_streams_of(self, scope: Scope) -> bytes:
        where = (
            scope.get("scheme"),
            _header(scope, b"host"),
            scope.get("server"),
            scope.get("root_path", ""),
        )
        data = self._event_streams.get(where)
        if data is None:
            url = str(Request(scope).base_url).rstrip("/") + EVENTS_PATH
            data = _dumps([{"type": "sse", "url": url, "inactivityDelaySec": self.inactivity_delay_s}])
            if len(self._event_streams) >= 64:  # the Host header is the client's: keep a few
                self._event_streams.clear()
            self._event_streams[where] = data
        return data

    # -- endpoints --------------------------------------------------------------------------------------------

    async def evaluate_one_asgi(self, scope: Scope, receive: Receive, send: Send, key: str) -> None:
        """`POST /ofrep/v1/evaluate/flags/{key}`."""
        denied = self._denied(scope)
        if denied is not None:
            await _send(send, denied[0], b"", denied[1])
            return
        try:
            res = self.store.evaluate(key, _context(await _read_body(receive)))
            if res.error_code is None:
                status, data = 200, self._json_of(res)
            elif res.error_code == FLAG_NOT_FOUND:
                body = {"key": key, "errorCode": FLAG_NOT_FOUND, "errorDetails": res.error_message or ""}
                status, data = 404, _dumps(body)
            else:
                status, data = 400, self._json_of(res)
        except InvalidContext as exc:
            status, data = 400, _dumps({"key": key, "errorCode": INVALID_CONTEXT, "errorDetails": str(exc)})
        except (_TooLarge, limits.BodyTooLarge):
            status, data = 413, _dumps({"errorDetails": f"request body over {MAX_BODY} bytes"})
        except _Disconnected:
            return
        except Exception:
            log.exception("OFREP evaluation of %s failed", key)
            status, data = (
                500,
                _dumps({"errorDetails": "internal error (the controller's log has the cause)"}),
            )
        await _send(send, status, data, _JSON)

    async def evaluate_all_asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`POST /ofrep/v1/evaluate/flags`."""
        denied = self._denied(scope)
        if denied is not None:
            await _send(send, denied[0], b"", denied[1])
            return
        headers = _JSON
        try:
            results = self.store.evaluate_all(_context(await _read_body(receive)))
            flags = b"[" + b",".join([self._json_of(r) for r in results]) + b"]"
            etag = '"' + hashlib.sha256(flags).hexdigest()[:32] + '"'
            if_none_match = _header(scope, b"if-none-match")
            if if_none_match is not None and _etag_matches(if_none_match, etag):
                status, data, headers = 304, b"", [(b"etag", etag.encode())]
            else:
                status = 200
                data = b'{"flags":' + flags + b',"eventStreams":' + self._event_streams_of(scope) + b"}"
                headers = [*_JSON, (b"etag", etag.encode()), (b"cache-control", b"no-cache")]
        except InvalidContext as exc:
            status, data = 400, _dumps({"errorCode": INVALID_CONTEXT, "errorDetails": str(exc)})
        except (_TooLarge, limits.BodyTooLarge):
            status, data = 413, _dumps({"errorDetails": f"request body over {MAX_BODY} bytes"})
        except _Disconnected:
            return
        except Exception:
            log.exception("OFREP bulk evaluation failed")
            status, data = (
                500,
                _dumps({"errorDetails": "internal error (the controller's log has the cause)"}),
            )
        await _send(send, status, data, headers)

    async def events(self, request: Request) -> Response:
        denied = self._denied(request.scope)
        if denied is not None:
            status, headers = denied
            return Response(status_code=status, headers={k.decode(): v.decode() for k, v in headers})
        self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[FlagChange | None] = asyncio.Queue()
        self._streams.add(queue)
        last = request.headers.get("last-event-id", "")
        missed = len(last) <= 19 and last.isascii() and last.isdigit() and int(last) < self.store.version
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


class _Endpoint:
    """A plain ASGI endpoint for a Starlette Route (an object, not a function, so Route does not wrap it in
    a Request/Response handler). Serves the routes when OFREP's routes are mounted in another app."""

    def __init__(self, handle: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handle(scope, receive, send)


class OfrepApp(Starlette):
    """The OFREP Starlette app; `POST`s to the two evaluation paths skip Starlette's middleware and router
    (the same handlers its routes call), everything else goes the usual way."""

    ofrep: OfrepServer

    async def serve_evaluation(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the request if it is an evaluation `POST` (True); else touch nothing (False). For an app
        that has OFREP's routes among its own, to call from its outermost middleware."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        path = _route_path(scope)
        if path.startswith(EVALUATE_ONE_PREFIX):
            key = path[len(EVALUATE_ONE_PREFIX) :]
            if not key or "/" in key:  # as the route's {key}: Starlette answers those
                return False
            await self.ofrep.evaluate_one_asgi(scope, receive, send, key)
            return True
        if path == EVALUATE_ALL_PATH:
            await self.ofrep.evaluate_all_asgi(scope, receive, send)
            return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.serve_evaluation(scope, receive, send):
            await super().__call__(scope, receive, send)


def ofrep_app(
    store: FlagStore,
    *,
    token: str | None = None,
    rate_limit: RateLimit | None = None,
    clock: Callable[[], float] = time.monotonic,
    keepalive_s: float = 15.0,
) -> OfrepApp:
    """The OFREP Starlette app over `store`; its `state.ofrep` is the OfrepServer (call `.close()` to end
    event streams before stopping the server). Its `routes` serve the same when mounted in another app."""
    server = OfrepServer(store, token=token, rate_limit=rate_limit, clock=clock, keepalive_s=keepalive_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        server._loop = asyncio.get_running_loop()
        try:
            yield
        finally:
            server.close()

    async def one(scope: Scope, receive: Receive, send: Send) -> None:
        await server.evaluate_one_asgi(scope, receive, send, scope["path_params"]["key"])

    app = OfrepApp(
        routes=[
            Route(f"{EVALUATE_ONE_PREFIX}{{key}}", _Endpoint(one), methods=["POST"], name="evaluate_one"),
            Route(
                EVALUATE_ALL_PATH, _Endpoint(server.evaluate_all_asgi), methods=["POST"], name="evaluate_all"
            ),
            Route(EVENTS_PATH, server.events, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.ofrep = server
    app.state.ofrep = server
    return app
