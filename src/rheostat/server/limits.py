"""Size limits of what a client may send: the request head (line and headers) and the body.

`BoundedHttpTools` is uvicorn's httptools protocol that answers 431 once the request line and headers pass
`MAX_HEAD` bytes, before they are all read (uvicorn's httptools protocol has no such limit). `BodyLimit` is
ASGI middleware that answers 413 when a body is over its cap: at once from `Content-Length`, else as soon as
the bytes read pass it; the connection is then closed, so nothing more is read. Receivers get a larger cap
than the API, since a Git host's push payload can be large.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEAD = 64 * 1024  # the request line and all headers
MAX_BODY = 1024 * 1024  # the API, OFREP and the load tester
MAX_HOOK_BODY = 4 * 1024 * 1024  # /hook/...: a push of many commits is a few MiB


def body_cap(path: str) -> int:
    return MAX_HOOK_BODY if path.startswith("/hook/") else MAX_BODY


def _answer(status: int, reason: bytes, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, reason),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request line and headers: past it, 431 and close.

    Counted in raw bytes as they arrive, since httptools keeps a header value until it ends: a 2 MB header
    is refused once `MAX_HEAD` bytes of it are in, never held whole."""

    head_bytes = 0
    in_head = True

    def on_headers_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head = True

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a read that ends the head may carry body bytes, which do not count.
        if self.in_head and self.head_bytes > MAX_HEAD and not self.transport.is_closing():
            message = f"the request line and headers are over {MAX_HEAD} bytes"
            self.transport.write(_answer(431, b"Request Header Fields Too Large", message))
            self.transport.close()


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes its cap; the API's handlers answer it as a 413."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"the request body is over {cap} bytes", headers={"Connection": "close"})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            digits = value.strip()
            return int(digits) if digits.isdigit() and len(digits) < 20 else None
    return None


class BodyLimit:
    """Caps every request body at `body_cap(path)`; over it, 413 (JSON) and the connection is closed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = body_cap(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await refuse(send, 413, f"the request body is over {cap} bytes")  # nothing of it read
            return
        read = 0

        async def bounded() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > cap:
                    raise BodyTooLarge(cap)
            return message

        await self.app(scope, bounded, send)


async def refuse(send: Send, status: int, message: str) -> None:
    """A JSON error answer that also closes the connection (what the client sent next is not read)."""
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def parse_json(raw: bytes | str, what: str) -> Any:
    """JSON from a client, as a ValueError naming `what` when it is not (orjson refuses nesting past 1024
    levels, so no input can exhaust the stack)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{what}: not JSON ({exc})") from None


__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_HOOK_BODY",
    "BodyLimit",
    "BodyTooLarge",
    "BoundedHttpTools",
    "parse_json",
]
