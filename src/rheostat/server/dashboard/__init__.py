"""The web dashboard, the OpenAPI document, the change stream and `/metrics`: routes added to the API app.

The dashboard is plain HTML, CSS and JavaScript shipped in `static/` (package data): no CDN, no build step,
nothing fetched from anywhere but this server. Its Content-Security-Policy says so too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.reactor.controller import Controller
from rheostat.rollout.backends import WORKLOAD_KINDS
from rheostat.rollout.engine import CANARY, target_of
from rheostat.rollout.types import RUNNING, Phase
from rheostat.server.dashboard.openapi import openapi_document
from rheostat.server.events_stream import StreamHub
from rheostat.server.metrics import ControllerMetrics

STATIC = Path(__file__).parent / "static"
SECURITY_HEADERS = {
    # Only this origin, no inline script or style, never framed, no referrer sent anywhere.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class Assets(StaticFiles):
    """The dashboard's files, with the same security headers as the page."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, send_with_headers)


def health(phases: list[str], ready: bool | None) -> str:
    """One word for an application: Degraded, Progressing, Healthy or Unknown."""
    if Phase.FAILED.value in phases or ready is False:
        return "Degraded"
    if any(p in {r.value for r in RUNNING} for p in phases):
        return "Progressing"
    return "Healthy" if ready else "Unknown"


def _canary_row(ctl: Controller, c: Canary) -> dict[str, Any]:
    st = ctl.engine.status(c.metadata.key)
    rows = ctl.store.history(c.metadata.key, limit=1)
    last = rows[-1].body if rows else {}
    return {
        "key": c.metadata.key,
        "phase": st.phase.value,
        "canaryWeight": int(last.get("canaryWeight", st.canary_weight)),
        "primaryWeight": int(last.get("primaryWeight", 100 - st.canary_weight)),
        "strategy": c.strategy.value,
    }


def _event_json(ctl: Controller, kinds_keys: list[tuple[str, str]]) -> dict[str, Any] | None:
    events = [e for kind, key in kinds_keys for e in ctl.store.events(kind=kind, key=key, limit=1)]
    newest = max(events, key=lambda e: e.id, default=None)
    if newest is None:
        return None
    return {
        "id": newest.id,
        "ts": newest.ts,
        "reason": newest.reason,
        "message": newest.message,
        "type": "Warning" if newest.warning else "Normal",
    }


def cluster_applications(ctl: Controller, canaries: list[Canary]) -> list[dict[str, Any]]:
    """On a cluster: each Deployment or DaemonSet a Canary rolls out. Its health is its Canaries' (the engine
    only rests in Initialized or Succeeded with the primary ready)."""
    items = []
    for c in canaries:
        if c.spec.targetRef.kind not in WORKLOAD_KINDS:
            continue
        row = _canary_row(ctl, c)
        at_rest_ok = row["phase"] in (Phase.INITIALIZED.value, Phase.SUCCEEDED.value)
        items.append(
            {
                "key": f"{c.spec.targetRef.kind} {target_of(c)}",
                "health": health([row["phase"]], True if at_rest_ok else None),
                "replicas": "",
                "canaries": [row],
                "source": {"owner": "", "revision": ""},
                "lastEvent": _event_json(ctl, [(CANARY, c.metadata.key)]),
            }
        )
    return items


def applications(ctl: Controller) -> list[dict[str, Any]]:
    """Every Workload (or, on a cluster, Deployment) with its canaries, health, the commit it came from and
    its newest event."""
    canaries = ctl.canaries()
    if ctl.in_cluster:
        return cluster_applications(ctl, canaries)
    items = []
    for stored in ctl.store.list_objects("Workload"):
        key = ObjectKey(stored.key)
        ready: bool | None = None
        replicas = ""
        try:
            status = ctl.platform.status(key)
            ready = bool(status.primary.ready)
            replicas = f"{sum(r.ready for r in status.primary.replicas)}/{status.primary.desired}"
            if status.canary.desired:
                replicas += f" + {sum(r.ready for r in status.canary.replicas)}/{status.canary.desired}"
        except Exception:  # not started (yet): still listed, health Unknown
            pass
        mine = [_canary_row(ctl, c) for c in canaries if target_of(c) == key]
        owner, _, revision = stored.source.partition("@")
        items.append(
            {
                "key": key,
                "health": health([c["phase"] for c in mine], ready),
                "replicas": replicas,
                "canaries": mine,
                "source": {"owner": owner.removeprefix("Kustomization "), "revision": revision},
                "lastEvent": _event_json(ctl, [("Workload", key), *((CANARY, c["key"]) for c in mine)]),
            }
        )
    return items


@dataclass
class Web:
    routes: list[BaseRoute]
    streams: StreamHub
    metrics: ControllerMetrics


def web_routes(ctl: Controller, api_routes: list[BaseRoute]) -> Web:
    """The routes to add to the API app. `api_routes` is the app's own list, read when the document is asked
    for, so the OpenAPI document covers whatever the app serves then."""
    streams = StreamHub(ctl)
    metrics = ControllerMetrics(ctl)

    async def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS, media_type="text/html")

    async def openapi(_: Request) -> Response:
        return JSONResponse(openapi_document(api_routes))

    async def apps(_: Request) -> Response:
        return JSONResponse({"items": applications(ctl)})

    routes: list[BaseRoute] = [
        Route("/", index, include_in_schema=False),
        Mount("/ui", app=Assets(directory=STATIC), name="ui"),
        Route("/metrics", metrics.endpoint),
        Route("/api/v1/openapi.json", openapi),
        Route("/api/v1/stream", streams.endpoint),
        Route("/api/v1/applications", apps),
    ]
    return Web(routes, streams, metrics)


__all__ = ["SECURITY_HEADERS", "Web", "applications", "health", "web_routes"]
