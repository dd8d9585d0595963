"""An in-process server on a real Git repository: real Envoy, real processes. For end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rheostat.model.base import ObjectKey
from rheostat.reactor.settings import Settings
from rheostat.rollout.types import CanaryStatus, Phase
from rheostat.server.main import Server
from tests.servers import free_port, git

NS = "e2e"
KEY = ObjectKey(f"{NS}/web")


def workload(
    version: str,
    *,
    env: dict[str, str] | None = None,
    replicas: int = 1,
    command: list[str] | None = None,
    probe: str = "/readyz",
) -> str:
    cmd = command or ["python", "-m", "rheostat.demo.app", "--port", "{port}", "--version", version]
    env_lines = "".join(f'\n      {k}: "{v}"' for k, v in (env or {}).items()) or " {}"
    return f"""apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: {replicas}
  template:
    command: {cmd!r}
    env:{env_lines}
    readinessProbe: {{path: {probe}}}
"""


def canary(port: int, analysis: str, *, deadline: int = 30) -> str:
    body = "\n".join("    " + line for line in analysis.strip().splitlines())
    return f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: web, namespace: {NS}}}
spec:
  targetRef: {{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}}
  progressDeadlineSeconds: {deadline}
  service: {{port: {port}}}
  analysis:
{body}
"""


@dataclass
class Traffic:
    """Steady requests through Envoy, counted by the version that answered."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    rate_s: float = 40.0
    versions: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            while True:
                try:
                    r = await client.get(self.url, headers=self.headers)
                    if r.status_code == 200 and r.headers.get("content-type", "").startswith(
                        "application/json"
                    ):
                        self.versions[str(r.json().get("version"))] += 1
                    elif r.status_code >= 500:
                        self.errors += 1
                except httpx.HTTPError:
                    self.errors += 1
                await asyncio.sleep(1 / self.rate_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="e2e-traffic")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.repo = tmp / "repo"
        self.repo.mkdir()
        self.data = tmp / "data"
        self.port = free_port()
        self.api_port = free_port()
        self.server: Server | None = None
        self._git("init", "-q", "-b", "main")

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def service(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _git(self, *args: str) -> None:
        git(self.repo, *args)

    def commit(self, *docs: str, message: str = "change") -> None:
        (self.repo / "app.yaml").write_text("---\n".join(docs))
        self._git("add", "-A")
        self._git("commit", "-q", "-m", message)
        if self.server is not None:
            self.server.controller.request_reconcile()

    async def start(self, **settings: Any) -> Server:
        """A server on this repository; `settings` override the Settings fields a test cares about."""
        base: dict[str, Any] = {"poll_interval_s": 0.3, "sync_interval_s": 0.3}
        self.server = Server(
            Settings(repo=self.repo, data_dir=self.data, listen_port=self.api_port, **(base | settings))
        )
        await self.server.start()
        return self.server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def status(self) -> CanaryStatus:
        assert self.server is not None
        return self.server.controller.engine.status(KEY)

    async def wait(self, *phases: Phase, after_tick: int = -1, timeout: float = 60.0) -> CanaryStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status()
            if st.phase in phases and st.tick > after_tick:
                return st
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"canary did not reach {phases} in {timeout}s; now {self.status()}; events: {self.events()[-8:]}"
        )

    async def wait_for(self, what: str, check: object, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if callable(check) and check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(
            f"timed out waiting for {what}; now {self.status()}; events: {self.events()[-8:]}"
        )

    def events(self, kind: str | None = "Canary") -> list[str]:
        assert self.server is not None
        return [f"{e.reason}: {e.message}" for e in self.server.controller.store.events(kind=kind, limit=200)]

    async def versions(self, n: int, **headers: str) -> Counter[str]:
        seen: Counter[str] = Counter()
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(n):
                r = await client.get(self.service + "/", headers=headers)
                seen[str(r.json()["version"]) if r.status_code == 200 else str(r.status_code)] += 1
        return seen


@contextlib.asynccontextmanager
async def running(tmp: Path, *docs: str) -> AsyncIterator[Rig]:
    rig = Rig(tmp)
    rig.commit(*docs, message="first")
    try:
        await rig.start()
        yield rig
    finally:
        await rig.stop()
