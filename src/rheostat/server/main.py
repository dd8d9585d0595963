"""`rheostat run`: the controller and its API in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Callable

import uvicorn

from rheostat.reactor.controller import Controller, ensure_token
from rheostat.reactor.settings import Settings
from rheostat.server.api import create_app, is_loopback
from rheostat.server.limits import BoundedHttpTools
from rheostat.server.own_hooks import own_hook_headers
from rheostat.server.webhook import WebhookServer

log = logging.getLogger(__name__)


class Server:
    """Controller plus uvicorn; `start()` returns once both listen, `stop()` ends them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.token, _ = ensure_token(settings.data_dir)
        self.controller = Controller(settings)
        self.app = create_app(self.controller, self.token)
        config = uvicorn.Config(
            self.app,
            host=settings.listen_host,
            port=settings.listen_port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            http=BoundedHttpTools,  # httptools, with a cap on the request line and headers (431)
        )
        self.uvicorn = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        # For the controller's webhook caller: the token for its calls to this API's own load tester.
        self.hook_headers = own_hook_headers(self.url, self.token)
        self.controller.hooks.headers_for = self.hook_headers
        self.webhook = (
            WebhookServer.for_controller(settings.webhook, self.controller) if settings.webhook else None
        )

    @property
    def token_unseen(self) -> bool:
        """True until the token has been shown once (a first start that failed showed nothing)."""
        return not (self.settings.data_dir / "token.shown").exists()

    def token_seen(self) -> None:
        (self.settings.data_dir / "token.shown").touch()

    @property
    def url(self) -> str:
        host = self.settings.listen_host
        return f"http://{host if ':' not in host else f'[{host}]'}:{self.settings.listen_port}"

    def _check_port(self) -> None:
        """uvicorn exits the process on a taken port; say it in one line before anything starts."""
        host, port = self.settings.listen_host, self.settings.listen_port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                raise OSError(f"the API cannot listen on {host}:{port}: {exc.strerror}") from None

    async def start(self) -> None:
        self._check_port()
        if not is_loopback(self.settings.listen_host):
            log.warning("listening on %s: every request needs the API token", self.settings.listen_host)
        await self.controller.start()
        if self.webhook is not None:
            try:
                await self.webhook.start()
            except BaseException:
                await self.controller.stop()
                raise
        self.uvicorn.config.setup_event_loop = lambda: None  # type: ignore[method-assign]
        self._task = asyncio.get_running_loop().create_task(self.uvicorn.serve(), name="api")
        while not self.uvicorn.started:
            if self._task.done():
                if self.webhook is not None:
                    await self.webhook.stop()
                await self.controller.stop()
                raise OSError(f"the API could not listen on {self.url}")
            await asyncio.sleep(0.02)

    async def stop(self, *, stop_data_plane: bool = True) -> None:
        self.app.state.streams.close()  # open event streams end, so uvicorn's shutdown does not wait on them
        self.app.state.ofrep.close()
        self.uvicorn.should_exit = True
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self.webhook is not None:
            await self.webhook.stop()
        await self.controller.stop(stop_data_plane=stop_data_plane)


async def run_forever(
    settings: Settings, announce: Callable[[Server], None], *, stop_data_plane: bool = True
) -> None:
    server = Server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    try:
        announce(server)
        await stop.wait()
    finally:
        await server.stop(stop_data_plane=stop_data_plane)
