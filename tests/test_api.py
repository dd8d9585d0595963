"""The HTTP API on a running server: reads open on loopback, actions need the token and a phase they fit."""

from __future__ import annotations

from pathlib import Path

import httpx

from rheostat.rollout.types import Phase
from tests.rig import KEY, Rig, canary, workload

ANALYSIS = "interval: 1s\nthreshold: 2\nstepWeight: 20\nmaxWeight: 60"


async def test_routes_tokens_and_phase_rules(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.commit(workload("6.0.0"), canary(rig.port, ANALYSIS), message="first")
    server = await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        token = (rig.data / "token").read_text().strip()
        assert (rig.data / "token").stat().st_mode & 0o777 == 0o600
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            assert (await api.get("/healthz")).text == "ok"
            items = (await api.get("/api/v1/canaries")).json()["items"]
            assert [i["metadata"]["name"] for i in items] == ["web"]
            st = items[0]["status"]
            assert (st["phase"], st["canaryWeight"], st["failedChecks"], st["iterations"]) == (
                "Initialized",
                0,
                0,
                0,
            )
            assert st["conditions"][0] == {
                "type": "Promoted",
                "status": "True",
                "reason": "Initialized",
                "message": st["message"],
            }
            assert (await api.get(f"/api/v1/canaries/{KEY}")).json()["strategy"] == "canary"
            assert (await api.get(f"/api/v1/canaries/{KEY}/history")).json()["items"][-1][
                "phase"
            ] == "Initialized"
            assert (await api.get("/api/v1/canaries/e2e/nope")).status_code == 404
            assert (await api.get("/api/v1/workloads")).json()["items"][0]["canaries"] == [KEY]
            assert "version 6.0.0 listening" in (await api.get(f"/api/v1/workloads/{KEY}/logs")).text
            events = (await api.get("/api/v1/events", params={"kind": "Canary"})).json()["items"]
            assert any(e["reason"] == "Initialized" for e in events)
            assert (await api.get("/api/v1/source")).json()["appliedRevision"]
            assert token not in str((await api.get("/api/v1/canaries")).text)

            abort = f"/api/v1/canaries/{KEY}/abort"
            assert (await api.post(abort)).status_code == 401
            assert (await api.post(abort, headers={"Authorization": "Bearer wrong"})).status_code == 403
            auth = {"Authorization": f"Bearer {token}"}
            refused = await api.post(abort, headers=auth)
            assert refused.status_code == 409 and "Initialized" in refused.json()["error"]
            assert server.controller.store.get_manual(KEY) == {}
            assert (await api.post(f"/api/v1/canaries/{KEY}/explode", headers=auth)).status_code == 404
            assert (await api.post("/api/v1/reconcile")).status_code == 401
            assert (await api.post("/api/v1/reconcile", headers=auth)).status_code == 202

            rig.commit(workload("6.0.1"), canary(rig.port, ANALYSIS), message="6.0.1")
            await rig.wait_for("weight", lambda: rig.status().canary_weight > 0)
            assert (await api.post(abort, headers=auth)).status_code == 202
            await rig.wait(Phase.FAILED)
            assert await rig.versions(5) == {"6.0.0": 5}
            assert (await api.post(f"/api/v1/canaries/{KEY}/pause", headers=auth)).status_code == 202
            assert (await api.get(f"/api/v1/canaries/{KEY}")).json()["status"]["manual"] == {"paused": True}
    finally:
        await rig.stop()


async def test_a_taken_api_port_is_one_clear_error(tmp_path: Path) -> None:
    import socket

    import pytest

    from rheostat.reactor.settings import Settings
    from rheostat.server.main import Server

    rig = Rig(tmp_path)
    rig.commit(workload("6.0.0"), message="first")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", rig.api_port))
        taken.listen()
        server = Server(Settings(repo=rig.repo, data_dir=rig.data, listen_port=rig.api_port))
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{rig.api_port}"):
            await server.start()
