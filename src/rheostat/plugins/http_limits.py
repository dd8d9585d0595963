"""HTTP calls with one deadline for the whole exchange and a cap on the body read.

httpx's `timeout` bounds each read, so a server that trickles a byte a second holds a call for as long as
it likes; `asyncio.timeout` around connect, headers and body does not. The body is streamed and reading
stops past the cap, so a huge answer costs at most the cap (plus one decoded chunk) in memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

MiB = 1024 * 1024


class BodyTooLarge(Exception):
    """The answer's body passed the cap; reading stopped there."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"the answer's body is larger than {describe_size(cap)}; stopped reading")
        self.cap = cap


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def text(self, limit: int) -> str:
        """The body's start, decoded leniently, at most `limit` characters."""
        return self.body[: limit * 4].decode("utf-8", errors="replace")[:limit]


def describe_size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n} bytes"


async def request(
    client: httpx.AsyncClient, method: str, url: str, *, deadline_s: float, cap: int, **kwargs: Any
) -> Reply:
    """One exchange under `deadline_s` (TimeoutError past it); BodyTooLarge past `cap` bytes.

    httpx errors (httpx.HTTPError, httpx.InvalidURL) pass through for the caller to name."""
    async with asyncio.timeout(deadline_s):
        async with client.stream(method, url, **kwargs) as response:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise BodyTooLarge(cap)
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    raise BodyTooLarge(cap)
                chunks.append(chunk)
            return Reply(response.status_code, b"".join(chunks))


class BoundedTransport(httpx.AsyncBaseTransport):
    """At most `n` exchanges in flight through one connection pool of `n`; the rest wait on a semaphore.

    httpcore scans every pooled connection and every queued request for each request it places, so hundreds
    of canaries querying at once through a large pool (or queueing in a small one) spent most of a busy
    controller's CPU there (bench/kube_scale.py). Waiting here costs nothing; a slot is freed when the
    response is closed."""

    def __init__(self, n: int, *, verify: Any = True) -> None:
        self.inner = httpx.AsyncHTTPTransport(
            verify=verify, limits=httpx.Limits(max_connections=n, max_keepalive_connections=n)
        )
        self.slots = asyncio.Semaphore(n)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.slots.acquire()
        try:
            response = await self.inner.handle_async_request(request)
        except BaseException:
            self.slots.release()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _Releasing(response.stream, self.slots)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


class _Releasing(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, slots: asyncio.Semaphore) -> None:
        self.inner = inner
        self.slots: asyncio.Semaphore | None = slots

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            if self.slots is not None:  # once, however often it is closed
                self.slots.release()
                self.slots = None
