"""Two replicas, one leader: which of them ticks the rollouts and writes to the cluster.

Both watch the cluster into their store and serve the API. The standby runs no ticks, writes nothing (the
fence refuses it) and keeps each Canary's status as the leader writes it. When it wins the Lease it reads
every Canary from the API once more, then starts the leader's work (`lead`), which goes on from the status
in the cluster, as a restarted controller does. When the Lease is lost, the fence has already stopped the
writes; `follow` stops the leader's work and the replica stands by again.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from rheostat.plugins.kube.api import KubeAPI
from rheostat.plugins.kube.lease import LeaderElector, LeaseConfig
from rheostat.reactor.settings import LeaderElection
from rheostat.store.port import State
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)
KIND = "Lease"  # the kind of the store's events about leadership


def identity() -> str:
    """This process among the replicas: the host's name (in a pod, the pod's) and a random part, so a
    restarted process is a new holder and waits for its old Lease to expire, as client-go's do."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def elector(api: KubeAPI, election: LeaderElection) -> LeaderElector:
    """The elector of `election` on `api` (its own client: see LeaderElector)."""
    # the real client knows the pod's namespace (or the kubeconfig context's); a test's API server may not
    namespace = election.namespace or str(getattr(api, "namespace", "") or "default")
    config = LeaseConfig(
        election.name,
        namespace,
        identity(),
        election.duration_s,
        election.renew_deadline_s,
        election.retry_s,
    )
    return LeaderElector(api, config)


class Leadership:
    def __init__(
        self,
        elector: LeaderElector,
        store: State,
        *,
        lead: Callable[[], Awaitable[None]],
        follow: Callable[[], Awaitable[None]],
    ) -> None:
        self.elector = elector
        self.store = store
        self.lead = lead
        self.follow = follow
        self._renewing: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        return self.elector.leading

    def standby_reason(self) -> str | None:
        """None on the leader; else why this replica does not act, and where to go instead."""
        if self.leading:
            return None
        holder = self.elector.holder or "no replica yet"
        return (
            f"this replica is the standby (Lease {self.elector.config.key} is held by {holder}): "
            "actions go to the leader"
        )

    def view(self) -> dict[str, Any]:
        cfg = self.elector.config
        return {
            "lease": cfg.key,
            "identity": cfg.identity,
            "leading": self.leading,
            "holder": self.elector.holder,
            "leaseTransitions": self.elector.transitions,
        }

    def _event(self, reason: str, message: str, *, warning: bool = False) -> None:
        with self.store.transaction():
            self.store.add_event(KIND, self.elector.config.key, reason, message, warning=warning)

    async def run(self) -> None:
        cfg = self.elector.config
        while True:
            self._event("Standby", f"{cfg.identity} stands by: reads only, until it holds the Lease")
            await self.elector.acquire()
            self._renewing = supervised(
                self.elector.hold(), name="lease-renew"
            )  # from now, while `lead` runs
            try:
                self._event(
                    "Leading", f"{cfg.identity} leads: it ticks the rollouts and writes to the cluster"
                )
                try:
                    await self.lead()
                except Exception as exc:  # cannot start: give the Lease up so that another replica may
                    log.warning("cannot start leading, standing by again: %s", exc, exc_info=exc)
                    await self.elector.release()
                else:
                    await asyncio.shield(self._renewing)  # returns once the Lease is lost
                    self._event(
                        "LeaderLost",
                        f"{cfg.identity} lost the Lease (not renewed within "
                        f"{cfg.renew_deadline_s:g}s, or another holder): writes stopped",
                        warning=True,
                    )
            finally:
                await cancel_all([self._renewing])
                self._renewing = None
                self.elector.fence.drop()
                await self.follow()
            await self.elector.sleep(cfg.retry_s)

    async def release(self) -> None:
        """On a clean shutdown, after the leader's work has stopped: hand the Lease over at once."""
        if self._renewing is not None:
            await cancel_all([self._renewing])
        if await self.elector.release():
            self._event("Released", f"{self.elector.config.identity} released the Lease")
