"""The admission webhook's own HTTPS server (`rheostat run --webhook`), next to the API, on every replica."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl

import uvicorn

from rheostat.gitops.gate import PolicyGate
from rheostat.plugins.kube.api import KubeAPI
from rheostat.reactor.controller import Controller
from rheostat.reactor.settings import WebhookSettings
from rheostat.server.admission import Admission, Recorder, StorePolicies, create_webhook_app
from rheostat.server.certs import service_names
from rheostat.server.webhook_tls import SERVICE, FileKeeper, Keeper, SecretKeeper, WebhookTLS
from rheostat.store.port import State
from rheostat.util.tasks import cancel_all, supervised

log = logging.getLogger(__name__)


def tls_for(settings: WebhookSettings, controller: Controller) -> WebhookTLS:
    """Given files (cert-manager), or made here: in the Secret on a cluster, in the data dir on one machine."""
    names = service_names(SERVICE, settings.namespace)
    ips = ["127.0.0.1"]
    try:
        if settings.host not in ("0.0.0.0", "::") and ipaddress.ip_address(settings.host).version == 4:
            ips = list(dict.fromkeys([*ips, settings.host]))
    except ValueError:
        pass  # a host name: covered by the service names or not at all
    if settings.cert_dir is not None:
        return WebhookTLS(FileKeeper(settings.cert_dir), managed=False, names=names, ips=ips)
    keeper: Keeper
    if controller.kube_every_replica is not None:
        keeper = SecretKeeper(controller.kube_every_replica, settings.namespace)
    else:
        keeper = FileKeeper(controller.settings.data_dir / "webhook-tls")
    return WebhookTLS(keeper, managed=True, names=names, ips=ips, kube=controller.kube_every_replica)


class WebhookServer:
    """uvicorn over TLS in front of `Admission`; the policies are the store's, the findings go to the gate."""

    def __init__(
        self,
        settings: WebhookSettings,
        store: State,
        gate: PolicyGate,
        tls: WebhookTLS,
        kube: KubeAPI | None = None,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.policies = StorePolicies(store, gate)
        self.recorder = Recorder(gate)
        self.admission = Admission(self.policies, fail_closed=settings.fail_closed, record=self.recorder)
        self.tls = tls
        self.app = create_webhook_app(self.admission)
        config = uvicorn.Config(
            self.app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_context_factory=self._context,
        )
        self.uvicorn = uvicorn.Server(config)
        self._tasks: list[asyncio.Task[None]] = []

    def _context(self, config: uvicorn.Config, default: object) -> ssl.SSLContext:
        return self.tls.context  # one context, its chain reloaded in place on renewal

    @property
    def url(self) -> str:
        host = self.settings.host
        return f"https://{host if ':' not in host else f'[{host}]'}:{self.settings.port}"

    def _check_port(self) -> None:
        host, port = self.settings.host, self.settings.port
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise OSError(
                    f"the admission webhook cannot listen on {host}:{port}: {exc.strerror}"
                ) from None

    @classmethod
    def for_controller(cls, settings: WebhookSettings, controller: Controller) -> WebhookServer:
        return cls(
            settings, controller.store, controller.gate, tls_for(settings, controller), controller.kube
        )

    async def start(self) -> None:
        self._check_port()
        await self.tls.check()  # a certificate before the first request
        self.uvicorn.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        serve = asyncio.get_running_loop().create_task(self.uvicorn.serve(), name="admission-webhook")
        self._tasks = [
            serve,
            supervised(self.tls.run(self.settings.cert_check_s), name="webhook-certificate"),
            supervised(self.recorder.run(), name="webhook-findings"),
        ]
        if self.kube is not None:
            self._tasks.append(
                supervised(self.policies.watch_namespaces(self.kube), name="webhook-namespaces")
            )
        while not self.uvicorn.started:
            if serve.done():
                await self.stop()
                raise OSError(f"the admission webhook could not listen on {self.url}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.policies.unwatch()
        if self._tasks:
            await asyncio.gather(self._tasks[0], return_exceptions=True)  # open requests are answered first
            await cancel_all(self._tasks[1:])
        self.recorder.flush()
