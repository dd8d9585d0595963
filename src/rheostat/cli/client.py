"""The CLI's only way to the server: its HTTP API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8470"


class ApiError(Exception):
    pass


def find_token(explicit: str | None, data_dir: Path) -> str | None:
    if explicit:
        return explicit
    env = os.environ.get("RHEOSTAT_TOKEN")
    if env:
        return env
    path = data_dir / "token"
    return path.read_text().strip() if path.is_file() else None


class Client:
    def __init__(self, server: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=10.0)

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except httpx.ConnectError as exc:
            raise ApiError(
                f"cannot reach the server at {self.server} (is `rheostat run` running? "
                "set --server or RHEOSTAT_SERVER)"
            ) from exc
        except httpx.HTTPError as exc:
            raise ApiError(f"request to {self.server}{path} failed: {exc}") from exc
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("error", resp.text)
            except ValueError:
                detail = resp.text
            raise ApiError(f"{resp.status_code}: {detail}")
        return resp

    def get(self, path: str, **params: Any) -> Any:
        return self._send("GET", f"/api/v1{path}", params=params).json()

    def text(self, path: str, **params: Any) -> str:
        return self._send("GET", f"/api/v1{path}", params=params).text

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send("POST", f"/api/v1{path}", **({"json": body} if body is not None else {})).json()
