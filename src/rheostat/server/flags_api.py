"""Flags in the API: what is served (and why: Git, a rollout's split, the kill switch), evaluate, kill."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from rheostat.flags.evaluate import Context, InvalidContext
from rheostat.flags.store import FlagInfo
from rheostat.reactor.controller import Controller
from rheostat.server.limits import parse_json


def flag_routes(ctl: Controller, prefix: str) -> list[Route]:
    def rollout_of(key: str) -> dict[str, Any] | None:
        pinned = ctl.flags.primary(key)
        if pinned is None:
            return None
        flag = pinned.config.flags[key]
        return {
            "canary": ctl.flag_rollouts.canary_of(key) or "",
            "active": ctl.flags.rolling_out(key),  # Git's definition differs from the one most users get
            "share": ctl.flags.split(key),  # percent of targeting keys served Git's definition
            "primaryRevision": pinned.digest[:16],
            "primaryDefaultVariant": flag.defaultVariant or None,
            "primaryState": flag.state,
        }

    def drift_of(info: FlagInfo, kill: dict[str, Any] | None) -> str | None:
        if kill is None:
            return None
        kind, _, obj = info.flag_set.partition(" ")
        where = ctl.gitops.trace(kind, obj).get("file") or info.flag_set
        return (
            f"disabled by the kill switch; Git still says state {info.state}: set `state: DISABLED` on flag "
            f"{info.key} in {where} to keep it off, or lift it with `rheostat flags enable {info.key}`"
        )

    def item(info: FlagInfo, kills: dict[str, dict[str, Any]]) -> dict[str, Any]:
        kill = kills.get(info.key)
        return {
            "key": info.key,
            "flagSet": info.flag_set,
            "type": info.flag_type,
            "state": "DISABLED" if ctl.flags.killed(info.key) else info.state,
            "gitState": info.state,
            "defaultVariant": info.default_variant,
            "variants": list(info.variants),
            "revision": info.revision,
            "definition": info.digest[:16],
            "rollout": rollout_of(info.key),
            "killSwitch": kill,
            "drift": drift_of(info, kill),
        }

    def found(request: Request) -> FlagInfo:
        key = request.path_params["key"]
        info = ctl.flags.get(key)
        if info is None:
            raise LookupError(f"flag {key!r} not found")
        return info

    async def flags(_: Request) -> Response:
        kills = ctl.kill_switch.killed()  # one read for the whole list
        return JSONResponse({"items": [item(i, kills) for i in ctl.flags.flags()]})

    async def flag(request: Request) -> Response:
        return JSONResponse(item(found(request), ctl.kill_switch.killed()))

    async def evaluate(request: Request) -> Response:
        """GET with `?context=<JSON>`: a read, so it needs no token on loopback, like every other read."""
        info = found(request)
        raw = request.query_params.get("context", "{}")
        try:
            context = Context.from_json(parse_json(raw, "context"))
        except InvalidContext as exc:
            raise ValueError(str(exc)) from None
        return JSONResponse(ctl.flags.evaluate(info.key, context).to_json())

    async def kill(request: Request) -> Response:
        info = found(request)
        reason = ""
        body = await request.body()
        if body:
            data = parse_json(body, "body")
            if not isinstance(data, dict) or not isinstance(data.get("reason", ""), str):
                raise ValueError("reason: expected a string")
            reason = data.get("reason", "")
        ctl.kill_switch.disable(info.key, reason)
        return JSONResponse(item(info, ctl.kill_switch.killed()), 202)

    async def enable(request: Request) -> Response:
        info = found(request)
        if not ctl.kill_switch.enable(info.key):
            return JSONResponse({"error": f"flag {info.key!r} is not disabled by the kill switch"}, 409)
        return JSONResponse(item(info, ctl.kill_switch.killed()), 202)

    return [
        Route(f"{prefix}/flags", flags),
        Route(f"{prefix}/flags/{{key:str}}", flag),
        Route(f"{prefix}/flags/{{key:str}}/evaluate", evaluate),
        Route(f"{prefix}/flags/{{key:str}}/disable", kill, methods=["POST"]),
        Route(f"{prefix}/flags/{{key:str}}/enable", enable, methods=["POST"]),
    ]
