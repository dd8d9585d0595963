"""The HTTP API under /api/v1. Reading is open on loopback; every action is a POST with the bearer token."""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from rheostat import __version__
from rheostat.gitops import conditions as cond
from rheostat.gitops.build import BuildError
from rheostat.gitops.receivers import hook_path, verify
from rheostat.gitops.reconciler import KUSTOMIZATION, SOURCE, body_of
from rheostat.gitops.sources import SOURCE_KINDS, FetchError
from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary
from rheostat.model.gitops import Receiver
from rheostat.model.load import Manifest, ManifestError, parse_object
from rheostat.plugins.platforms.base import Group
from rheostat.reactor.cluster_gitops import read_only
from rheostat.reactor.controller import ROOT, Controller
from rheostat.rollout.engine import CANARY, target_of
from rheostat.server.dashboard import releases, web_routes
from rheostat.server.events_stream import event_json
from rheostat.server.flags_api import flag_routes
from rheostat.server.limits import BodyLimit
from rheostat.server.listing import CanaryListing
from rheostat.server.loadtester import LoadTester, loadtester_app
from rheostat.server.ofrep import OfrepApp, ofrep_app
from rheostat.server.own_hooks import LOADTESTER
from rheostat.server.params import INT64_MAX, MAX_ROWS, query_int
from rheostat.store.sqlite import HistoryRecord
from rheostat.util.errors import describe_error

RUN = ("Progressing", "WaitingPromotion")
HELM_KINDS = {"helmreleases": "HelmRelease", "helmrepositories": "HelmRepository", "helmcharts": "HelmChart"}
# The load tester's read-only answers, which webhooks call (open on loopback); the rest of /loadtester/ changes
# a switch or runs a command, so it needs the token like every other action.
LOADTESTER_CHECKS = frozenset(
    f"{LOADTESTER}/{p}" for p in ("healthz", "gate/check", "gate/approve", "gate/halt", "rollback/check")
)
# Where each action means something; anywhere else it is refused, so no request lingers into the next run.
APPLIES = {
    "promote": RUN,
    "abort": ("Waiting", *RUN),
    "approve": ("Waiting", *RUN),
    "halt": RUN,
    "unhalt": RUN,
}
ACTIONS = {
    "promote": {"promote": True},
    "abort": {"rollback": True},
    "approve": {"approve": True},
    "halt": {"halt": True},
    "unhalt": {"halt": False},
    "pause": {"paused": True},
    "resume": {"paused": False},
}


