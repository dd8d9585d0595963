"""What survives a controller crash: declared workloads, promoted templates, scales and the replicas left
running (pid, /proc start time, port, revision), which the next controller adopts.

Written as JSON through a temporary file and a rename, so a crash leaves the old or the new file, never half.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, NotRequired, TypedDict, cast

log = logging.getLogger(__name__)

STATE_VERSION = 1


class ProcessRecord(TypedDict):
    key: NotRequired[str]  # the workload; records written before adoption existed lack it (never adopted)
    group: str
    index: int
    pid: int
    port: int
    revision: str
    start_ticks: int | None  # /proc start time, to tell our process from a recycled pid


class WorkloadRecord(TypedDict):
    workload: dict[str, Any]  # the declared Workload, as JSON
    managed: bool
    primary_template: dict[str, Any] | None  # the promoted template; None until the primary exists
    primary_scale: int | None  # None = the workload's spec.replicas
    canary_scale: int | None


class StateFile(TypedDict):
    version: int
    controller_pid: int
    workloads: dict[str, WorkloadRecord]
    processes: list[ProcessRecord]


def empty_state() -> StateFile:
    return {"version": STATE_VERSION, "controller_pid": os.getpid(), "workloads": {}, "processes": []}


def load_state(path: Path) -> StateFile:
    """The saved state; an empty one if there is none. An unreadable file is kept aside, not lost."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return empty_state()
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError(
                f"unsupported state version {data.get('version') if isinstance(data, dict) else '?'}"
            )
    except ValueError as exc:
        aside = path.with_suffix(".corrupt")
        os.replace(path, aside)
        log.error("state file %s unreadable (%s); moved to %s, starting empty", path, exc, aside)
        return empty_state()
    return cast(StateFile, data)  # written only by save_state, and the version matches


def save_state(path: Path, state: StateFile) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
