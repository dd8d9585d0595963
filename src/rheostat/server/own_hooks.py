"""The token for the controller's own webhook calls to the load tester it serves.

The load tester's switches and tasks need the API token (`server/api.py` `TokenAuth`). A Canary's webhook
that points at this API's `/loadtester/...` is the controller calling itself, so its webhook caller sends
the token with exactly those calls: `own_hook_headers(server.url, token)` gives the headers for a hook URL.
Any other URL, another port or host included, gets no header, so the token never leaves for another server.
URLs are parsed by httpx, as the webhook caller parses them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import httpx

LOADTESTER = "/loadtester"
_WILDCARD = {"0.0.0.0": {"127.0.0.1", "localhost"}, "::": {"::1", "localhost"}}


def _hosts(listen_host: str) -> set[str]:
    """The host names a hook URL may use to reach an API bound to `listen_host`."""
    host = listen_host.strip("[]").lower()
    names = {host, *_WILDCARD.get(host, set())}
    try:
        if ipaddress.ip_address(host).is_loopback:
            names.add("localhost")
    except ValueError:
        if host == "localhost":
            names |= {"127.0.0.1", "::1"}
    return names


def own_hook_headers(listen_url: str, token: str) -> Callable[[str], dict[str, str]]:
    """`headers(url)`: `Authorization: Bearer <token>` when `url` is this API's load tester, else nothing."""
    own = httpx.URL(listen_url)
    hosts = _hosts(own.host)
    port = own.port or 80

    def headers(url: str) -> dict[str, str]:
        try:
            hook = httpx.URL(url)
        except httpx.InvalidURL:
            return {}
        if hook.scheme != "http" or hook.userinfo or (hook.port or 80) != port:
            return {}
        if hook.host.lower() not in hosts:
            return {}
        if hook.path != LOADTESTER and not hook.path.startswith(LOADTESTER + "/"):
            return {}
        return {"Authorization": f"Bearer {token}"}

    return headers


__all__ = ["own_hook_headers"]