def history_between(ctl: Controller, key: str, since: int, until: int, limit: int) -> list[HistoryRecord]:
    """Rows with since <= ts <= until, at most `limit` of the newest of them. Rows are read newest first,
    in growing batches, until one older than `since` is reached."""
    batch = limit if since == 0 else 500
    while True:
        rows = ctl.store.history(key, limit=batch)
        if since == 0 or len(rows) < batch or rows[0].ts < since or batch >= MAX_ROWS * 10:
            break
        batch *= 4
    return [r for r in rows if since <= r.ts <= until][-limit:] if limit else []


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenAuth:
    """Actions need the token; when not bound to loopback, so does everything.

    Plain ASGI: Starlette's BaseHTTPMiddleware (a task group and memory streams per request) cost about
    300 µs a request here. Where OFREP is open, its evaluation POSTs go straight to its handlers
    (`OfrepApp.serve_evaluation`), before the router."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        loopback: bool,
        ofrep_token: bool = False,
        ofrep: OfrepApp | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.loopback = loopback
        self.ofrep_open = loopback or ofrep_token  # elsewhere OFREP is open only behind its own token
        self.ofrep = ofrep if self.ofrep_open else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.ofrep is not None and await self.ofrep.serve_evaluation(scope, receive, send):
            return
        path: str = scope["path"]
        open_read = self.loopback and scope["method"] in ("GET", "HEAD")
        # Receivers carry their own signature; OFREP checks its own token (Settings.flags_token), as the
        # protocol says; the load tester's read-only checks stay open to webhooks, as Flagger's contract.
        open_path = (
            path == "/healthz"
            or path.startswith("/hook/")
            or (self.ofrep_open and path.startswith("/ofrep/"))
            or (self.loopback and path in LOADTESTER_CHECKS)
        )
        if open_read or open_path:
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        if not header.startswith("Bearer "):
            refusal = JSONResponse(
                {"error": "this needs the API token: Authorization: Bearer <token>"},
                401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif not hmac.compare_digest(header[7:].strip().encode(), self.token.encode()):
            refusal = JSONResponse({"error": "the API token is wrong"}, 403)
        else:
            await self.app(scope, receive, send)
            return
        await refusal(scope, receive, send)


def create_app(ctl: Controller, token: str) -> Starlette:
    loadtester = loadtester_app(allow_exec=ctl.settings.loadtester_exec)
    ofrep = ofrep_app(ctl.flags, token=ctl.settings.flags_token)
    tester: LoadTester = loadtester.state.loadtester

    def stop_load_tests(c: Canary) -> None:
        tester.stop(f"{c.metadata.name}.{c.metadata.namespace}")

    ctl.engine.on_run_end = stop_load_tests

    def find(request: Request) -> Canary:
        key = ObjectKey(f"{request.path_params['namespace']}/{request.path_params['name']}")
        canary = ctl.engine.canary(key)
        if canary is None:
            raise LookupError(f"canary {key} not found")
        return canary

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def version(_: Request) -> Response:
        return JSONResponse({"version": __version__})

    listing = CanaryListing(ctl)  # rendered items, kept while their stored rows are unchanged
    recorder = releases.ReleaseRecorder(ctl)  # what each run rolls out, recorded as it starts
    run_cache = releases.RunCache(ctl)

    async def canaries(_: Request) -> Response:
        return Response(listing.all(), media_type="application/json")

    async def canary(request: Request) -> Response:
        return Response(listing.one(find(request)), media_type="application/json")

    async def history(request: Request) -> Response:
        """The newest `limit` rows; with `since` (and `until`), the rows of that span (one run), however old."""
        c = find(request)
        limit = query_int(request, "limit", 1000, maximum=MAX_ROWS)
        since = query_int(request, "since", 0)
        until = query_int(request, "until", INT64_MAX)
        rows = history_between(ctl, c.metadata.key, since, until, limit)
        return JSONResponse({"items": [{"ts": r.ts, **r.body} for r in rows]})

    async def runs(request: Request) -> Response:
        """The release history (newest first), what is live now and, with `events=<run id>` (0: the newest
        run), that run's events."""
        c = find(request)
        key = c.metadata.key
        limit = query_int(request, "limit", 50, maximum=1000)
        found, events = run_cache.get(key)
        newest = ctl.store.history(key, limit=1)
        body: dict[str, Any] = {
            "items": found[:limit],
            "live": releases.live(
                ctl, c, newest[-1].body if newest else {}, newest[-1].ts if newest else None
            ),
        }
        if "events" in request.query_params:
            run = query_int(request, "events", 0)
            body["events"] = [event_json(e) for e in releases.run_events(found, events, run)]
        return JSONResponse(body)

    async def events(request: Request) -> Response:
        q = request.query_params
        rows = ctl.store.events(
            kind=q.get("kind"),
            key=q.get("key"),
            after=query_int(request, "after", 0),
            limit=query_int(request, "limit", 200, maximum=MAX_ROWS),
        )
        return JSONResponse({"items": [event_json(e) for e in rows]})

    async def action(request: Request) -> Response:
        name = request.path_params["action"]
        if name not in ACTIONS:
            return JSONResponse({"error": f"unknown action {name!r}; known: {', '.join(ACTIONS)}"}, 404)
        c = find(request)
        if (standby := ctl.standby_reason()) is not None:  # only the leader acts (reactor/leader.py)
            return JSONResponse({"error": standby}, 503)
        phase = ctl.engine.status(c.metadata.key).phase.value
        if name in APPLIES and phase not in APPLIES[name]:
            return JSONResponse(
                {
                    "error": f"{name} applies to a canary that is {' or '.join(APPLIES[name])}; "
                    f"{c.metadata.key} is {phase}"
                },
                409,
            )
        manual = ctl.engine.request(c.metadata.key, **ACTIONS[name])
        ctl.scheduler.kick(c.metadata.key)
        return JSONResponse({"canary": c.metadata.key, "action": name, "manual": manual.__dict__}, 202)

    async def leader(_: Request) -> Response:
        """Which replica leads (leader election against a cluster); 404 when there is no election."""
        if ctl.leadership is None:
            return JSONResponse({"error": "no leader election: this controller runs alone"}, 404)
        return JSONResponse(ctl.leadership.view())

    async def workloads(_: Request) -> Response:
        items = []
        for stored in ctl.store.list_objects("Workload"):
            key = ObjectKey(stored.key)
            try:
                status = dataclasses.asdict(ctl.platform.status(key))
            except Exception as exc:  # a workload the platform does not run (yet) still lists
                status = {"error": str(exc)}
            managed_by = [c.metadata.key for c in ctl.canaries() if target_of(c) == key]
            items.append({**stored.body, "status": status, "canaries": managed_by})
        return JSONResponse({"items": items})

    async def logs(request: Request) -> Response:
        key = ObjectKey(f"{request.path_params['namespace']}/{request.path_params['name']}")
        if ctl.store.get_object("Workload", key) is None:
            raise LookupError(f"workload {key} not found")
        group = request.query_params.get("group")
        if group is not None and group not in {g.value for g in Group}:
            raise ValueError(
                f"group: expected one of {', '.join(g.value for g in Group)}, got {group[:40]!r}"
            )
        tail = query_int(request, "tail", 200, maximum=MAX_ROWS)
        text = ctl.platform.logs(key, Group(group) if group else None, tail=tail)
        return PlainTextResponse(text)

    def gitops_items(kind: str) -> list[dict[str, Any]]:
        return [
            {**stored.body, "status": ctl.store.get_state(kind, stored.key) or {}}
            for stored in ctl.store.list_objects(kind)
        ]

    async def source(_: Request) -> Response:
        """The repository `rheostat run --repo` follows: what is applied, and why the last revision was not."""
        if ctl.settings.repo is None:
            return JSONResponse(
                {"error": "no repository: this controller rolls out a cluster's Canaries"}, 404
            )
        root = ctl.store.get_state(KUSTOMIZATION, ROOT) or {}
        src = ctl.store.get_state(SOURCE, ROOT) or {}
        ready = cond.condition(root, "Ready") or {}
        failed = ready.get("status") == "False"
        return JSONResponse(
            {
                "repo": str(ctl.settings.repo),
                "revision": (src.get("artifact") or {}).get("revision", ""),
                "appliedRevision": root.get("lastAppliedRevision", ""),
                "rejectedRevision": root.get("lastAttemptedRevision", "") if failed else "",
                "error": ready.get("message", "") if failed else "",
                "conditions": root.get("conditions", []),
            }
        )

    async def sources(_: Request) -> Response:
        return JSONResponse({"items": [i for kind in SOURCE_KINDS for i in gitops_items(kind)]})

    async def kustomizations(_: Request) -> Response:
        return JSONResponse({"items": gitops_items(KUSTOMIZATION)})

    async def helm_items(request: Request) -> Response:  # helmreleases, helmrepositories, helmcharts
        return JSONResponse({"items": gitops_items(HELM_KINDS[request.url.path.rsplit("/", 1)[-1]])})

    async def reconcile_one(request: Request) -> Response:
        kind = {"sources": SOURCE, "kustomizations": KUSTOMIZATION, **HELM_KINDS}[request.path_params["kind"]]
        key = f"{request.path_params['namespace']}/{request.path_params['name']}"
        kind = ctl.gitops.source_kind(key) if kind == SOURCE else kind
        if ctl.store.get_object(kind, key) is None:
            raise LookupError(f"{kind} {key} not found")
        if (why := read_only(ctl.store, kind, key)) is not None:
            return JSONResponse({"error": why}, 409)
        ctl.gitops.request(kind, key)
        if kind == KUSTOMIZATION and request.query_params.get("withSource") == "true":
            ctl.gitops.request(*ctl.gitops.source_ident(key))
        return JSONResponse({"reconcile": f"{kind} {key}"}, 202)

    async def suspend(request: Request) -> Response:
        kind = {"sources": SOURCE, "kustomizations": KUSTOMIZATION, **HELM_KINDS}[request.path_params["kind"]]
        key = f"{request.path_params['namespace']}/{request.path_params['name']}"
        if request.path_params["action"] not in ("suspend", "resume"):
            raise LookupError(f"unknown action {request.path_params['action']!r}; known: suspend, resume")
        kind = ctl.gitops.source_kind(key) if kind == SOURCE else kind
        if ctl.store.get_object(kind, key) is None:
            raise LookupError(f"{kind} {key} not found")
        if (why := read_only(ctl.store, kind, key)) is not None:
            return JSONResponse({"error": why}, 409)
        ctl.gitops.suspend(kind, key, request.path_params["action"] == "suspend")
        return JSONResponse({request.path_params["action"]: f"{kind} {key}"}, 202)

    async def diff(request: Request) -> Response:
        key = f"{request.path_params['namespace']}/{request.path_params['name']}"
        try:
            revision, plan = await ctl.gitops.diff(key)
        except (BuildError, ManifestError, FetchError) as exc:
            return JSONResponse({"error": describe_error(exc)}, 422)

        def changed(obj: Manifest) -> dict[str, Any]:
            stored = ctl.store.get_object(obj.kind, obj.metadata.key)
            return {
                "object": f"{obj.kind} {obj.metadata.key}",
                "file": plan.files.get(f"{obj.kind} {obj.metadata.key}"),
                "live": stored.body if stored else None,
                "git": body_of(obj),
            }

        return JSONResponse(
            {
                "kustomization": key,
                "revision": revision,
                "created": [changed(o) for o in plan.created],
                "updated": [changed(o) for o in plan.updated],
                "drifted": [changed(o) for o in plan.drifted],
                "pruned": [f"{k} {n}" for k, n in plan.pruned],
            }
        )

    async def trace(request: Request) -> Response:
        p = request.path_params
        return JSONResponse(ctl.gitops.trace(p["kind"], f"{p['namespace']}/{p['name']}"))

    async def violations(_: Request) -> Response:
        return JSONResponse({"items": ctl.gate.findings()})

    async def hook(request: Request) -> Response:
        # The receiver is found from the path alone; only then is the body read (capped, server/limits.py).
        for stored in ctl.store.list_objects("Receiver"):
            receiver = parse_object(stored.body, stored.source)
            assert isinstance(receiver, Receiver)
            secret = ctl.secrets.get(receiver.metadata.namespace, receiver.spec.secretRef.name) or {}
            token = secret.get("token")
            if not token or hook_path(receiver, token) != request.url.path:
                continue
            body = await request.body()
            verdict = verify(receiver, token, dict(request.headers), body)
            if verdict.ok and verdict.status == 200:
                for r in receiver.spec.resources:
                    ctl.gitops.request(r.kind, f"{r.namespace or receiver.metadata.namespace}/{r.name}")
            with ctl.store.transaction():
                ctl.store.add_event(
                    "Receiver",
                    stored.key,
                    "Triggered" if verdict.status == 200 else ("Accepted" if verdict.ok else "Refused"),
                    verdict.message,
                    warning=not verdict.ok,
                )
            return JSONResponse({"message": verdict.message}, verdict.status)
        return JSONResponse({"error": "no receiver at this path"}, 404)

    async def reconcile(_: Request) -> Response:
        ctl.request_reconcile()
        return JSONResponse({"reconcile": "requested"}, 202)

    async def not_found(_: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc).strip("'\"")}, 404)

    async def bad_request(_: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, 400)

    async def http_error(request: Request, exc: Exception) -> Response:
        """Starlette's own refusals (no such route, wrong method, no such asset) as JSON errors too."""
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"no such route: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = exc.detail
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with loadtester.router.lifespan_context(loadtester), ofrep.router.lifespan_context(ofrep):
            try:
                yield
            finally:
                recorder.unwatch()

    prefix = "/api/v1"
    ns_name = "{namespace}/{name}"
    routes = [
        Route("/healthz", healthz),
        Route(f"{prefix}/version", version),
        Route(f"{prefix}/canaries", canaries),
        Route(f"{prefix}/canaries/{ns_name}", canary),
        Route(f"{prefix}/canaries/{ns_name}/history", history),
        Route(f"{prefix}/canaries/{ns_name}/runs", runs),
        Route(f"{prefix}/canaries/{ns_name}/{{action}}", action, methods=["POST"]),
        Route(f"{prefix}/leader", leader),
        Route(f"{prefix}/workloads", workloads),
        Route(f"{prefix}/workloads/{ns_name}/logs", logs),
        Route(f"{prefix}/events", events),
        Route(f"{prefix}/source", source),
        Route(f"{prefix}/sources", sources),
        Route(f"{prefix}/violations", violations),
        Route(f"{prefix}/kustomizations", kustomizations),
        Route(f"{prefix}/kustomizations/{ns_name}/diff", diff),
        *(Route(f"{prefix}/{plural}", helm_items) for plural in HELM_KINDS),
        Route(f"{prefix}/trace/{{kind:str}}/{ns_name}", trace),
        Route(f"{prefix}/{{kind:str}}/{ns_name}/reconcile", reconcile_one, methods=["POST"]),
        Route(f"{prefix}/{{kind:str}}/{ns_name}/{{action:str}}", suspend, methods=["POST"]),
        Route("/hook/{digest}", hook, methods=["POST"]),
        Route(f"{prefix}/reconcile", reconcile, methods=["POST"]),
        *flag_routes(ctl, prefix),
        Mount(LOADTESTER, app=loadtester),
        *ofrep.routes,  # OFREP's own paths (/ofrep/v1/...), served beside the API
    ]
    web = web_routes(ctl, routes)  # the dashboard, /api/v1/openapi.json, /api/v1/stream and /metrics
    routes.extend(web.routes)
    loopback = is_loopback(ctl.settings.listen_host)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(BodyLimit),
            Middleware(
                TokenAuth,
                token=token,
                loopback=loopback,
                ofrep_token=ctl.settings.flags_token is not None,
                ofrep=ofrep,
            ),
        ],
        exception_handlers={HTTPException: http_error, LookupError: not_found, ValueError: bad_request},
        lifespan=lifespan,
    )
    app.state.ofrep = (
        ofrep.state.ofrep
    )  # Server.stop ends open event streams first, or uvicorn waits for them
    app.state.streams = web.streams
    return app


__all__ = ["CANARY", "create_app"]
