"""The server's change stream (`GET /api/v1/stream`, server-sent events) as the CLI reads it.

`--watch` and `rollout status` do not poll on a timer alone: each message of the stream (a new event, a
canary's status changing) wakes them to read the list again at once. A slow timer stays as a backstop for
what changes outside the store (a replica becoming ready), and carries a watch over a reconnect.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from rheostat.cli.client import ApiError, Client


@dataclass(frozen=True)
class Message:
    event: str
    data: Any
    id: int | None


def messages(c: Client, after: int | None = None) -> Iterator[Message]:
    """Messages of one connection, until it ends; raises ApiError when it cannot be opened."""
    params = {} if after is None else {"after": after}
    timeout = httpx.Timeout(10.0, read=60.0)  # the server writes a keepalive every 15s
    try:
        with c.http.stream("GET", "/api/v1/stream", params=params, timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiError(f"{resp.status_code}: {resp.text[:200]}")
            data: list[str] = []
            event, id_ = "message", None
            for line in resp.iter_lines():
                if line == "":
                    if data:
                        yield Message(event, json.loads("\n".join(data)), id_)
                    event, data, id_ = "message", [], None
                elif line.startswith(":"):
                    continue
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    elif name == "id" and value.isdigit():
                        id_ = int(value)
    except httpx.ConnectError as exc:
        raise ApiError(f"cannot reach the server at {c.server} (is `rheostat run` running?)") from exc


def follow(c: Client, after: int | None = None, retry_s: float = 1.0) -> Iterator[Message]:
    """Messages across reconnects: a dropped stream resumes after the last event id seen."""
    while True:
        try:
            for m in messages(c, after):
                if m.id is not None:
                    after = m.id
                yield m
        except (httpx.HTTPError, ApiError):
            pass
        time.sleep(retry_s)


class Waker:
    """Set whenever the stream says something changed; `wait` also returns after `backstop_s`."""

    def __init__(self, client: Client, backstop_s: float = 2.0) -> None:
        self.backstop_s = backstop_s
        self.changed = threading.Event()
        self.client = client
        self.thread = threading.Thread(target=self._read, name="rheostat-watch-stream", daemon=True)

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # the client closed under it: the watch ended
            for _ in follow(self.client):
                self.changed.set()

    def __enter__(self) -> Waker:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def wait(self) -> None:
        self.changed.wait(self.backstop_s)
        self.changed.clear()
