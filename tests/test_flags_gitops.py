"""Flags from Git, served over OFREP by the running server; a bad revision keeps the last good flags."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from rheostat.model.load import ManifestError, load_tree
from tests.rig import Rig


def flags(color: str, **extra: Any) -> str:
    return json.dumps(
        {
            "flags": {
                "new-checkout": {
                    "state": "ENABLED",
                    "variants": {"on": True, "off": False},
                    "defaultVariant": "on",
                },
                "color": {
                    "state": "ENABLED",
                    "variants": {"red": "red", "blue": "blue"},
                    "defaultVariant": color,
                },
                **extra,
            }
        }
    )


async def evaluate(api: httpx.AsyncClient, key: str) -> dict[str, Any]:
    r = await api.post(f"/ofrep/v1/evaluate/flags/{key}", json={"context": {"targetingKey": "user-1"}})
    return {"status": r.status_code, **r.json()}


async def test_flags_from_git_are_served_and_a_bad_revision_keeps_the_last_good(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (rig.repo / "flags.json").write_text(flags("red"))
    (rig.repo / "package.json").write_text('{"name": "not ours"}')  # other JSON files are left alone
    rig.commit(message="flags")
    server = await rig.start()
    try:
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            got = await evaluate(api, "color")
            assert (got["status"], got["value"], got["variant"]) == (200, "red", "red")
            assert (await evaluate(api, "nope"))["status"] == 404
            bulk = await api.post("/ofrep/v1/evaluate/flags", json={"context": {"targetingKey": "u"}})
            etag = bulk.headers["etag"]

            (rig.repo / "flags.json").write_text(flags("blue"))
            rig.commit(message="blue")
            for _ in range(100):
                if (await evaluate(api, "color")).get("value") == "blue":
                    break
                await asyncio.sleep(0.1)
            assert (await evaluate(api, "color"))["value"] == "blue"
            again = await api.post(
                "/ofrep/v1/evaluate/flags",
                json={"context": {"targetingKey": "u"}},
                headers={"If-None-Match": etag},
            )
            assert again.status_code == 200 and again.headers["etag"] != etag

            (rig.repo / "more.json").write_text(
                json.dumps(
                    {"flags": {"color": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "a"}}}
                )
            )
            rig.commit(message="color twice")
            for _ in range(100):
                source = (await api.get("/api/v1/source")).json()
                if source["error"]:
                    break
                await asyncio.sleep(0.1)
            assert "color" in source["error"]
            assert (await evaluate(api, "color"))["value"] == "blue"  # the last good flags keep serving
        stored = server.controller.store.list_objects("FlagSet")
        assert [s.key for s in stored] and all("@" in s.source for s in stored)  # the commit that wrote it
    finally:
        await rig.stop()


def test_flag_files_load_with_their_errors_named(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text(flags("red"))
    assert [o.kind for o in load_tree(tmp_path)] == ["FlagSet"]
    (tmp_path / "bad.yaml").write_text(
        "flags:\n  broken:\n    state: ENABLED\n    variants: {a: 1}\n    defaultVariant: b\n"
    )
    with pytest.raises(ManifestError) as info:
        load_tree(tmp_path)
    assert (
        "bad.yaml" in str(info.value) and "broken" in str(info.value) and "defaultVariant" in str(info.value)
    )
