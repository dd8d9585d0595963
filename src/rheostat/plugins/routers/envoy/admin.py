"""A small async client for Envoy's admin API on its unix socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx


class AdminError(Exception):
    """The admin API could not be reached or answered with an error."""


class AdminClient:
    def __init__(self, socket: Path, *, timeout_s: float = 2.0) -> None:
        self.socket = socket
        # trust_env=False: proxy variables must never redirect a local admin socket.
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket)),
            base_url="http://envoy-admin",
            timeout=timeout_s,
            trust_env=False,
        )

    async def get(self, path: str, params: dict[str, str] | None = None) -> str:
        try:
            response = await self._client.get(path, params=params)
        except httpx.HTTPError as exc:
            raise AdminError(f"envoy admin {path} unreachable at {self.socket}: {exc!r}") from exc
        if response.status_code != 200:
            raise AdminError(f"envoy admin {path} answered {response.status_code}: {response.text[:200]}")
        return response.text

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        text = await self.get(path, params)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise AdminError(f"envoy admin {path} returned invalid JSON") from exc

    async def ready(self) -> bool:
        try:
            return (await self.get("/ready")).strip() == "LIVE"
        except AdminError:
            return False

    async def stats(self, filter_re: str) -> dict[str, str]:
        """Counters, gauges and text stats matching an RE2 filter, as `name -> raw value`."""
        text = await self.get("/stats", {"filter": filter_re})
        out: dict[str, str] = {}
        for line in text.splitlines():
            name, sep, value = line.partition(": ")
            if sep:
                out[name] = value.strip()
        return out

    async def host_active_requests(self) -> dict[str, int]:
        """In-flight requests per endpoint, keyed "cluster/host:port" (from `/clusters`)."""
        text = await self.get("/clusters")
        out: dict[str, int] = {}
        for line in text.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[2] == "rq_active":
                out[f"{parts[0]}/{parts[1]}"] = int(parts[3])
        return out

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def stat_int(stats: dict[str, str], name: str) -> int:
    try:
        return int(stats.get(name, "0"))
    except ValueError:
        return 0


def stat_text(stats: dict[str, str], name: str) -> str | None:
    value = stats.get(name)
    return None if value is None else value.strip('"')
