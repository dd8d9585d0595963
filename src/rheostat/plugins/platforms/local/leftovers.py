"""Replicas a previous controller left running: which can be adopted, and ending the rest.

A replica is adopted only if it is the very process recorded (pid and /proc start time), of a declared
workload and group, and nothing outside its session holds its port. One on an older revision than its group
runs now (a rolling update the crash interrupted) is adopted too: it keeps serving until the update replaces
it, as it would have without the crash. Anything else that
carries this data dir's marker in its environment is ended, so nothing is orphaned for good.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rheostat.plugins.platforms.local import procfs
from rheostat.plugins.platforms.local.process import MARKER_ENV
from rheostat.plugins.platforms.local.state import ProcessRecord, load_state, save_state


@dataclass(frozen=True)
class Found:
    """A live replica that matches the state file."""

    key: str
    group: str
    index: int
    port: int
    pid: int
    ticks: int | None
    revision: str  # what it runs, which may be older than its group's template


def _port_ok(pid: int, port: int) -> bool:
    return all(procfs.session_of(holder) == pid for holder, _ in procfs.port_holders(port))


def adoptable(records: list[ProcessRecord], revisions: Mapping[tuple[str, str], str | None]) -> list[Found]:
    """The records that name a live replica worth keeping; `revisions` is what each (key, group) runs."""
    found: dict[tuple[str, str, int], Found] = {}
    for rec in records:
        key = rec.get("key")
        if key is None or revisions.get((key, rec["group"])) is None:
            continue
        slot = (key, rec["group"], rec["index"])
        if slot in found or not procfs.same_process(rec["pid"], rec["start_ticks"]):
            continue
        if _port_ok(rec["pid"], rec["port"]):
            found[slot] = Found(
                key, rec["group"], rec["index"], rec["port"], rec["pid"], rec["start_ticks"], rec["revision"]
            )
    return list(found.values())


def to_end(data_dir: Path, records: list[ProcessRecord], keep: set[int]) -> list[int]:
    """Sessions to end: recorded replicas still alive and not kept, and any process marked with this data
    dir's logs folder (a replica started just before a crash, or a child it left) outside the kept ones."""
    sessions = {
        rec["pid"]
        for rec in records
        if rec["pid"] not in keep and procfs.same_process(rec["pid"], rec["start_ticks"])
    }
    for pid in procfs.marked(MARKER_ENV, f"{(data_dir / 'logs').absolute()}/"):
        sid = procfs.session_of(pid)
        if sid is not None and sid not in keep:
            sessions.add(sid)
    return sorted(s for s in sessions if procfs.session_members(s))


def end_all(data_dir: Path, grace_s: float) -> list[int]:
    """`rheostat down`: end every replica this data dir's controller left running; the sessions ended.

    The declared workloads stay in the state file, so the next start launches them again.
    """
    state_path = data_dir / "state.json"
    state = load_state(state_path)
    sessions = to_end(data_dir, state["processes"], set())
    procfs.kill_sessions(sessions, grace_s)
    if state["processes"]:
        state["processes"] = []
        save_state(state_path, state)
    return sessions
