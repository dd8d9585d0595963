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
from rheostat.model.canary import Canary, Strategy
from rheostat.reactor.controller import Controller
from rheostat.rollout.backends import WORKLOAD_KINDS
from rheostat.rollout.engine import CANARY, target_of
from rheostat.rollout.types import AT_REST, RUNNING, Phase
from rheostat.server.dashboard.openapi import openapi_document
from rheostat.server.dashboard.releases import RELEASE
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


def health(rows: list[dict[str, Any]], primary: bool | None, canary: bool | None = None) -> str:
    """One word for what users are served: Degraded when a group that gets traffic is not ready, Progressing
    while a run goes on, Healthy when the primary serves ready, else Unknown. A rolled-back release whose
    primary serves well is Healthy: users get the good version (the canary's phase still says Failed)."""
    canary_served = any(r["canaryWeight"] > 0 or r.get("mirror") or r.get("match") for r in rows)
    primary_served = not rows or any(r["primaryWeight"] > 0 for r in rows)
    if (primary_served and primary is False) or (canary_served and canary is False):
        return "Degraded"
    if any(r["phase"] in {p.value for p in RUNNING} for r in rows):
        return "Progressing"
    if any(r["phase"] == Phase.FAILED.value and r["canaryWeight"] == 100 for r in rows):
        return "Degraded"  # a failed promotion that still serves from the canary
    return "Healthy" if primary else "Unknown"


def _canary_row(ctl: Controller, c: Canary) -> dict[str, Any]:
    st = ctl.engine.status(c.metadata.key)
    rows = ctl.store.history(c.metadata.key, limit=1)  # the newest row only: never a canary's whole history
    last = rows[-1].body if rows else {}
    a = c.spec.the_analysis
    running = st.phase in RUNNING
    weight = int(last.get("canaryWeight", st.canary_weight))
    mirror = bool(last.get("mirror", False)) and running
    recorded: dict[str, Any] = (ctl.store.get_state(RELEASE, c.metadata.key) or {}).get("runs", {})
    return {
        "key": c.metadata.key,
        "phase": st.phase.value,
        "canaryWeight": weight,
        "primaryWeight": int(last.get("primaryWeight", 100 - st.canary_weight)),
        "strategy": c.strategy.value,
        "mirror": mirror,
        "mirrorWeight": (a.mirrorWeight or 100) if mirror else 0,
        "match": [m.model_dump(exclude_none=True) for m in a.match or ()]
        if c.strategy is Strategy.AB_TESTING and running and st.iterations > 0
        else [],
        "message": st.message,
        "primaryVersion": _version(recorded, st.last_promoted_spec),
        "canaryVersion": _version(recorded, st.last_applied_spec) if running else "",
    }


def _version(recorded: dict[str, Any], revision: str) -> str:
    """The version of the newest recorded run of `revision`, else the template hash's start."""
    newest = max((int(k) for k, v in recorded.items() if v.get("revision") == revision), default=None)
    found = recorded[str(newest)].get("version", "") if newest is not None else ""
    return str(found or revision[:10])


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
        # The engine rests only with the primary ready; a run's groups are not read here.
        at_rest = row["phase"] in {p.value for p in AT_REST}
        items.append(
            {
                "key": f"{c.spec.targetRef.kind} {target_of(c)}",
                "health": health([row], True if at_rest else None),
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
        canary_ready: bool | None = None
        replicas = ""
        try:
            status = ctl.platform.status(key)
            ready = bool(status.primary.ready)
            canary_ready = bool(status.canary.ready) if status.canary.desired else None
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
                "health": health(mine, ready, canary_ready),
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
