"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright), on a running server.

Nothing may leave 127.0.0.1: every request the page makes is intercepted, and any other host fails the test.
Under CI=true a missing chromium or playwright is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from rheostat.plugins.kube import kinds
from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.reactor.settings import ClusterSettings, Settings
from rheostat.rollout.types import Phase
from rheostat.server.main import Server
from tests import kubeapi, podinfo
from tests.conftest import in_ci
from tests.kubeapi import KubeServer
from tests.kubelet import kubelet
from tests.rig import KEY, Rig, canary, workload
from tests.servers import free_port

kube_server = kubeapi.kube_server  # the fixtures of the emulated cluster, made visible here
kubeconfig = kubeapi.kubeconfig

CHROMIUM = os.environ.get("RHEOSTAT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SHOTS = Path(os.environ.get("RHEOSTAT_SCREENSHOTS", "")) if os.environ.get("RHEOSTAT_SCREENSHOTS") else None


def need_browser() -> Any:
    try:
        from playwright import async_api
    except ImportError:
        if in_ci():
            pytest.fail("CI=true but playwright (Python package) is not installed")
        pytest.skip("playwright is not installed")
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMIUM)):
        if in_ci():
            pytest.fail(f"CI=true but chromium is missing at {CHROMIUM} (Debian package chromium)")
        pytest.skip(f"chromium not found at {CHROMIUM}")
    return async_api


class Browser:
    """One headless Chromium with one page; records console errors and any request off loopback."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.off_loopback: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    api = need_browser()
    async with api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = await chromium.new_context(viewport={"width": 1366, "height": 900})
            page = await context.new_page()
            b = Browser(page)

            async def guard(route: Any) -> None:
                host = urlsplit(route.request.url).hostname
                if route.request.url.startswith("data:") or host == "127.0.0.1":
                    await route.continue_()
                else:
                    b.off_loopback.append(route.request.url)
                    await route.abort()

            await context.route("**/*", guard)
            page.on("pageerror", lambda exc: b.errors.append(f"page error: {exc}"))
            # Chromium logs every 4xx as a console error; the 403 of a wrong token and the 404 of an absent
            # feature are expected, so only script errors count.
            page.on(
                "console",
                lambda msg: (
                    b.errors.append(f"console: {msg.text}")
                    if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                    else None
                ),
            )
            yield b
            await context.close()
        finally:
            await chromium.close()


def gated(api_port: int) -> str:
    """A canary that stops in WaitingPromotion: its confirm-promotion hook is the load tester's closed gate."""
    return (
        "interval: 1s\nthreshold: 2\nstepWeight: 10\nmaxWeight: 30\nwebhooks:\n"
        f"- {{name: gate, type: confirm-promotion, url: 'http://127.0.0.1:{api_port}/loadtester/gate/halt'}}"
    )


async def snap(page: Any, name: str) -> None:
    """With RHEOSTAT_SCREENSHOTS=<dir>, a screenshot of the page as `<dir>/<name>.png` (for docs/images)."""
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def stat(page: Any, name: str) -> str:
    text: str = await page.locator(f'[data-stat="{name}"]').inner_text()
    return text.strip()


async def answer_token(page: Any, token: str) -> None:
    dialog = page.locator("#token-dialog")
    await dialog.wait_for(state="visible")
    await page.fill("#token-input", token)
    await page.keyboard.press("Enter")  # the form submits from the keyboard


async def confirm(page: Any, *words: str) -> str:
    """Accept the confirmation dialog of an action, after checking it says what will happen."""
    dialog = page.locator("#confirm-dialog")
    await dialog.wait_for(state="visible")
    text: str = await page.locator("#confirm-text").inner_text()
    for w in words:
        assert w in text, text
    await page.locator("#confirm-ok").click()
    return text


