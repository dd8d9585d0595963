"""EnvoyRouter: the Router protocol on top of one local Envoy fed by filesystem xDS.

Every change is a file renamed into place, then confirmed through admin stats; a refused change puts
the previous file back so that what is on disk is always what Envoy runs (and what a restart restores).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rheostat.model.base import ObjectKey
from rheostat.plugins.platforms.local import procfs
from rheostat.plugins.platforms.local.ports import bindable
from rheostat.plugins.routers.base import RouterError, Routes, ServiceRoute
from rheostat.plugins.routers.envoy import adopt, config
from rheostat.plugins.routers.envoy import service as service_fields
from rheostat.plugins.routers.envoy.admin import AdminClient, AdminError, stat_int, stat_text
from rheostat.plugins.routers.envoy.files import replace_atomic, write_json_atomic
from rheostat.plugins.routers.envoy.process import EnvoyProcess, end_leftover, find_envoy

log = logging.getLogger(__name__)

CONFIRM_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 10.0
POLL_S = 0.005
MAX_UDS_PATH = 107  # sun_path is 108 bytes including the NUL
PIDFILE = "envoy.pid"


@dataclass(frozen=True)
class Probe:
    """The admin stats that tell whether Envoy took a file: its version text and rejection count."""

    what: str
    version_stat: str
    rejected_stat: str


@dataclass(frozen=True)
class _Accepted:
    content: bytes  # what is on disk (and live), restored if a later write is refused
    body: Any  # the same without version_info, to skip writes that change nothing


LDS_PROBE = Probe("listeners", "listener_manager.lds.version_text", "listener_manager.lds.update_rejected")
CDS_PROBE = Probe("clusters", "cluster_manager.cds.version_text", "cluster_manager.cds.update_rejected")


def _rds_probe(key: ObjectKey) -> Probe:
    name = config.resource_name(key)
    prefix = f"http.{name}.rds.{name}"
    return Probe(f"routes of {key}", f"{prefix}.version_text", f"{prefix}.update_rejected")


class EnvoyRouter:
    def __init__(
        self,
        data_dir: Path,
        *,
        admin_socket: Path | None = None,
        envoy_path: str | None = None,
        on_event: Callable[[str, str], None] | None = None,
        stats_port: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.layout = config.Layout(self.data_dir)
        self.admin_socket = Path(admin_socket) if admin_socket is not None else self.data_dir / "admin.sock"
        self.envoy_path = envoy_path
        self.on_event = on_event
        self.stats_port = stats_port  # serve /stats/prometheus on 127.0.0.1:<port> (None: no TCP at all)
        self._admin: AdminClient | None = None
        self._process: EnvoyProcess | None = None
        self._services: dict[ObjectKey, ServiceRoute] = {}  # in CDS
        self._ports: dict[ObjectKey, int] = {}  # in LDS
        self._routes: dict[ObjectKey, Routes] = {}  # last accepted, re-rendered when a reconcile changes RDS
        self._accepted: dict[Path, _Accepted] = {}
        self._lock = asyncio.Lock()
        self._epoch = time.time_ns() // 1_000_000  # versions stay unique across router restarts
        self._seq = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the Envoy a previous controller left running (its files stay as they are), or start one."""
        if self._process is not None:
            raise RouterError("the Envoy router is already started")
        if len(str(self.admin_socket)) > MAX_UDS_PATH:
            raise RouterError(f"admin socket path is too long for a unix socket: {self.admin_socket}")
        binary = find_envoy(self.envoy_path)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        boot = json.dumps(
            config.bootstrap(self.layout, self.admin_socket, stats_port=self.stats_port), indent=1
        )
        self._admin = AdminClient(self.admin_socket)
        self._process = EnvoyProcess(
            binary,
            self.layout.bootstrap,
            self.layout.log,
            self._admin,
            pidfile=self.layout.root / PIDFILE,
            on_restart=self._restarted,
        )
        try:
            if not await self._adopt(boot):
                await self._start_fresh(boot)
        except BaseException:
            await self._admin.aclose()
            self._admin = self._process = None
            raise

    async def _adopt(self, boot: str) -> bool:
        process = self._require_process()
        try:
            same_boot = self.layout.bootstrap.read_text() == boot
        except OSError:
            same_boot = False
        if not same_boot or not await process.adopt():
            return False
        try:
            view = adopt.load_view(self.layout)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "Envoy (pid %s) runs files this router cannot read (%s); restarting it", process.pid, exc
            )
            await process.detach()
            return False
        self._accepted.clear()
        for path, content in view.files.items():
            self._remember(path, content)
        self._ports, self._services, self._routes = view.ports, view.services, view.routes
        log.warning("adopted Envoy (pid %s) with %d listener(s), left running by a previous controller",
                    process.pid, len(view.ports))  # fmt: skip
        return True

    async def _start_fresh(self, boot: str) -> None:
        """End an Envoy we cannot adopt, then start one with no listeners."""
        left = await asyncio.to_thread(end_leftover, self.layout.root / PIDFILE)
        if left is not None:
            log.warning("ended Envoy (pid %s) left by a previous controller: it could not be adopted", left)
        shutil.rmtree(self.layout.root / "xds", ignore_errors=True)
        self.layout.lds.parent.mkdir(parents=True, exist_ok=True)
        self.layout.rds(ObjectKey("x/x")).parent.mkdir(parents=True, exist_ok=True)
        self.admin_socket.unlink(missing_ok=True)
        self._accepted.clear()
        self._ports, self._services, self._routes = {}, {}, {}
        for path, data in (
            (self.layout.lds, config.listeners({}, self.layout, self._next_version())),
            (self.layout.cds, config.clusters([], self._next_version())),
        ):
            self._remember(path, write_json_atomic(path, data, self.layout.tmp))
        self.layout.bootstrap.write_text(boot)
        await self._require_process().start()

    async def stop(self, *, end_envoy: bool = True) -> None:
        """Stop the router; with `end_envoy=False` Envoy keeps serving for the next start to adopt."""
        if self._process is not None:
            await (self._process.stop() if end_envoy else self._process.detach())
        if self._admin is not None:
            await self._admin.aclose()
        self._process = self._admin = None

    @property
    def adopted(self) -> bool:
        return self._process is not None and self._process.adopted

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    # -- Router protocol -------------------------------------------------------------------------

    async def reconcile(self, route: ServiceRoute) -> None:
        service_fields.check(route)  # a field Envoy cannot express is refused before anything is written
        async with self._lock:
            key = route.key
            if self._ports.get(key) != route.port:
                self._check_port(key, route.port)
            await self._apply_clusters(route)
            routes = self._routes.get(key, Routes())
            new_listener = self._ports.get(key) != route.port
            rds_path = self.layout.rds(key)
            if new_listener and key not in self._ports:
                # The listener reads its RDS file on creation, so the file must exist first.
                version = self._next_version()
                data = config.route_config(route, routes, version)
                self._remember(rds_path, write_json_atomic(rds_path, data, self.layout.tmp))
            else:
                await self._write(rds_path, lambda v: config.route_config(route, routes, v), _rds_probe(key))
            self._routes[key] = routes
            if new_listener:
                await self._apply_listener(key, route.port)

    async def set_routes(self, key: ObjectKey, routes: Routes) -> None:
        async with self._lock:
            service = self._services.get(key)
            if service is None or key not in self._ports:
                raise RouterError(f"{key} has no listener yet; reconcile it before setting routes")
            await self._write(
                self.layout.rds(key), lambda v: config.route_config(service, routes, v), _rds_probe(key)
            )
            self._routes[key] = routes

    async def get_routes(self, key: ObjectKey) -> Routes:
        dump = await self._admin_call(
            lambda a: a.get_json("/config_dump", {"resource": "dynamic_route_configs"})
        )
        name = config.resource_name(key)
        for entry in dump.get("configs", []):
            route_config = entry.get("route_config", {})
            if route_config.get("name") == name:
                return config.routes_from_config(route_config, key)
        raise RouterError(f"Envoy has no routes for {key}")

    async def finalize(self, key: ObjectKey) -> None:
        async with self._lock:
            if key in self._ports:
                ports = {k: p for k, p in self._ports.items() if k != key}
                await self._write(
                    self.layout.lds, lambda v: config.listeners(ports, self.layout, v), LDS_PROBE
                )
                self._ports = ports
            service = self._services.get(key)
            if service is not None:
                names = {config.cluster_name(key, group) for group in config.GROUPS}
                await self._wait_idle(names)
                services = {k: s for k, s in self._services.items() if k != key}
                await self._write(self.layout.cds, lambda v: config.clusters(services.values(), v), CDS_PROBE)
                self._services = services
            self._restore(self.layout.rds(key), None)
            self._routes.pop(key, None)

    # -- steps -----------------------------------------------------------------------------------

    async def _apply_clusters(self, route: ServiceRoute) -> None:
        """Add or update this canary's clusters; wait for in-flight requests of groups that lost an upstream.

        A changed STATIC cluster is replaced: new requests only reach the new endpoints at once, and
        requests in flight finish on the old ones. Waiting until the cluster has nothing in flight means
        the caller may stop a removed upstream as soon as this returns.
        """
        old = self._services.get(route.key)
        shrunk: set[str] = set()
        if old is not None:
            for group in config.GROUPS:
                if set(getattr(old, group)) - set(getattr(route, group)):
                    shrunk.add(config.cluster_name(route.key, group))
        services = {**self._services, route.key: route}
        await self._write(self.layout.cds, lambda v: config.clusters(services.values(), v), CDS_PROBE)
        self._services = services
        if shrunk:
            await self._wait_idle(shrunk)

    async def _apply_listener(self, key: ObjectKey, port: int) -> None:
        ports = {**self._ports, key: port}
        try:
            await self._write(self.layout.lds, lambda v: config.listeners(ports, self.layout, v), LDS_PROBE)
        except RouterError as exc:
            if key not in self._ports:  # a listener that never existed leaves no route file behind
                self._restore(self.layout.rds(key), None)
            raise RouterError(f"listener for {key} on 127.0.0.1:{port} not applied: {exc}") from exc
        self._ports = ports
        # The new listener's first RDS load must have come through too.
        rds_path = self.layout.rds(key)
        accepted = self._accepted[rds_path]
        version = json.loads(accepted.content)["version_info"]
        status = await self._confirm(_rds_probe(key), version, 0)
        if status != "ok":
            raise RouterError(f"routes of {key} were not taken by Envoy: {status}")

    async def _write(self, path: Path, render: Callable[[str], Any], probe: Probe) -> None:
        """Write one xDS file and wait until Envoy confirms it; on refusal restore the previous file."""
        previous = self._accepted.get(path)
        version = self._next_version()
        data = render(version)
        if previous is not None and previous.body == _body(data):
            return
        baseline = await self._rejections(probe)
        log_offset = self._process.log_size() if self._process is not None else 0
        try:
            content = write_json_atomic(path, data, self.layout.tmp)
        except OSError as exc:  # nothing was renamed into place: Envoy still runs the previous file
            raise RouterError(
                f"could not write the new {probe.what} (kept the previous ones): {exc}"
            ) from exc
        status = await self._confirm(probe, version, baseline)
        if status == "ok":
            self._remember(path, content)
            return
        self._restore(path, previous)
        reason = self._rejection_reason(log_offset) if status == "rejected" else status
        raise RouterError(f"Envoy refused the new {probe.what} (kept the previous ones): {reason}")

    async def _confirm(self, probe: Probe, version: str, baseline: int | None) -> str:
        """ "ok", "rejected", or a description of why it could not be confirmed in time."""
        stats_filter = f"^({re.escape(probe.version_stat)}|{re.escape(probe.rejected_stat)})$"
        deadline = time.monotonic() + CONFIRM_TIMEOUT_S
        last_error = "no answer"
        while time.monotonic() < deadline:
            try:
                stats = await self._require_admin().stats(stats_filter)
            except AdminError as exc:  # Envoy may be restarting; it will read the new file when it is back
                last_error = str(exc)
            else:
                if stat_text(stats, probe.version_stat) == version:
                    return "ok"
                if baseline is not None and stat_int(stats, probe.rejected_stat) > baseline:
                    return "rejected"
            await asyncio.sleep(POLL_S)
        return f"not confirmed within {CONFIRM_TIMEOUT_S}s ({last_error})"

    async def _rejections(self, probe: Probe) -> int | None:
        try:
            stats = await self._require_admin().stats(f"^{re.escape(probe.rejected_stat)}$")
        except AdminError:
            return None
        return stat_int(stats, probe.rejected_stat)

    def _rejection_reason(self, offset: int) -> str:
        text = self._process.log_tail(offset) if self._process is not None else ""
        reasons = [line.split("rejected: ", 1)[1] for line in text.splitlines() if "rejected: " in line]
        return reasons[-1].strip() if reasons else (text.strip().splitlines() or ["no reason logged"])[-1]

    async def _wait_idle(self, clusters: set[str]) -> None:
        """Bounded wait until the clusters have no request in flight, before an upstream goes away."""
        names = "|".join(re.escape(c) for c in sorted(clusters))
        stats_filter = rf"^cluster\.({names})\.upstream_rq_active$"
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while True:
            try:
                stats = await self._require_admin().stats(stats_filter)
                if all(stat_int(stats, f"cluster.{c}.upstream_rq_active") == 0 for c in clusters):
                    return
            except AdminError as exc:
                log.warning("could not read in-flight requests: %s", exc)
            if time.monotonic() >= deadline:
                log.warning(
                    "requests to %s still in flight after %ss; going on", sorted(clusters), DRAIN_TIMEOUT_S
                )
                return
            await asyncio.sleep(0.02)

    # -- helpers ---------------------------------------------------------------------------------

    async def _admin_call(self, call: Callable[[AdminClient], Any]) -> Any:
        try:
            return await call(self._require_admin())
        except AdminError as exc:
            raise RouterError(str(exc)) from exc

    def _require_process(self) -> EnvoyProcess:
        if self._process is None:
            raise RouterError("the Envoy router is not started")
        return self._process

    def _check_port(self, key: ObjectKey, port: int) -> None:
        """A listener port another process holds is an error naming it, before Envoy is asked to bind it."""
        if bindable(port) is not None:
            return
        holders = procfs.port_holders(port)
        if any(pid == self.pid for pid, _ in holders):
            return  # our own Envoy: it will answer for its own listeners
        who = ", ".join(f"pid {pid} ({cmd})" for pid, cmd in holders) or "a process we cannot see"
        raise RouterError(f"listener for {key}: port 127.0.0.1:{port} is held by {who}")

    def _require_admin(self) -> AdminClient:
        if self._admin is None:
            raise RouterError("the Envoy router is not started")
        return self._admin

    def _next_version(self) -> str:
        self._seq += 1
        return f"{self._epoch}-{self._seq}"

    def _restore(self, path: Path, previous: _Accepted | None) -> None:
        """Put back the last accepted file (or none), so the disk again holds what Envoy runs."""
        if previous is None:
            path.unlink(missing_ok=True)
            self._accepted.pop(path, None)
        else:
            replace_atomic(path, previous.content, self.layout.tmp)

    def _remember(self, path: Path, content: bytes) -> None:
        self._accepted[path] = _Accepted(content, _body(json.loads(content)))

    def _restarted(self, message: str) -> None:
        log.warning(message)
        if self.on_event is not None:
            self.on_event("EnvoyRestarted", message)


def _body(data: Any) -> Any:
    return {k: v for k, v in data.items() if k != "version_info"}
