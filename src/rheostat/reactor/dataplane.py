"""`rheostat down`: end the data plane (Envoy and every replica) a controller left running on a data dir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rheostat.plugins.platforms.local import leftovers
from rheostat.plugins.routers.envoy.process import end_leftover
from rheostat.plugins.routers.envoy.router import PIDFILE
from rheostat.reactor import datadir

GRACE_S = 5.0


@dataclass(frozen=True)
class Ended:
    envoy: int | None  # its pid
    replicas: list[int]  # their session ids (each replica's pid)


def down(data_dir: Path) -> Ended:
    """Refused (DataDirInUse) while a controller holds the data dir; it is taken for the time this runs."""
    if not data_dir.is_dir():
        return Ended(None, [])
    datadir.acquire(data_dir)
    try:
        replicas = leftovers.end_all(data_dir / "platform", GRACE_S)
        envoy = end_leftover(data_dir / "envoy" / PIDFILE, GRACE_S)
    finally:
        datadir.release(data_dir)
    return Ended(envoy, replicas)
