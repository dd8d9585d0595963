"""HTTP calls with one deadline for the whole exchange and a cap on the body read.

httpx's `timeout` bounds each read, so a server that trickles a byte a second holds a call for as long as
it likes; `asyncio.timeout` around connect, headers and body does not. The body is streamed and reading
stops past the cap, so a huge answer costs at most the cap (plus one decoded chunk) in memory.
"""

from __future__ import annotations

import asyncio
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