async def test_watch_approve_and_roll_back_from_the_page(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    rig = Rig(tmp_path)
    spec = gated(rig.api_port)
    rig.commit(workload("9.0.0"), canary(rig.port, spec), message="first")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
        token = (rig.data / "token").read_text().strip()

        await page.goto(rig.api + "/")
        row = page.locator("tbody tr").first
        await row.get_by_text(KEY, exact=True).first.wait_for()
        assert "Healthy" in await row.inner_text()
        await page.get_by_role("link", name=KEY).click()
        await page.locator('[data-stat="phase"]').get_by_text("Initialized").wait_for()
        await page.evaluate("window.notReloaded = true")

        # A new revision: the page follows the weight as it advances, without a reload.
        rig.commit(workload("9.0.1"), canary(rig.port, spec), message="9.0.1")
        seen: list[str] = []
        for want in ("10%", "20%", "30%"):
            await (
                page.locator('[data-stat="canary-weight"]')
                .get_by_text(want, exact=True)
                .wait_for(timeout=30_000)
            )
            seen.append(await stat(page, "canary-weight"))
        assert seen == ["10%", "20%", "30%"]
        assert await page.evaluate("window.notReloaded") is True
        await page.locator('[data-stat="phase"]').get_by_text("WaitingPromotion").wait_for(timeout=30_000)
        assert rig.status().phase is Phase.WAITING_PROMOTION
        assert await page.locator("svg.chart path[data-series=canary]").count() >= 1
        shot = tmp_path / "canary.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 0

        # Approve by keyboard: a wrong token is refused and asked again, the right one opens the gate.
        approve = page.get_by_role("button", name="Approve")
        await approve.focus()
        await page.keyboard.press("Enter")
        await page.locator("#confirm-dialog").wait_for(state="visible")
        assert "9.0.1 is promoted to the primary" in await page.locator("#confirm-text").inner_text()
        await page.keyboard.press("Enter")  # the dialog's confirm button has the focus
        await answer_token(page, "not-the-token")
        await page.locator("#token-error").get_by_text("wrong").wait_for()
        assert rig.server is not None and rig.server.controller.store.get_manual(KEY) == {}
        await page.fill("#token-input", token)
        await page.keyboard.press("Enter")
        await page.get_by_role("status").get_by_text("Approve: requested").wait_for()
        await page.locator('[data-stat="phase"]').get_by_text("Succeeded").wait_for(timeout=30_000)
        assert rig.status().phase is Phase.SUCCEEDED

        # Another revision, rolled back by a click; the token is not asked again in this tab.
        rig.commit(workload("9.0.2"), canary(rig.port, spec), message="9.0.2")
        await (
            page.locator('[data-stat="canary-weight"]')
            .get_by_text("10%", exact=True)
            .wait_for(timeout=30_000)
        )
        await page.get_by_role("button", name="Roll back").click()
        await confirm(page, "Roll back web to 9.0.1: all traffic to the primary", "the canary (9.0.2)")
        await page.locator('[data-stat="phase"]').get_by_text("Failed").wait_for(timeout=30_000)
        assert rig.status().phase is Phase.FAILED
        assert not await page.locator("#token-dialog").is_visible()
        assert await rig.versions(4) == {"9.0.1": 4}

        # The other pages render, and say "none" for features this controller may not have.
        for hash_, text in (
            ("#/events", "ManualRequest"),
            ("#/gitops", "flux-system/flux-system"),
            ("#/violations", "None"),
            ("#/flags", "None"),
        ):
            await page.goto(f"{rig.api}/{hash_}")
            await page.locator("main").get_by_text(text).first.wait_for()
        await page.goto(f"{rig.api}/#/events")
        await page.select_option("#f-type", "Warning")
        await page.get_by_role("button", name="Filter").click()
        await page.wait_for_function(
            "() => [...document.querySelectorAll('main tbody tr td:nth-child(2)')]"
            ".every((td) => td.textContent === 'Warning')"
        )
        assert "ManualRequest" not in await page.locator("main").inner_text()
        assert token not in await page.content()
    finally:
        await rig.stop()
    assert browser.off_loopback == []
    assert browser.errors == []


async def test_a_policy_violation_appears_after_a_bad_commit(tmp_path: Path, browser: Browser) -> None:
    page = browser.page
    policy = (
        resources.files("rheostat.policy").joinpath("library", "workload-readiness-probe.yaml").read_text()
    )
    rig = Rig(tmp_path)
    rig.commit(workload("9.0.0"), policy, message="first, with a readiness probe")
    await rig.start()
    try:
        store = rig.server.controller.store if rig.server else None
        assert store is not None
        await rig.wait_for(
            "the first revision applied", lambda: store.get_object("Workload", KEY) is not None
        )
        await page.goto(f"{rig.api}/#/violations")
        await page.locator("main").get_by_text("None.", exact=True).wait_for()
        await page.evaluate("window.notReloaded = true")

        # A commit whose Workload has no readiness probe: the gate blocks it and the page lists why.
        bad = workload("9.0.1").replace("    readinessProbe: {path: /readyz}\n", "")
        assert "readinessProbe" not in bad
        rig.commit(bad, policy, message="no probe")
        row = page.locator("main tbody tr").filter(has_text="workload-must-have-readiness-probe")
        await row.wait_for(timeout=30_000)
        text = await row.inner_text()
        assert "Workload e2e/web" in text and "deny" in text and "app.yaml" in text
        assert "no spec.template.readinessProbe" in text
        assert await page.evaluate("window.notReloaded") is True
        assert await page.locator("main tbody tr").count() == 1
        await snap(page, "violations")
        stored = store.get_object("Workload", KEY)
        assert stored is not None and "9.0.0" in str(stored.body)  # the bad revision was not applied
    finally:
        await rig.stop()
    assert browser.off_loopback == []
    assert browser.errors == []


async def test_the_flags_page_shows_a_rollout_split_and_the_kill_switch(
    tmp_path: Path, browser: Browser
) -> None:
    from tests.test_flag_rollout_e2e import feature_flag

    page = browser.page
    rig = Rig(tmp_path)
    rollout = f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: checkout, namespace: e2e}}
