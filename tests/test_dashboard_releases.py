"""The dashboard tells each release's story, in a real headless Chromium on a running server (issue 16).

A release history per canary (revision, commit, author, message, outcome and why, by whom), the charts of
one run with a selector for earlier ones, axes that fit the metric, one time format, what is live now (the
split, an A/B rule, the next step, the gates waited on), actions only where they apply and each confirmed,
GitOps actions on the GitOps page, and health that follows what users are served.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from rheostat.rollout.types import Phase
from tests.rig import KEY, Rig, canary, workload
from tests.test_dashboard import Browser, browser, confirm, snap

__all__ = ["browser"]  # the fixture, used here by name

CLOCK = re.compile(r"^(\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}:\d{2}$")


def analysis(api: str, port: int, steps: str) -> str:
    """Two builtin metrics fed by the load tester, and a closed confirm-promotion gate."""
    return f"""interval: 1s
threshold: 2
{steps}
metrics:
- {{name: request-success-rate, thresholdRange: {{min: 99}}, interval: 5s}}
- {{name: request-duration, thresholdRange: {{max: 500}}, interval: 5s}}
webhooks:
- name: load-test
  url: {api}/loadtester/
  timeout: 5s
  metadata: {{cmd: "hey -z 1m -q 10 -c 2 -host web-canary -H 'x-canary: insider' http://127.0.0.1:{port}/"}}
