"""A canary's release history and what is live now, for the dashboard and `GET .../runs`.

Runs are read from the canary's events: a run starts with NewRevision (not the one Initialized records in
the same tick) and ends with Promoted, Rollback or Cancelled, or when the next run replaces it. Events and
history rows hold no version or commit, so what a run rolled out (version, commit, author, message) is
recorded when it starts (`ReleaseRecorder`), in one `Release` state row per canary.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rheostat.gitops.reconciler import SOURCE
from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary, Strategy
from rheostat.model.workload import ProcessTemplate
from rheostat.reactor.controller import Controller
from rheostat.rollout.engine import CANARY, target_of
from rheostat.rollout.strategy import WAITING_EVIDENCE
from rheostat.rollout.types import RUNNING, CanaryStatus, Phase
from rheostat.rollout.weights import next_step_weight
from rheostat.store.sqlite import EventRecord
from rheostat.util.durations import parse_duration

RELEASE = "Release"  # state kind: {"runs": {<event id>: revision info}}, one row per canary
KEEP = 200  # revisions recorded per canary
ENDS = {"Promoted": "promoted", "Rollback": "rolled back", "Cancelled": "cancelled", "InitFailed": "failed"}
GATES = ("confirm-rollout", "confirm-traffic-increase", "confirm-promotion")
_VERSION_FLAG = re.compile(r"^--?(?:version|tag)(?:=(.+))?$")
_VERSION_ENV = ("VERSION", "APP_VERSION", "IMAGE_TAG", "IMAGE")


def version_of(template: dict[str, Any]) -> str:
    """A Workload template's version as people name it: `--version X` in the command, or a VERSION-like
    variable; "" when it has none (the page then shows the template hash)."""
    command = [str(p) for p in template.get("command") or []]
    for i, part in enumerate(command):
        m = _VERSION_FLAG.match(part)
        if m:
            if m.group(1):
                return m.group(1)
            if i + 1 < len(command):
                return command[i + 1]
    env = template.get("env") or {}
    return next((str(env[k]) for k in _VERSION_ENV if env.get(k)), "")


_AUTHORS: dict[tuple[str, str], str] = {}  # (artifact path, commit) -> author, once known


def git_author(artifact_path: str, commit: str) -> str:
    """The commit's author from the source's cache (`<workdir>/cache.git` beside its artifacts).

    Remembered once found: a commit's author never changes, and every canary that one commit starts asks for
    it on the loop's thread (a release of 500 canaries was 500 `git log` runs, now one)."""
    found = _AUTHORS.get((artifact_path, commit))
    if found is None:
        found = _read_author(artifact_path, commit)
        if found and len(_AUTHORS) < 1000:
            _AUTHORS[(artifact_path, commit)] = found
    return found


