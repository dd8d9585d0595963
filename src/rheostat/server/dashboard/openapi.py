"""The OpenAPI 3.1 document of the API, written by hand and matched against the routes the app serves.

`openapi_document(routes)` walks the app's routes (into mounted apps such as the load tester) and takes each
operation's description from `OPERATIONS`. An operation the app serves but `OPERATIONS` does not describe is
still listed, marked `x-undocumented`, so a missing description shows up in the document and fails
`tests/test_api_routes.py`; a description of a route the app does not serve is left out.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from rheostat import __version__
from rheostat.server.params import INT64_MAX, MAX_ROWS

Op = dict[str, Any]
ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {}}}}


def _text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def _param(name: str, where: str = "path", description: str = "", **schema: Any) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


def _list(description: str) -> dict[str, Any]:
    return {"200": _json(description, {"$ref": "#/components/schemas/List"})}


NS_NAME = [_param("namespace"), _param("name")]
FLAG_KEY = _param("key", description="the flag key")
NOT_FOUND = {"404": _json("no such object", ERROR)}
ACTION_ERRORS = {
    "401": _json("no bearer token", ERROR),
    "403": _json("wrong bearer token", ERROR),
    "404": _json("unknown object or action", ERROR),
}
TEXT_TOKEN_ERRORS = {"401": _json("no bearer token", ERROR), "403": _text("wrong bearer token, or refused")}
LOADTESTER_BODY = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": "string"},
                    "phase": {"type": "string"},
                    "checksum": {"type": "string"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            }
        }
    }
}
OFREP_BODY = {
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"context": {"type": "object"}}},
        }
    }
}
GITOPS_KIND = _param(
    "kind",
    description="`sources`, `kustomizations`, `helmreleases`, `helmrepositories` or `helmcharts`",
    enum=["sources", "kustomizations", "helmreleases", "helmrepositories", "helmcharts"],
)

OPERATIONS: dict[tuple[str, str], Op] = {
    ("/healthz", "get"): {
        "summary": "Liveness: `ok` while the server answers",
        "responses": {"200": _text("ok")},
    },
    ("/metrics", "get"): {
        "summary": "The controller's Prometheus metrics (text format 0.0.4), after Flagger's",
        "responses": {"200": _text("Prometheus exposition")},
    },
    ("/api/v1/version", "get"): {"summary": "Rheostat's version", "responses": {"200": _json("version")}},
    ("/api/v1/openapi.json", "get"): {"summary": "This document", "responses": {"200": _json("OpenAPI 3.1")}},
    ("/api/v1/stream", "get"): {
        "summary": "Server-sent events of changes",
        "description": "`event: event` per new event row (`id:` is its id; resume with `Last-Event-ID` or "
        "`?after=`), `event: canaries` with every canary's phase and weights when any of them changed.",
        "parameters": [
            _param(
                "after", "query", "resume after this event id", type="integer", minimum=0, maximum=INT64_MAX
            )
        ],
        "responses": {
            "200": {
                "description": "stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            },
            "400": _json("`after` is not an event id", ERROR),
        },
    },
    ("/api/v1/applications", "get"): {
        "summary": "Every Workload with its canaries, health, source commit and newest event (the overview)",
        "responses": _list("applications"),
    },
    ("/api/v1/canaries", "get"): {"summary": "Every Canary with its status", "responses": _list("canaries")},
    ("/api/v1/canaries/{namespace}/{name}", "get"): {
        "summary": "One Canary with its status",
        "parameters": NS_NAME,
        "responses": {"200": _json("the canary"), **NOT_FOUND},
    },
    ("/api/v1/canaries/{namespace}/{name}/history", "get"): {
        "summary": "Per tick: phase, weights, failed checks, iterations and each metric value and verdict",
        "parameters": [
            *NS_NAME,
            _param(
                "limit", "query", "newest rows", type="integer", default=1000, minimum=0, maximum=MAX_ROWS
            ),
            _param(
                "since", "query", "only rows at or after this time (Unix seconds): one run", type="integer"
            ),
            _param("until", "query", "only rows at or before this time (Unix seconds)", type="integer"),
        ],
        "responses": {**_list("history rows, oldest first"), **NOT_FOUND},
    },
    ("/api/v1/canaries/{namespace}/{name}/runs", "get"): {
        "summary": "The release history (each run's revision, start, end, outcome and why, newest first) "
        "and what is live now (split, primary and canary revisions, next step, gates waited on)",
        "parameters": [
            *NS_NAME,
            _param("limit", "query", "newest runs", type="integer", default=50, minimum=0, maximum=1000),
            _param(
                "events", "query", "also the events of this run (its id; 0: the newest run)", type="integer"
            ),
        ],
        "responses": {"200": _json("`items` (runs), `live` and, when asked, `events`"), **NOT_FOUND},
    },
    ("/api/v1/canaries/{namespace}/{name}/{action}", "post"): {
        "summary": "A manual action on a canary (needs the token)",
        "parameters": [
            *NS_NAME,
            _param(
                "action",
                enum=["promote", "abort", "approve", "halt", "unhalt", "pause", "resume"],
                description="`abort` rolls back; `approve` opens the confirm-* gates of this run",
            ),
        ],
        "security": [{"bearer": []}],
        "responses": {
            "202": _json("requested; the canary is ticked at once"),
            **ACTION_ERRORS,
            "409": _json("the action does not apply in the canary's phase", ERROR),
            "503": _json(
                "this replica is the standby (leader election): the message names the leader", ERROR
            ),
        },
    },
    ("/api/v1/leader", "get"): {
        "summary": "Leader election: the Lease, this replica's identity, whether it leads, who holds the Lease",
        "responses": {
            "200": _json(
                "this replica and the Lease",
                {
                    "type": "object",
                    "properties": {
                        "lease": {"type": "string"},
                        "identity": {"type": "string"},
                        "leading": {"type": "boolean"},
                        "holder": {"type": "string"},
                        "leaseTransitions": {"type": "integer"},
                    },
                },
            ),
            "404": _json("no leader election: this controller runs alone", ERROR),
        },
    },
    ("/api/v1/workloads", "get"): {
        "summary": "Workloads with their replica groups",
        "responses": _list("workloads"),
    },
    ("/api/v1/workloads/{namespace}/{name}/logs", "get"): {
        "summary": "Output of a workload's processes",
        "parameters": [
            *NS_NAME,
            _param("group", "query", "one group only", enum=["primary", "canary"]),
            _param("tail", "query", "last lines", type="integer", default=200, minimum=0, maximum=MAX_ROWS),
        ],
        "responses": {"200": _text("log lines"), **NOT_FOUND},
    },
    ("/api/v1/events", "get"): {
        "summary": "Events, oldest first",
        "parameters": [
            _param("kind", "query", "only this kind (Canary, Workload, Kustomization, ...)"),
            _param("key", "query", "only this object (namespace/name)"),
            _param(
                "after",
                "query",
                "only events after this id",
                type="integer",
                default=0,
                minimum=0,
                maximum=INT64_MAX,
            ),
            _param("limit", "query", "newest N", type="integer", default=200, minimum=0, maximum=MAX_ROWS),
        ],
        "responses": _list("events"),
    },
    ("/api/v1/source", "get"): {
        "summary": "The repository `rheostat run --repo` follows: applied and rejected revisions",
        "responses": {
            "200": _json("source"),
            "404": _json("no repository: the controller runs on a cluster", ERROR),
        },
    },
    ("/api/v1/sources", "get"): {
        "summary": "GitRepositories with their status",
        "responses": _list("sources"),
    },
    ("/api/v1/kustomizations", "get"): {
        "summary": "Kustomizations with their status and conditions",
        "responses": _list("kustomizations"),
    },
    ("/api/v1/helmreleases", "get"): {
        "summary": "HelmReleases with their status: conditions and the release history (docs/helm.md)",
        "responses": _list("helmreleases"),
    },
    ("/api/v1/helmrepositories", "get"): {
        "summary": "HelmRepositories with their status: the index's digest",
        "responses": _list("helmrepositories"),
    },
    ("/api/v1/helmcharts", "get"): {
        "summary": "HelmCharts with their status: the version pulled",
        "responses": _list("helmcharts"),
    },
    ("/api/v1/violations", "get"): {
        "summary": "Policy findings: policy, object, action, commit, file and message",
        "responses": _list("violations"),
    },
    ("/api/v1/flags", "get"): {
        "summary": "Feature flags: Git's definition, the state served, a rollout's split, the kill switch and drift",
        "responses": _list("flags"),
    },
    ("/api/v1/flags/{key}", "get"): {
        "summary": "One feature flag",
        "parameters": [FLAG_KEY],
        "responses": {"200": _json("flag"), **NOT_FOUND},
    },
    ("/api/v1/flags/{key}/evaluate", "get"): {
        "summary": "Evaluate a flag for a context: value, variant and reason (as OFREP would answer)",
        "parameters": [
            FLAG_KEY,
            _param("context", "query", 'evaluation context as JSON, e.g. {"targetingKey": "u1"}'),
        ],
        "responses": {
            "200": _json("resolution"),
            "400": _json("the context is not usable", ERROR),
            **NOT_FOUND,
        },
    },
    ("/api/v1/flags/{key}/disable", "post"): {
        "summary": "Kill switch: serve the flag as DISABLED at once, reported as drift until Git agrees (needs the token)",
        "parameters": [FLAG_KEY],
        "security": [{"bearer": []}],
        "responses": {"202": _json("flag"), **ACTION_ERRORS},
    },
    ("/api/v1/flags/{key}/enable", "post"): {
        "summary": "Lift the kill switch: Git's definition serves again (needs the token)",
        "parameters": [FLAG_KEY],
        "security": [{"bearer": []}],
        "responses": {"202": _json("flag"), "409": _json("the flag is not disabled", ERROR), **ACTION_ERRORS},
    },
    ("/api/v1/kustomizations/{namespace}/{name}/diff", "get"): {
        "summary": "What applying the source's newest revision would change",
        "parameters": NS_NAME,
        "responses": {"200": _json("plan"), **NOT_FOUND, "422": _json("the revision does not build", ERROR)},
    },
    ("/api/v1/trace/{kind}/{namespace}/{name}", "get"): {
        "summary": "Which Kustomization, source, revision and file made an object",
        "parameters": [_param("kind", description="object kind, e.g. Workload"), *NS_NAME],
        "responses": {"200": _json("trace"), **NOT_FOUND},
    },
    ("/api/v1/{kind}/{namespace}/{name}/reconcile", "post"): {
        "summary": "Reconcile a source or Kustomization now (needs the token)",
        "parameters": [
            GITOPS_KIND,
            *NS_NAME,
            _param("withSource", "query", "also fetch the Kustomization's source", enum=["true"]),
        ],
        "security": [{"bearer": []}],
        "responses": {"202": _json("requested"), **ACTION_ERRORS},
    },
    ("/api/v1/{kind}/{namespace}/{name}/{action}", "post"): {
        "summary": "Suspend or resume a source or Kustomization (needs the token)",
        "parameters": [GITOPS_KIND, *NS_NAME, _param("action", enum=["suspend", "resume"])],
        "security": [{"bearer": []}],
        "responses": {"202": _json("done"), **ACTION_ERRORS},
    },
    ("/api/v1/reconcile", "post"): {
        "summary": "Look at the repository now (needs the token)",
        "security": [{"bearer": []}],
        "responses": {"202": _json("requested"), "401": ACTION_ERRORS["401"], "403": ACTION_ERRORS["403"]},
    },
    ("/hook/{digest}", "post"): {
        "summary": "A Receiver's webhook; authenticated by its own signature, not the API token",
        "parameters": [_param("digest")],
        "responses": {"200": _json("accepted"), "404": _json("no receiver at this path", ERROR)},
    },
    ("/loadtester/", "post"): {
        "summary": "Flagger's load tester contract: run `metadata.cmd` (hey built in; needs the token)",
        "requestBody": LOADTESTER_BODY,
        "security": [{"bearer": []}],
        "responses": {
            "200": _text("a blocking task succeeded"),
            "202": _text("task accepted"),
            "400": _text("bad payload"),
            **TEXT_TOKEN_ERRORS,
            "500": _text("a blocking task failed or timed out"),
        },
    },
    ("/loadtester/healthz", "get"): {"summary": "Load tester liveness", "responses": {"200": _text("OK")}},
    ("/ofrep/v1/evaluate/flags/{key}", "post"): {
        "summary": "OFREP: evaluate one flag for a context",
        "parameters": [FLAG_KEY],
        "requestBody": OFREP_BODY,
        "responses": {
            "200": _json("the flag's value, variant and reason"),
            "400": _json("the context is not usable (OFREP errorCode and errorDetails)"),
            "404": _json("FLAG_NOT_FOUND"),
            "413": _json("the body is too large"),
        },
    },
    ("/ofrep/v1/evaluate/flags", "post"): {
        "summary": "OFREP: evaluate every flag for a context (ETag, If-None-Match)",
        "requestBody": OFREP_BODY,
        "responses": {
            "200": _json("every flag"),
            "304": {"description": "unchanged since the ETag sent"},
            "400": _json("the context is not usable (OFREP errorCode and errorDetails)"),
            "413": _json("the body is too large"),
        },
    },
    ("/ofrep/v1/events", "get"): {
        "summary": "OFREP: server-sent events, one `refetchEvaluation` per change of the flags",
        "responses": {
            "200": {"description": "stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}
        },
    },
}
for what in ("gate", "rollback"):
    OPERATIONS[(f"/loadtester/{what}/check", "post")] = {
        "summary": f"Flagger load tester {what} switch: 200 when open for the canary, 403 when closed",
        "requestBody": LOADTESTER_BODY,
        "responses": {"200": _text("open"), "400": _text("bad payload"), "403": _text("closed")},
    }
    OPERATIONS[(f"/loadtester/{what}/check", "get")] = {
        "summary": f"Flagger load tester {what} switch: 200 when open for the canary, 403 when closed",
        "responses": {"200": _text("open"), "403": _text("closed")},
    }
    for verb in ("open", "close"):
        OPERATIONS[(f"/loadtester/{what}/{verb}", "post")] = {
            "summary": f"Flagger load tester {what} switch: {verb} it for a canary (needs the token)",
            "requestBody": LOADTESTER_BODY,
            "security": [{"bearer": []}],
            "responses": {"202": _text("done"), "400": _text("no name or namespace"), **TEXT_TOKEN_ERRORS},
        }
for fixed, code in (("approve", "200"), ("halt", "403")):
    for method in ("get", "post"):
        OPERATIONS[(f"/loadtester/gate/{fixed}", method)] = {
            "summary": f"Flagger load tester gate that always answers {code}",
            "responses": {code: _text(fixed)},
        }
# What any request may get besides its own answers: a bad query parameter or body, a body or head too large.
COMMON = {
    "400": _json("a malformed query parameter, out of its range, or a body that is not JSON", ERROR),
    "413": _json("the request body is over its cap (1 MiB; 4 MiB for /hook/)", ERROR),
    "431": _json("the request line and headers are over 64 KiB", ERROR),
}


def operations(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """(path, method) of every operation the routes serve, path parameters without convertors."""
    out = []
    for route in routes:
        if isinstance(route, Route):
            if not route.include_in_schema:
                continue
            path = re.sub(r"{(\w+)(:\w+)?}", r"{\1}", prefix + route.path)
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                out.append((path, method.lower()))
        elif isinstance(route, Mount) and route.routes:
            out.extend(operations(list(route.routes), prefix + route.path))
    return out


def openapi_document(routes: list[BaseRoute]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for path, method in operations(routes):
        op = OPERATIONS.get((path, method))
        if op is None:
            op = {"summary": "(not described)", "x-undocumented": True}
        op = {**op, "responses": {**COMMON, **op.get("responses", {})}}
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rheostat API",
            "version": __version__,
            "description": "Reading is open on loopback; every POST needs `Authorization: Bearer <token>` "
            "(`<data-dir>/token`). Bound to another address, every request needs it.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": {"type": "string"}},
                    "required": ["error"],
                },
                "List": {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": {"type": "object"}}},
                    "required": ["items"],
                },
            },
        },
    }


__all__ = ["OPERATIONS", "openapi_document", "operations"]