- {{name: gate, type: confirm-promotion, url: '{api}/loadtester/gate/halt'}}
"""


async def buttons(page: Any) -> list[str]:
    names: list[str] = await page.locator("main .buttons[aria-label=actions] button").all_inner_texts()
    return names


async def approve_by_api(rig: Rig, token: str) -> None:
    async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
        r = await api.post(f"/api/v1/canaries/{KEY}/approve", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 202, r.text


async def test_each_release_has_its_story_and_its_own_charts(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    rig = Rig(tmp_path)
    spec = analysis(rig.api, rig.port, "stepWeight: 10\nmaxWeight: 30")
    rig.commit(workload("9.0.0"), canary(rig.port, spec), message="first")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        token = (rig.data / "token").read_text().strip()

        # 9.0.1 runs to the gate, is approved and promoted.
        rig.commit(workload("9.0.1"), canary(rig.port, spec), message="release 9.0.1")
        await rig.wait(Phase.WAITING_PROMOTION, timeout=90)
        await page.goto(f"{rig.api}/#/canary/{KEY}")
        facts = page.locator("section[aria-label='live now']")
        await facts.get_by_text("approval to promote (confirm-promotion: gate)").wait_for(timeout=30_000)
        assert "promote once approved" in await page.locator("[data-live=next]").inner_text()
        assert "9.0.1" in await page.locator("[data-live=canary]").inner_text()
        assert "9.0.0" in await page.locator("[data-live=primary]").inner_text()
        assert await buttons(page) == ["Approve", "Promote", "Roll back", "Halt", "Pause"]
        await approve_by_api(rig, token)
        await rig.wait(Phase.SUCCEEDED)

        # At rest: nothing to approve, promote or roll back.
        await page.locator('[data-stat="phase"]').get_by_text("Succeeded").wait_for(timeout=30_000)
        assert await buttons(page) == ["Pause"]

        # 9.0.2 starts; a cancelled confirmation does nothing, a confirmed one rolls back.
        rig.commit(workload("9.0.2"), canary(rig.port, spec), message="release 9.0.2")
        await (
            page.locator('[data-stat="canary-weight"]')
            .get_by_text("10%", exact=True)
            .wait_for(timeout=60_000)
        )
        await page.get_by_role("button", name="Roll back").click()
        await page.locator("#confirm-dialog").wait_for(state="visible")
        assert (
            "Roll back web to 9.0.1: all traffic to the primary"
            in await page.locator("#confirm-text").inner_text()
        )
        await page.locator("#confirm-cancel").click()
        await page.get_by_role("status").get_by_text("Roll back: not done").wait_for()
        assert rig.server is not None and rig.server.controller.store.get_manual(KEY) == {}
        await page.get_by_role("button", name="Roll back").click()
        await confirm(page, "Roll back web to 9.0.1", "the canary (9.0.2)")
        await page.fill("#token-input", token)
        await page.keyboard.press("Enter")
        await page.locator('[data-stat="phase"]').get_by_text("Failed").wait_for(timeout=30_000)

        # The release history: newest first, each with its revision, outcome and why.
        history = page.locator("section[aria-label='release history'] tbody tr")
        await history.nth(1).wait_for()
        assert await history.count() == 2
        newest, older = await history.nth(0).inner_text(), await history.nth(1).inner_text()
        assert "9.0.2" in newest and "aborted" in newest and "rolled back by hand" in newest
        assert "release 9.0.2" in newest and "rheostat test" in newest
        assert "9.0.1" in older and "promoted" in older and "release 9.0.1" in older
        assert "approved by hand" in older
        assert "none: no run in progress" in await page.locator("[data-live=canary]").inner_text()
        assert "9.0.1" in await page.locator("[data-live=primary]").inner_text()
        assert await buttons(page) == ["Pause"]

        # The charts show the selected run only; the success rate is drawn on 0 to 100.
        await page.locator("#run-select").wait_for()
        assert await page.locator("#run-select option").count() == 2
        weights = page.locator("section[aria-label=weights] path[data-series=canary]")
        assert await weights.get_attribute("data-max") == "10"
        older_id = await page.locator("#run-select option").nth(1).get_attribute("value")
        await page.select_option("#run-select", older_id)
        await page.locator(".run-head").get_by_text("promoted", exact=True).wait_for()
        await page.wait_for_function(
            "() => document.querySelector('section[aria-label=weights] path[data-series=canary]')"
            "?.getAttribute('data-max') === '30'"
        )
        rate = page.locator("section[aria-label='metric request-success-rate'] svg")
        y_labels = await rate.locator("text[data-axis=y]").all_text_contents()
        assert y_labels[-1] == "100%", y_labels
        await snap(page, "canary")

        # One time format: 24-hour clock times everywhere, in the charts too; no AM/PM.
        stamps = [
            *await page.locator("main time").all_inner_texts(),
            *await page.locator("main svg text[data-axis=x]").all_text_contents(),
        ]
        assert stamps and all(CLOCK.match(t) for t in stamps), stamps
        assert not re.search(r"\d\s?[AP]M\b", await page.locator("main").inner_text())

        # A run's events link shows that run's events only.
        await history.nth(1).get_by_role("link", name="events").click()
        await page.locator("[data-run-note]").get_by_text("9.0.1").wait_for()
        text = await page.locator("main").inner_text()
        assert "Promotion completed" in text and "Rolling back" not in text

        # Health is what users get: the rolled-back release left everyone on a ready primary.
        await page.goto(f"{rig.api}/#/")
        row = page.locator("main tbody tr").filter(has_text=str(KEY))
        await row.get_by_text("Failed").wait_for()
        assert "Healthy" in await row.inner_text()
        assert "primary 100% · canary 0%" in await row.inner_text()
        assert (await row.locator("[data-versions]").inner_text()).strip() == "primary 9.0.1"
        await snap(page, "overview")
        assert token not in await page.content()
    finally:
        await rig.stop()
    assert browser.off_loopback == []
    assert browser.errors == []


async def test_an_ab_run_shows_its_rule_and_gitops_can_be_suspended_from_the_page(
    tmp_path: Path, browser: Browser
) -> None:
    page = browser.page
    rig = Rig(tmp_path)
    spec = analysis(rig.api, rig.port, "iterations: 2\nmatch:\n- headers: {x-canary: {exact: insider}}")
    rig.commit(workload("6.0.0"), canary(rig.port, spec), message="first")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        token = (rig.data / "token").read_text().strip()
        rig.commit(workload("6.0.1"), canary(rig.port, spec), message="6.0.1 for insiders")
        await rig.wait(Phase.WAITING_PROMOTION, timeout=90)

        # The split is the match rule, not "0%".
        await page.goto(f"{rig.api}/#/canary/{KEY}")
        split = page.locator("section[aria-label='live now'] .split-words")
        await split.get_by_text('header x-canary = "insider"', exact=False).wait_for(timeout=30_000)
        assert "canary 0%" not in await split.inner_text()
        assert "6.0.1" in await page.locator("[data-live=canary]").inner_text()
        await snap(page, "canary-ab")
        await page.goto(f"{rig.api}/#/")
        row = page.locator("main tbody tr").filter(has_text=str(KEY))
        await row.get_by_text('A/B: requests with header x-canary = "insider"', exact=False).wait_for()
        assert "Progressing" in await row.inner_text()
        assert "primary 6.0.0 · canary 6.0.1" in await row.locator("[data-versions]").inner_text()

        # Promote from the page, confirmed; then there is nothing left to promote.
        await page.goto(f"{rig.api}/#/canary/{KEY}")
        await page.get_by_role("button", name="Promote").click()
        await confirm(page, "Promote 6.0.1 of web now")
        await page.fill("#token-input", token)
        await page.keyboard.press("Enter")
        await page.locator('[data-stat="phase"]').get_by_text("Succeeded").wait_for(timeout=30_000)
        assert await buttons(page) == ["Pause"]
        history = await page.locator("section[aria-label='release history'] tbody tr").first.inner_text()
        assert "promoted by hand" in history and "6.0.1 for insiders" in history

        # GitOps: suspend, resume and reconcile the Kustomization, each confirmed.
        await page.goto(f"{rig.api}/#/gitops")
        cell = page.locator("[data-suspended='kustomization:flux-system/flux-system']")
        await cell.get_by_text("no", exact=True).wait_for()
        row = page.locator("main tbody tr").filter(has=cell)
        await row.get_by_role("button", name="Suspend").click()
        await confirm(page, "nothing more is applied from Git until resumed")
        await cell.get_by_text("yes", exact=True).wait_for(timeout=30_000)
        await snap(page, "gitops")
        await row.get_by_role("button", name="Resume").click()
        await confirm(page, "Resume Kustomization flux-system/flux-system")
        await cell.get_by_text("no", exact=True).wait_for(timeout=30_000)
        await row.get_by_role("button", name="Reconcile").click()
        await confirm(page, "fetch its source, then build and apply the newest revision")
        await page.get_by_role("status").get_by_text("Reconcile: requested").wait_for()
        assert token not in await page.content()
    finally:
        await rig.stop()
    assert browser.off_loopback == []
    assert browser.errors == []


async def test_a_blue_green_run_shows_its_mirror_then_its_switch(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    rig = Rig(tmp_path)
    steps = "iterations: 2\nmirror: true\nmirrorWeight: 50"
    spec = analysis(rig.api, rig.port, steps).replace("interval: 1s", "interval: 3s", 1)
    rig.commit(workload("7.0.0"), canary(rig.port, spec), message="first")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        token = (rig.data / "token").read_text().strip()
        rig.commit(workload("7.0.1"), canary(rig.port, spec), message="7.0.1 in the shadow")
        await page.goto(f"{rig.api}/#/canary/{KEY}")
        split = page.locator("section[aria-label='live now'] .split-words")
        await split.get_by_text("mirroring 50% of requests to the canary", exact=False).wait_for(
            timeout=60_000
        )
        assert "primary 100% · canary 0%" in await split.inner_text()
        await rig.wait(Phase.WAITING_PROMOTION, timeout=90)
        await approve_by_api(rig, token)
        # The switch holds for one interval before the promotion: the page shows it while it lasts.
        await split.get_by_text("blue/green: switched", exact=False).wait_for(timeout=30_000)
        await rig.wait(Phase.SUCCEEDED)
    finally:
        await rig.stop()
    assert browser.off_loopback == []
    assert browser.errors == []
