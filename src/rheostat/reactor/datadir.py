"""One controller per data dir: an exclusive lock on `<data-dir>/controller.lock`, taken before anything else.

The lock is `flock` on an open file, so it goes away with the process however it ends; the file holds the
pid for the message a second controller prints. Within one process the lock is shared (`rheostat run` takes
it before building the controller, whose start() takes it again).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

LOCK_NAME = "controller.lock"


class DataDirInUse(Exception):
    """Another process holds the data dir."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(f"data dir {data_dir} is in use by another controller (pid {holder})")
        self.data_dir = data_dir
        self.holder = holder


_held: dict[Path, tuple[IO[str], int]] = {}  # resolved data dir -> (open lock file, users in this process)


def holder(data_dir: Path) -> str | None:
    """The pid holding the data dir, or None if nobody does (does not take it)."""
    path = Path(data_dir) / LOCK_NAME
    if Path(data_dir).resolve() in _held:
        return str(os.getpid())
    try:
        fh = open(path)  # noqa: SIM115
    except OSError:
        return None
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return fh.read().strip() or "?"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def acquire(data_dir: Path) -> None:
    """Take the data dir (creating it), or raise DataDirInUse naming the holder's pid."""
    key = Path(data_dir).resolve()
    if key in _held:
        fh, users = _held[key]
        _held[key] = (fh, users + 1)
        return
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    fh = open(Path(data_dir) / LOCK_NAME, "a+")  # noqa: SIM115  # held until release()
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.seek(0)
        who = fh.read().strip() or "?"
        fh.close()
        raise DataDirInUse(Path(data_dir), who) from None
    fh.truncate(0)
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    _held[key] = (fh, 1)


def release(data_dir: Path) -> None:
    key = Path(data_dir).resolve()
    if key not in _held:
        return
    fh, users = _held[key]
    if users > 1:
        _held[key] = (fh, users - 1)
        return
    del _held[key]
    fh.close()  # the pid stays in the file; only the lock tells whether someone holds it