spec:
  targetRef: {{apiVersion: core.openfeature.dev/v1beta1, kind: FeatureFlag, name: checkout}}
  flag: {{key: new-checkout}}
  analysis:
{chr(10).join("    " + line for line in gated(rig.api_port).splitlines())}
"""
    rig.commit(feature_flag("off"), rollout, message="first")
    await rig.start()
    try:
        assert rig.server is not None
        flags = rig.server.controller.flags
        await rig.wait_for("the flag served", lambda: flags.primary("new-checkout") is not None)
        await page.goto(f"{rig.api}/#/flags")
        row = page.locator("main tbody tr").filter(has_text="new-checkout")
        await row.get_by_text("all users: Git's definition").wait_for()
        await page.evaluate("window.notReloaded = true")

        rig.commit(feature_flag("on"), rollout, message="new-checkout on")  # stops at 30%, behind the gate
        await row.get_by_text("30% get Git's definition").wait_for(timeout=30_000)
        assert "(off)" in await row.inner_text()  # the rest still get the primary's default
        await snap(page, "flags")

        token = (rig.data / "token").read_text().strip()
        async with httpx.AsyncClient(base_url=rig.api, timeout=5) as api:
            r = await api.post(
                "/api/v1/flags/new-checkout/disable", headers={"Authorization": f"Bearer {token}"}, json={}
            )
            assert r.status_code == 202
        await row.get_by_text("DISABLED (kill switch)").wait_for(timeout=30_000)
        assert "set `state: DISABLED`" in await row.inner_text() and "app.yaml" in await row.inner_text()
        assert await page.evaluate("window.notReloaded") is True
        assert token not in await page.content()
    finally:
        await rig.stop()
    assert browser.off_loopback == []
    assert browser.errors == []


async def test_the_dashboard_follows_and_rolls_back_a_canary_in_a_cluster(
    tmp_path: Path, browser: Browser, kube_server: KubeServer, kubeconfig: Path
) -> None:
    """`rheostat run --kubeconfig`: the same pages for a Deployment behind Istio in the (emulated) cluster."""
    page = browser.page
    analysis = {"interval": "1s", "threshold": 2, "stepWeight": 10, "maxWeight": 30, "metrics": []}
    gate = {
        "name": "gate",
        "type": "confirm-promotion",
        "url": "http://127.0.0.1:{port}/loadtester/gate/halt",
    }
    kube_server.add(podinfo.deployment("test", "6.0.0"))
    settings = Settings(
        repo=None,
        data_dir=tmp_path / "data",
        listen_port=free_port(),
        sync_interval_s=0.2,
        cluster=ClusterSettings(kubeconfig=str(kubeconfig)),
    )
    gate["url"] = gate["url"].format(port=settings.listen_port)
    kube_server.add(
        {
            "apiVersion": "flagger.app/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "provider": "istio",
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {**analysis, "webhooks": [gate]},
            },
        }
    )
    server = Server(settings)
    reader = LightkubeAPI.from_kubeconfig(str(kubeconfig), None)
    try:
        async with kubelet(reader, kube_server):
            await server.start()
            try:
                await page.goto(server.url + "/")
                row = page.locator("tbody tr").first
                await row.get_by_text("test/podinfo", exact=True).first.wait_for(timeout=30_000)
                await row.get_by_text("Healthy").wait_for(timeout=30_000)  # once its Canary is Initialized
                assert "Deployment test/podinfo" in await row.inner_text()
                assert (
                    "Repository" not in await page.locator("main").inner_text()
                )  # no Git on this controller
                await page.get_by_role("link", name="test/podinfo").click()
                await page.locator('[data-stat="phase"]').get_by_text("Initialized").wait_for(timeout=30_000)

                def image(obj: dict[str, Any]) -> None:
                    obj["spec"]["template"]["spec"]["containers"][0]["image"] = "podinfo:6.0.1"

                target = kube_server.object(kinds.DEPLOYMENT, "test", "podinfo")
                assert target is not None
                image(target)
                await reader.replace(target)  # `kubectl set image`
                for want in ("10%", "20%", "30%"):
                    await (
                        page.locator('[data-stat="canary-weight"]')
                        .get_by_text(want, exact=True)
                        .wait_for(timeout=30_000)
                    )
                await page.get_by_role("button", name="Roll back").click()
                await confirm(page, "Roll back podinfo to", "all traffic to the primary")
                await answer_token(page, server.token)
                await page.locator('[data-stat="phase"]').get_by_text("Failed").wait_for(timeout=30_000)
                canary_obj = kube_server.object(kinds.CANARY, "test", "podinfo")
                assert canary_obj is not None and canary_obj["status"]["phase"] == "Failed"
                assert server.token not in await page.content()
            finally:
                await server.stop()
    finally:
        await reader.close()
    assert browser.off_loopback == []
    assert browser.errors == []