def _read_author(artifact_path: str, commit: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{7,64}", commit):
        return ""
    for parent in Path(artifact_path).parents:
        cache = parent / "cache.git"
        if (cache / "HEAD").exists():
            try:
                out = subprocess.run(
                    ["git", f"--git-dir={cache}", "log", "-1", "--format=%an", commit],
                    capture_output=True,
                    text=True,
                    timeout=5,
                    check=False,
                )
            except (OSError, subprocess.SubprocessError):
                return ""
            return out.stdout.strip() if out.returncode == 0 else ""
    return ""


def declares(kind: str, template: dict[str, Any], revision: str) -> bool:
    """Whether a stored Workload's template is `revision`; other kinds are taken as they are."""
    if kind != "Workload":
        return True
    try:
        return ProcessTemplate.model_validate(template).revision() == revision
    except ValueError:
        return False


def revision_info(ctl: Controller, canary: Canary, revision: str) -> dict[str, Any]:
    """What the target declares now, as a release: version, commit, author and commit message."""
    info: dict[str, Any] = {"revision": revision, "version": "", "commit": "", "author": "", "message": ""}
    stored = ctl.store.get_object(canary.spec.targetRef.kind, target_of(canary))
    if stored is None:
        return info
    template = (stored.body.get("spec") or {}).get("template") or {}
    if not isinstance(template, dict) or not declares(stored.kind, template, revision):
        return info  # the target moved on already (changed while initializing): only the hash is known
    info["version"] = version_of(template)
    _, _, commit = stored.source.partition("@")  # "Kustomization ns/name@main@sha1:<sha>"
    info["commit"] = commit
    sha = commit.rpartition(":")[2] if commit else ""
    for src in ctl.store.list_states(SOURCE).values():
        artifact = src.get("artifact") or {}
        if artifact.get("revision") == commit and commit:
            info["message"] = str(artifact.get("message") or "")
            info["author"] = git_author(str(artifact.get("path") or ""), sha)
            break
    return info


class ReleaseRecorder:
    """Records what each run rolls out when it starts. It hears of new Canary events from a store watcher;
    watchers must not write, so the recording is done on the loop's next turn."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        newest = ctl.store.events(limit=1)
        self.start_id = newest[-1].id if newest else 0  # events before this server started are not ours
        self.seen: dict[str, int] = {}
        self.pending: set[str] = set()
        self.unwatch: Callable[[], None] = ctl.store.watch(self._heard)

    def _heard(self, changes: frozenset[tuple[str, str]]) -> None:
        keys = {key for kind, key in changes if kind == "event"}
        if not keys:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self.pending:
            loop.call_soon(self.flush)
        self.pending |= keys

    def flush(self) -> None:
        keys, self.pending = self.pending, set()
        for key in keys:
            try:
                self.record(key)
            except Exception:  # a canary that does not parse (the engine reports it) is not recorded
                continue

    def record(self, key: str) -> None:
        events = self.ctl.store.events(kind=CANARY, key=key, after=self.seen.get(key, self.start_id))
        if not events:
            return
        self.seen[key] = events[-1].id
        starts = [e for e in events if e.reason in ("NewRevision", "Initialized")]
        if not starts:
            return
        canary = self.ctl.engine.canary(ObjectKey(key))
        if canary is None:
            return
        status = self.ctl.engine.status(ObjectKey(key))
        row = self.ctl.store.get_state(RELEASE, key) or {"runs": {}}
        for e in starts:
            revision = status.last_promoted_spec if e.reason == "Initialized" else status.last_applied_spec
            row["runs"][str(e.id)] = revision_info(self.ctl, canary, revision)
        keep = sorted(row["runs"], key=int)[-KEEP:]
        row["runs"] = {k: row["runs"][k] for k in keep}
        with self.ctl.store.transaction():
            self.ctl.store.put_state(RELEASE, key, row)


def _manual(e: EventRecord) -> list[str]:
    """The requests of a ManualRequest event ("requested by hand: rollback=True")."""
    return re.findall(r"(\w+)=True", e.message)


def runs(
    ctl: Controller, key: str, limit: int = 50, events_read: int = 5000
) -> tuple[list[dict[str, Any]], list[EventRecord]]:
    """The canary's runs, newest first (revision, start, end, duration, outcome and why), and the events it
    read (the newest `events_read`), oldest first."""
    recorded: dict[str, Any] = (ctl.store.get_state(RELEASE, key) or {}).get("runs", {})
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    init_ts: float | None = None

    def close(run: dict[str, Any], e: EventRecord, outcome: str, why: str = "") -> None:
        run.update(end=e.ts, endEvent=e.id, outcome=outcome, reason=why)
        run["duration"] = e.ts - run["start"]

    events = ctl.store.events(kind=CANARY, key=key, limit=events_read)
    for e in events:
        if e.reason == "Initialized":
            init_ts = e.ts
            continue
        if e.reason == "NewRevision" and e.ts != init_ts:
            if current is not None and current["outcome"] == "running":
                close(current, e, "superseded", "a newer revision replaced it")
            info = recorded.get(str(e.id)) or {"revision": "", "version": "", "commit": ""}
            current = {
                "id": e.id,
                "start": e.ts,
                "end": None,
                "duration": None,
                "outcome": "running",
                "reason": "",
                "by": "",
                "approvedBy": "",
                "endEvent": None,
                **info,
            }
            out.append(current)
            continue
        if current is None or current["outcome"] != "running":
            continue
        if e.reason == "ManualRequest":
            asked = _manual(e)
            if "rollback" in asked or "promote" in asked:
                current.update(by="by hand, through the API", byTs=e.ts)  # the API knows no names
            if "approve" in asked:
                current.update(approvedBy="by hand, through the API", approvedTs=e.ts)
        elif e.reason in ENDS:
            why = e.message.split(": ", 1)[1] if e.reason == "Rollback" and ": " in e.message else e.message
            if e.reason == "Promoted" and "skipped" not in e.message:
                why = ""  # "promoted" says it all; a skipped analysis is worth saying
            close(current, e, ENDS[e.reason], why)
            if e.reason == "Rollback" and "by hand" in e.message:
                current["outcome"] = "aborted"
    return out[::-1][:limit], events


class RunCache:
    """`runs` of the canaries whose pages are open, kept while the canary has no newer event and its recorded
    revisions are unchanged: a canary page asks again at every event, and cutting 5000 events costs ~40 ms."""

    SIZE = 16

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.kept: dict[str, tuple[int, dict[str, Any], list[dict[str, Any]], list[EventRecord]]] = {}

    def get(self, key: str) -> tuple[list[dict[str, Any]], list[EventRecord]]:
        """Every run cut from the newest events (up to 1000 runs), and those events."""
        newest = self.ctl.store.events(kind=CANARY, key=key, limit=1)
        newest_id = newest[-1].id if newest else 0
        recorded = self.ctl.store.get_state(RELEASE, key) or {}
        kept = self.kept.get(key)
        if kept is None or kept[0] != newest_id or kept[1] != recorded:
            found, events = runs(self.ctl, key, limit=1000)
            self.kept.pop(key, None)
            if len(self.kept) >= self.SIZE:
                self.kept.pop(next(iter(self.kept)))
            kept = self.kept[key] = (newest_id, recorded, found, events)
        return kept[2], kept[3]


def run_events(all_runs: list[dict[str, Any]], events: list[EventRecord], run: int) -> list[EventRecord]:
    """The events of one run (0: the newest), from its start to its end."""
    found = next((r for r in all_runs if r["id"] == run or run == 0), None)
    if found is None:
        return []
    end = found["endEvent"] if found["endEvent"] is not None else float("inf")
    return [e for e in events if found["id"] <= e.id <= end]


def _gate_names(canary: Canary) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {g: [] for g in GATES}
    for hook in canary.spec.the_analysis.webhooks:
        if hook.kind in names:
            names[hook.kind].append(hook.name)  # names only: a hook's URL may carry a secret
    return names


def waiting_on(canary: Canary, st: CanaryStatus, manual: dict[str, Any]) -> list[str]:
    """What the run waits for now, in words."""
    names = _gate_names(canary)
    out = []
    if st.phase is Phase.WAITING:
        out.append(f"approval to start (confirm-rollout: {', '.join(names['confirm-rollout']) or 'hook'})")
    if st.phase is Phase.WAITING_PROMOTION:
        hooks = ", ".join(names["confirm-promotion"]) or "hook"
        out.append(f"approval to promote (confirm-promotion: {hooks})")
    if "(confirm-traffic-increase)" in st.message:
        hooks = ", ".join(names["confirm-traffic-increase"]) or "hook"
        out.append(f"approval to increase traffic (confirm-traffic-increase: {hooks})")
    if manual.get("halt"):
        out.append("unhalt: halted by hand, checks go on, traffic stays")
    if manual.get("paused"):
        out.append("resume: paused by hand, no ticks at all")
    if WAITING_EVIDENCE in st.message:
        out.append("conclusive evidence from the sequential judge")
    if "waiting for traffic to measure" in st.message:
        out.append("traffic to measure (no data yet)")
    if "waiting for the canary" in st.message or "waiting for the primary" in st.message:
        out.append(st.message.split(": ", 1)[0].removeprefix(f"{canary.metadata.name} ").strip())
    return out


def next_step(canary: Canary, st: CanaryStatus, weight: int) -> str:
    """The step the next passing tick takes."""
    a = canary.spec.the_analysis
    if st.phase not in RUNNING:
        return ""
    if st.phase is Phase.WAITING:
        return "start the run once approved"
    if st.phase in (Phase.PROMOTING, Phase.FINALISING):
        return "finish the promotion (all traffic back on the primary, which runs the new revision)"
    if st.phase is Phase.WAITING_PROMOTION:
        return "promote once approved"
    total = a.iterations or 0
    if a.strategy is Strategy.CANARY:
        if weight >= a.max_weight:
            return "promote"
        step = next_step_weight(a, weight)
        if a.mirror and weight == 0 and not st.mirrored:
            return f"mirror {a.mirrorWeight or 100}% of requests to the canary"
        return f"canary weight {min(weight + step, 100)}%"
    if st.iterations < total:
        return f"iteration {st.iterations + 1} of {total}"
    if a.strategy is Strategy.BLUE_GREEN and st.iterations == total:
        return "switch all traffic to the canary"
    return "promote"


def live(ctl: Controller, canary: Canary, history: dict[str, Any], ts: float | None) -> dict[str, Any]:
    """What users are served now and what comes next."""
    key = canary.metadata.key
    st = ctl.engine.status(ObjectKey(key))
    manual = ctl.store.get_manual(key)
    a = canary.spec.the_analysis
    weight = int(history.get("canaryWeight", st.canary_weight))
    running = st.phase in RUNNING
    match = (
        [m.model_dump(exclude_none=True) for m in a.match or ()]
        if a.strategy is Strategy.AB_TESTING and running and st.iterations > 0
        else []
    )
    mirror = bool(history.get("mirror", False)) and running
    recorded: dict[str, Any] = (ctl.store.get_state(RELEASE, key) or {}).get("runs", {})

    def info(revision: str) -> dict[str, Any]:
        newest = max((int(k) for k, v in recorded.items() if v.get("revision") == revision), default=None)
        return recorded[str(newest)] if newest is not None else {"revision": revision}

    interval = parse_duration(a.interval)
    paused = bool(manual.get("paused")) or canary.spec.suspend
    return {
        "strategy": a.strategy.value,
        "phase": st.phase.value,
        "primaryWeight": int(history.get("primaryWeight", 100 - weight)),
        "canaryWeight": weight,
        "mirror": mirror,
        "mirrorWeight": (a.mirrorWeight or 100) if mirror else 0,
        "match": match,
        "switched": a.strategy is Strategy.BLUE_GREEN and running and weight == 100,
        "primary": info(st.last_promoted_spec),
        "canary": info(st.last_applied_spec) if running else None,
        "next": "" if paused else next_step(canary, st, weight),
        "nextDue": (ts + interval) if running and ts is not None and not paused else None,
        "interval": interval,
        "waitingOn": waiting_on(canary, st, manual) if running or manual.get("paused") else [],
        "manual": {k: v for k, v in manual.items() if v},
    }


__all__ = ["RELEASE", "ReleaseRecorder", "RunCache", "live", "run_events", "runs", "version_of"]
