"""A flag rolled out for real: Git, `rheostat run`, OFREP, the sample app with the stock OpenFeature client
counting outcomes per variant on /metrics, the analysis reading them, and the CLI and API on top."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.model.base import ObjectKey
from rheostat.plugins.platforms.base import Group
from rheostat.rollout.types import Phase
from tests.rig import NS, Rig, workload

FLAG_CANARY = ObjectKey(f"{NS}/checkout")


def feature_flag(default: str) -> str:
    return f"""apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {{name: checkout, namespace: {NS}}}
spec:
  flagSpec:
    flags:
      new-checkout:
        state: ENABLED
        variants: {{"on": true, "off": false}}
        defaultVariant: "{default}"
"""


FLAG_ROLLOUT = f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: checkout, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: core.openfeature.dev/v1beta1, kind: FeatureFlag, name: checkout}}
  flag: {{key: new-checkout, appRef: {{name: web}}}}
  progressDeadlineSeconds: 30
  analysis:
    interval: 1s
    threshold: 2
    stepWeight: 20
    maxWeight: 60
    metrics:
      - {{name: request-success-rate, thresholdRange: {{min: 95}}, interval: 5s}}
"""


class Shoppers:
    """Users checking out through the app's processes, each with a stable id; answers counted by variant."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.variants: Counter[str] = Counter()
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        assert self.rig.server is not None
        platform = self.rig.server.controller.platform
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                try:
                    ups = await platform.endpoints(ObjectKey(f"{NS}/web"), Group.PRIMARY)
                    if ups:
                        up = random.choice(ups)
                        user = f"user-{random.randrange(400)}"
                        r = await client.get(f"http://{up.host}:{up.port}/checkout", params={"user": user})
                        self.variants[f"{r.json().get('variant')}:{r.status_code}"] += 1
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.01)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="shoppers")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


def app(rig: Rig, error_rate: float) -> str:
    env = {"OFREP_URL": rig.api, "FLAG_ERROR_VARIANT": "on", "FLAG_ERROR_RATE": str(error_rate)}
    return workload("v1", env=env)


async def flag_item(api: httpx.AsyncClient) -> dict[str, Any]:
    items = (await api.get("/api/v1/flags")).json()["items"]
    return next(i for i in items if i["key"] == "new-checkout")


async def variants_for(api: httpx.AsyncClient, users: range) -> Counter[str]:
    """What OFREP answers each user right now (the stock client would see the same)."""
    seen: Counter[str] = Counter()
    for u in users:
        r = await api.post(
            "/ofrep/v1/evaluate/flags/new-checkout", json={"context": {"targetingKey": f"user-{u}"}}
        )
        seen[r.json()["variant"]] += 1
    return seen


async def wait_phase(rig: Rig, *phases: Phase, timeout: float = 60.0) -> None:
    assert rig.server is not None
    engine = rig.server.controller.engine
    for _ in range(int(timeout * 10)):
        if engine.status(FLAG_CANARY).phase in phases:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"flag canary not {phases}: {engine.status(FLAG_CANARY)}; {rig.events()[-8:]}")


async def test_a_flag_rolls_out_to_a_share_of_users_and_rolls_back_on_errors_of_its_new_variant(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.commit(app(rig, 1.0), feature_flag("off"), FLAG_ROLLOUT, message="first")
    shoppers = Shoppers(rig)
    try:
        await rig.start()
        await wait_phase(rig, Phase.INITIALIZED)
        shoppers.start()
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            assert (await variants_for(api, range(50))) == Counter({"off": 50})

            rig.commit(app(rig, 1.0), feature_flag("on"), FLAG_ROLLOUT, message="turn new-checkout on")
            await wait_phase(rig, Phase.PROGRESSING)
            for _ in range(300):  # a share of users gets the new variant, sticky, while it is analysed
                item = await flag_item(api)
                if item["rollout"]["share"] > 0:
                    break
                await asyncio.sleep(0.05)
            assert item["rollout"]["active"] and item["rollout"]["canary"] == FLAG_CANARY
            split = await variants_for(api, range(200))
            assert split["on"] > 0 and split["off"] > 0

            await wait_phase(rig, Phase.FAILED)  # every "on" checkout fails: rolled back
            assert (await variants_for(api, range(200))) == Counter({"off": 200})
            item = await flag_item(api)
            assert item["rollout"]["share"] == 0 and item["defaultVariant"] == "on"  # Git says on: drift
            assert shoppers.variants["on:500"] > 0  # the new variant's errors were real, from the app
            assert rig.server is not None
            events = rig.server.controller.store.events(kind="Canary", key=FLAG_CANARY, limit=100)
            rollback = [e for e in events if e.warning and "request-success-rate" in e.message]
            assert rollback, [e.message for e in events]
    finally:
        await shoppers.stop()
        await rig.stop()


async def test_a_good_flag_is_promoted_and_the_cli_sees_it_and_the_kill_switch_stops_it(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.commit(app(rig, 0.0), feature_flag("off"), FLAG_ROLLOUT, message="first")
    shoppers = Shoppers(rig)
    runner = CliRunner()
    try:
        await rig.start()
        await wait_phase(rig, Phase.INITIALIZED)
        shoppers.start()
        rig.commit(app(rig, 0.0), feature_flag("on"), FLAG_ROLLOUT, message="turn new-checkout on")
        await wait_phase(rig, Phase.PROGRESSING)
        await wait_phase(rig, Phase.SUCCEEDED)
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            assert (await variants_for(api, range(100))) == Counter({"on": 100})
        assert shoppers.variants["on:200"] > 0 and shoppers.variants["on:500"] == 0

        server = ["--server", rig.api]
        listed = await asyncio.to_thread(runner.invoke, cli, ["get", "flags", *server])
        assert listed.exit_code == 0, listed.output
        assert "new-checkout" in listed.output and "ENABLED" in listed.output
        answer = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["flags", "eval", "new-checkout", "--context", '{"targetingKey": "u1"}', *server],
        )
        assert answer.exit_code == 0, answer.output
        assert "value:   true" in answer.output and "variant: on" in answer.output
        assert "TARGETING_MATCH" in answer.output or "STATIC" in answer.output

        token = ["--data-dir", str(rig.data)]
        refused = await asyncio.to_thread(
            runner.invoke, cli, ["flags", "disable", "new-checkout", *server, "--token", "wrong"]
        )
        assert refused.exit_code == 1 and "403" in refused.output
        killed = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["flags", "disable", "new-checkout", "--reason", "incident 42", *server, *token],
        )
        assert killed.exit_code == 0, killed.output
        assert "app.yaml" in killed.output and "state: DISABLED" in killed.output  # the edit Git needs
        off = await asyncio.to_thread(
            runner.invoke, cli, ["flags", "eval", "new-checkout", *server, "-o", "json"]
        )
        assert json.loads(off.output)["reason"] == "DISABLED"
        listed = await asyncio.to_thread(runner.invoke, cli, ["get", "flags", *server, "-o", "json"])
        item = next(i for i in json.loads(listed.output) if i["key"] == "new-checkout")
        assert item["state"] == "DISABLED" and item["gitState"] == "ENABLED" and item["killSwitch"]["reason"]

        bad = await asyncio.to_thread(
            runner.invoke, cli, ["flags", "eval", "new-checkout", "--context", "[1]", *server]
        )
        assert bad.exit_code == 1 and "JSON object" in bad.output
        missing = await asyncio.to_thread(runner.invoke, cli, ["flags", "eval", "nope", *server])
        assert missing.exit_code == 1 and "404" in missing.output

        lifted = await asyncio.to_thread(
            runner.invoke, cli, ["flags", "enable", "new-checkout", *server, *token]
        )
        assert lifted.exit_code == 0, lifted.output
        on = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["flags", "eval", "new-checkout", "--context", '{"targetingKey": "u"}', *server, "-o", "json"],
        )
        assert json.loads(on.output)["value"] is True
    finally:
        await shoppers.stop()
        await rig.stop()


async def test_the_flags_api_refuses_bad_input_and_changes_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.commit(feature_flag("on"), message="first")
    try:
        await rig.start()
        assert rig.server is not None
        flags = rig.server.controller.flags
        await rig.wait_for("the flag served", lambda: flags.get("new-checkout") is not None)
        token = (rig.data / "token").read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            base = "/api/v1/flags/new-checkout"
            for context, field in (
                ("{", "context: not JSON"),
                ("[1]", "context must be a JSON object"),
                ('{"targetingKey": 7}', "context.targetingKey"),
            ):
                r = await api.get(f"{base}/evaluate", params={"context": context})
                assert r.status_code == 400 and field in r.json()["error"], (context, r.text)
            r = await api.get("/api/v1/flags/nope/evaluate")
            assert r.status_code == 404 and "nope" in r.json()["error"]
            assert (await api.post("/api/v1/flags/nope/disable", headers=auth)).status_code == 404
            assert (await api.post(f"{base}/disable")).status_code == 401
            assert (
                await api.post(f"{base}/disable", headers={"Authorization": "Bearer x"})
            ).status_code == 403
            r = await api.post(f"{base}/disable", headers=auth, content=b"{nope")
            assert r.status_code == 400 and r.json()["error"].startswith("body:")
            r = await api.post(f"{base}/disable", headers=auth, json={"reason": 3})
            assert r.status_code == 400 and r.json()["error"].startswith("reason:")
            assert not flags.killed("new-checkout")  # none of those changed anything
            r = await api.post(f"{base}/enable", headers=auth)
            assert r.status_code == 409 and "not disabled" in r.json()["error"]
            answer = (await api.get(f"{base}/evaluate", params={"context": "{}"})).json()
            assert (answer["value"], answer["variant"], answer["reason"]) == (True, "on", "STATIC")
    finally:
        await rig.stop()
