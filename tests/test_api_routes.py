"""Every route of the API on a running server: reads, the OpenAPI document, the change stream, and every action
refused without the token or with a wrong one, with nothing changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from rheostat.rollout.types import Phase
from rheostat.server.dashboard.openapi import operations
from tests.rig import KEY, Rig, canary, workload

ANALYSIS = "interval: 1s\nthreshold: 2\nstepWeight: 20\nmaxWeight: 60"
ROOT = "flux-system/flux-system"


async def read_stream(api: httpx.AsyncClient, want: int, params: dict[str, str] | None = None) -> list[str]:
    """The first `want` named events of one stream connection (then the client goes away)."""
    names: list[str] = []
    async with api.stream("GET", "/api/v1/stream", params=params) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                names.append(line[7:])
            elif line.startswith("data: ") and names[-1] == "canaries":
                assert [c["key"] for c in json.loads(line[6:])["items"]] == [KEY]
            if len(names) >= want:
                break
    return names


async def test_every_route_reads_and_refuses_actions_without_the_token(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.commit(workload("7.0.0"), canary(rig.port, ANALYSIS), message="first")
    server = await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        token = (rig.data / "token").read_text().strip()
        async with httpx.AsyncClient(base_url=rig.api, timeout=10) as api:
            # The OpenAPI document describes every operation the app serves.
            doc = (await api.get("/api/v1/openapi.json")).json()
            assert doc["openapi"].startswith("3.")
            served = operations(list(server.app.routes))
            undocumented = [f"{m.upper()} {p}" for p, m in served if doc["paths"][p][m].get("x-undocumented")]
            assert undocumented == []
            assert {"/api/v1/stream", "/api/v1/canaries/{namespace}/{name}/{action}", "/metrics"} <= set(
                doc["paths"]
            )

            reads: dict[str, Any] = {
                "/healthz": "ok",
                "/api/v1/version": "version",
                "/api/v1/canaries": "items",
                f"/api/v1/canaries/{KEY}": "status",
                f"/api/v1/canaries/{KEY}/history": "items",
                "/api/v1/workloads": "items",
                "/api/v1/events": "items",
                "/api/v1/source": "appliedRevision",
                "/api/v1/sources": "items",
                "/api/v1/kustomizations": "items",
                "/api/v1/helmreleases": "items",
                f"/api/v1/kustomizations/{ROOT}/diff": "revision",
                f"/api/v1/trace/Workload/{KEY}": "kustomization",
                "/api/v1/applications": "items",
            }
            for path, field in reads.items():
                r = await api.get(path)
                assert r.status_code == 200, (path, r.text)
                assert field in (r.text if path == "/healthz" else r.json()), path
                assert token not in r.text
            assert "version 7.0.0 listening" in (await api.get(f"/api/v1/workloads/{KEY}/logs")).text
            apps = (await api.get("/api/v1/applications")).json()["items"]
            assert [(a["key"], a["health"]) for a in apps] == [(KEY, "Healthy")]
            assert apps[0]["canaries"][0]["phase"] == "Initialized"
            assert (
                apps[0]["source"]["revision"] == (await api.get("/api/v1/source")).json()["appliedRevision"]
            )
            assert "rheostat_canary_status" in (await api.get("/metrics")).text
            for listed in ("/api/v1/violations", "/api/v1/flags"):
                r = await api.get(listed)
                assert r.status_code == 200 and "items" in r.json(), listed

            # Unknown objects: 404 with a JSON error; a bad stream position: 400 naming the field.
            for path in (
                "/api/v1/canaries/e2e/nope",
                "/api/v1/canaries/e2e/nope/history",
                "/api/v1/workloads/e2e/nope/logs",
                "/api/v1/trace/Workload/e2e/nope",
            ):
                r = await api.get(path)
                assert r.status_code == 404 and "nope" in r.json()["error"], path
            bad = await api.get("/api/v1/stream", params={"after": "x"})
            assert bad.status_code == 400 and bad.json()["error"].startswith("after:")
            # Unknown routes and assets: 404 with a JSON error naming the path; a wrong method 405 likewise.
            for path in ("/api/v1/nope", "/api/v1/canaries/e2e/web/nope/deeper", "/nowhere", "/ui/nope.js"):
                r = await api.get(path)
                assert r.status_code == 404, path
                assert r.headers["content-type"] == "application/json", path
                assert path in r.json()["error"], path
            r = await api.get("/api/v1/reconcile")
            assert r.status_code == 405 and "GET" in r.json()["error"] and "POST" in r.headers["allow"]
            # Malformed query parameters: 400 naming the field, nothing read.
            malformed = {
                f"/api/v1/canaries/{KEY}/history": {"limit": "ten"},
                "/api/v1/events": {"after": "1.5"},
                f"/api/v1/workloads/{KEY}/logs": {"tail": "all"},
            }
            for path, params in malformed.items():
                r = await api.get(path, params=params)
                (field,) = params
                assert r.status_code == 400, (path, r.text)
                assert r.json()["error"].startswith(f"{field}: expected an integer"), (path, r.text)
            r = await api.get("/api/v1/events", params={"limit": "-1"})
            assert r.status_code == 400 and r.json()["error"] == "limit: expected an integer >= 0, got -1"

            # The dashboard and its assets: same origin only, no secret in them.
            page = await api.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            assert "default-src 'none'" in page.headers["content-security-policy"]
            for asset in ("/ui/app.js", "/ui/chart.js", "/ui/app.css"):
                r = await api.get(asset)
                # No address but the SVG namespace name (an identifier, never fetched).
                assert r.status_code == 200 and not re.search(r"https?://(?!www\.w3\.org/2000/svg\b)", r.text)
                assert token not in r.text
            assert "access-control-allow-origin" not in page.headers
            cors = await api.get("/api/v1/canaries", headers={"Origin": "http://evil.example"})
            assert "access-control-allow-origin" not in cors.headers

            # The stream: hello, then the canaries; it resumes after a given event id.
            assert (await read_stream(api, 2))[:2] == ["hello", "canaries"]
            first = (await api.get("/api/v1/events", params={"limit": "1000"})).json()["items"][0]["id"]
            resumed = await read_stream(api, 3, {"after": str(first)})
            assert resumed[0] == "hello" and "event" in resumed

            # Every action without the token is 401, with a wrong one 403; nothing changes.
            events_before = len((await api.get("/api/v1/events", params={"limit": "5000"})).json()["items"])
            posts = [
                *(f"/api/v1/canaries/{KEY}/{a}" for a in ("promote", "abort", "approve", "halt", "unhalt")),
                *(f"/api/v1/canaries/{KEY}/{a}" for a in ("pause", "resume")),
                f"/api/v1/kustomizations/{ROOT}/reconcile",
                f"/api/v1/sources/{ROOT}/reconcile",
                f"/api/v1/kustomizations/{ROOT}/suspend",
                f"/api/v1/kustomizations/{ROOT}/resume",
                "/api/v1/reconcile",
            ]
            for path in posts:
                no = await api.post(path)
                assert no.status_code == 401 and no.headers["www-authenticate"] == "Bearer", path
                assert "token" in no.json()["error"]
                wrong = await api.post(path, headers={"Authorization": "Bearer not-the-token"})
                assert wrong.status_code == 403, path
                assert token not in no.text + wrong.text
            assert server.controller.store.get_manual(KEY) == {}
            ks = (await api.get("/api/v1/kustomizations")).json()["items"]
            assert not any(k["spec"].get("suspend") for k in ks)
            after = (await api.get("/api/v1/events", params={"limit": "5000"})).json()["items"]
            assert not [e for e in after[events_before:] if e["reason"] == "ManualRequest"]

            # With the token: pause and resume answer 202 and are recorded.
            auth = {"Authorization": f"Bearer {token}"}
            assert (await api.post(f"/api/v1/canaries/{KEY}/pause", headers=auth)).status_code == 202
            assert server.controller.store.get_manual(KEY) == {"paused": True}
            assert (await api.post(f"/api/v1/canaries/{KEY}/resume", headers=auth)).status_code == 202
            r = await api.post(f"/api/v1/canaries/{KEY}/explode", headers=auth)
            assert r.status_code == 404 and "explode" in r.json()["error"]
    finally:
        await rig.stop()


async def to_the_end(lines: AsyncIterator[str]) -> None:
    """Read a response until the server ends it (cleanly, or by closing the connection)."""
    with contextlib.suppress(httpx.RemoteProtocolError):
        async for _ in lines:
            pass


async def test_an_open_stream_ends_when_the_server_stops(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.commit(workload("7.0.0"), message="first")
    server = await rig.start()
    stopped = False
    try:
        hub = server.app.state.streams
        async with (
            httpx.AsyncClient(base_url=rig.api, timeout=30) as api,
            api.stream("GET", "/api/v1/stream") as r,
        ):
            lines = r.aiter_lines()
            assert await anext(lines) == "retry: 1000"
            assert hub.open == 1
            started = time.monotonic()
            stop = asyncio.create_task(rig.stop())
            await asyncio.wait_for(to_the_end(lines), 10)
            await asyncio.wait_for(stop, 15)
            stopped = True
            assert time.monotonic() - started < 10
            assert hub.open == 0
    finally:
        if not stopped:
            await rig.stop()
