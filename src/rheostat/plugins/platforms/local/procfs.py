"""Facts about processes from /proc, and ending whole sessions of them.

Each replica runs in its own session (start_new_session), so its session id is its pid and every process it
forks shares it: killing the session leaves nothing behind, even children that outlive the replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may contain spaces; fields after it are plain.
    return text[text.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot): with the pid, it names one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def session_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[3]) if fields else None


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that may never reap it (an orphan in a container)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is `sid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields and fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def signal_session(sid: int, signum: int) -> None:
    """Signal the process group led by `sid` and any stragglers that left the group but not the session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(sid, signum)
    for pid in session_members(sid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def kill_sessions(sids: list[int], grace_s: float) -> None:
    """SIGTERM the sessions, SIGKILL whatever is left after `grace_s`. Blocking; for start-up clean-up."""
    sids = [sid for sid in sids if session_members(sid)]
    for sid in sids:
        signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(session_members(sid) for sid in sids):
        time.sleep(0.05)
    for sid in sids:
        if session_members(sid):
            signal_session(sid, signal.SIGKILL)


def cmdline(pid: int, limit: int = 200) -> str:
    """The command line of a process, as one line (empty when it is gone or not readable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:limit]


def same_process(pid: int, ticks: int | None) -> bool:
    """The pid is alive and still the process that was recorded (not a recycled pid)."""
    return alive(pid) and ticks is not None and start_ticks(pid) == ticks


def marked(name: str, value_prefix: str) -> list[int]:
    """Live processes whose environment has `name=<something under value_prefix>` (our own processes only)."""
    needle = f"{name}=".encode()
    prefix = value_prefix.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in env.split(b"\0"):
            if item.startswith(needle) and item[len(needle) :].startswith(prefix):
                if alive(int(entry.name)):
                    found.append(int(entry.name))
                break
    return found


def _listening_inodes(port: int) -> set[str]:
    """Inodes of sockets listening on `port`, on any address (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; the inode is field 9
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes holding a listening socket on `port` that we may look at."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not wanted:
        return []
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target in wanted:
                holders.append((int(entry.name), cmdline(int(entry.name))))
                break
    return sorted(holders)


def write_pidfile(path: Path, pid: int) -> None:
    """Record a process we leave running: its pid and /proc start time, through a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"pid": pid, "start_ticks": start_ticks(pid)}) + "\n")
    os.replace(tmp, path)


def read_pidfile(path: Path) -> int | None:
    """The recorded pid if that very process is still alive, else None (a recycled pid is never returned)."""
    try:
        data = json.loads(path.read_text())
        pid, ticks = int(data["pid"]), data["start_ticks"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if same_process(pid, ticks) else None


async def wait_gone(pid: int, ticks: int | None, within_s: float | None, every_s: float = 0.05) -> bool:
    """Wait until a process that need not be our child ends (a zombie counts as ended); False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = None if within_s is None else loop.time() + within_s
    while same_process(pid, ticks):
        if deadline is not None and loop.time() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return True
