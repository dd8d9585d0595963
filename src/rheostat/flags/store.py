"""The flags in force: every flag set of the applied revision, swapped in all at once.

`FlagStore.replace` takes the flag sets of one revision. If any of them cannot be loaded (a flag key declared in
two sets, an evaluator that refuses a set), the whole revision is refused with `FlagSetError` and the previous
flags keep serving. Each flag remembers the revision that last changed its definition. Subscribers hear of
every change (for OFREP's server-sent events).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

from pydantic import ValidationError

from rheostat.flags.evaluate import ERROR, FLAG_NOT_FOUND, Context, FlagSetEvaluator, Resolution
from rheostat.model.flags import FeatureFlag, FlagdConfig, FlagSet, FlagType
from rheostat.store.port import State

FLAG_OBJECT_KINDS = ("FlagSet", "FeatureFlag")


class FlagSetError(Exception):
    """A revision whose flags cannot be served; `where` names the flag set (and flag) at fault."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class FlagSource:
    """One flag set of a revision: `name` is how errors and `flag_set` name it ("FlagSet default/x")."""

    name: str
    config: FlagdConfig
    revision: str = ""


@dataclass(frozen=True)
class FlagInfo:
    key: str
    flag_set: str
    flag_type: FlagType
    state: str
    default_variant: str | None
    variants: tuple[str, ...]
    revision: str  # the revision that last changed this flag's definition
    digest: str


@dataclass(frozen=True)
class FlagChange:
    """What subscribers are told: the new version and ETag, and which keys were added, changed or removed."""

    version: int
    etag: str
    changed: tuple[str, ...]
    at: float


@dataclass(frozen=True)
class Pinned:
    """A flag's primary definition during a rollout: a one-flag set (with its set's evaluators)."""

    config: FlagdConfig
    digest: str  # the FlagInfo.digest the definition had in Git
    evaluator: FlagSetEvaluator


@dataclass(frozen=True)
class _State:
    version: int = 0
    etag: str = '"0"'
    evaluators: Mapping[str, FlagSetEvaluator] = field(default_factory=dict)  # flag key -> its set
    infos: Mapping[str, FlagInfo] = field(default_factory=dict)
    configs: Mapping[str, FlagdConfig] = field(default_factory=dict)  # flag key -> its set's config
    git_etag: str = '"0"'
    primaries: Mapping[str, Pinned] = field(default_factory=dict)
    splits: Mapping[str, int] = field(default_factory=dict)  # flag key -> percent served Git's definition
    killed: Mapping[str, FlagSetEvaluator] = field(default_factory=dict)  # flag key -> DISABLED copy

    @property
    def special(self) -> bool:
        return bool(self.primaries or self.killed)


def bucket(key: str, targeting_key: str) -> int:
    """0..99, sticky per (flag, targeting key); salted so it does not follow the flag's own `fractional`."""
    digest = hashlib.blake2b(
        f"{key}\0{targeting_key}".encode(), digest_size=8, person=b"rheostat-split"
    ).digest()
    return int.from_bytes(digest, "big") % 100


def one_flag(config: FlagdConfig, key: str, **changes: Any) -> FlagdConfig:
    """The flag `key` of a set alone, with the set's evaluators and metadata (and some fields changed)."""
    flag = config.flags[key]
    if changes:
        flag = flag.model_copy(update=changes)
    return config.model_copy(update={"flags": {key: flag}})


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class FlagStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._state = _State()
        self._lock = threading.Lock()  # serialises writers; readers take the current _State as a whole
        self._subscribers: list[Callable[[FlagChange], None]] = []

    # -- reading --------------------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._state.version

    @property
    def etag(self) -> str:
        """A strong ETag of the flag configuration in force (quoted, as HTTP writes it)."""
        return self._state.etag

    def keys(self) -> list[str]:
        return sorted(self._state.infos)

    def flags(self) -> list[FlagInfo]:
        state = self._state
        return [state.infos[k] for k in sorted(state.infos)]

    def get(self, key: str) -> FlagInfo | None:
        return self._state.infos.get(key)

    def evaluate(
        self, key: str, context: Context | None = None, flag_type: FlagType | None = None, default: Any = None
    ) -> Resolution:
        state = self._state
        evaluator = state.evaluators.get(key)
        if evaluator is None:
            return Resolution(key, default, False, None, ERROR, {}, FLAG_NOT_FOUND, f"flag {key!r} not found")
        if state.special:
            evaluator = _serving(state, key, evaluator, context.targeting_key if context else None)
        return evaluator.evaluate(key, context, flag_type, default)

    def evaluate_all(self, context: Context | None = None) -> list[Resolution]:
        """Every flag (disabled ones included, as flagd's bulk evaluation does), sorted by key."""
        state = self._state
        ctx = context.to_openfeature() if context is not None else None
        if not state.special:
            return [state.evaluators[k].evaluate(k, ctx) for k in sorted(state.evaluators)]
        tk = context.targeting_key if context else None
        return [
            _serving(state, k, state.evaluators[k], tk).evaluate(k, ctx) for k in sorted(state.evaluators)
        ]

    # -- rollouts and the kill switch -----------------------------------------------------------------------

    def primary(self, key: str) -> Pinned | None:
        return self._state.primaries.get(key)

    def split(self, key: str) -> int:
        return self._state.splits.get(key, 0)

    def rolling_out(self, key: str) -> bool:
        """Git's definition differs from the primary: only the split's share of users gets it."""
        state = self._state
        pinned, info = state.primaries.get(key), state.infos.get(key)
        return pinned is not None and info is not None and pinned.digest != info.digest

    def killed(self, key: str) -> bool:
        return key in self._state.killed

    def pin(self, key: str) -> Pinned:
        """Make Git's definition of `key` the primary (first sight, and promotion); the split goes to 0."""

        def change(state: _State) -> dict[str, Any]:
            if key not in state.infos:
                raise KeyError(key)
            config = one_flag(state.configs[key], key)
            pinned = Pinned(config, state.infos[key].digest, FlagSetEvaluator(config))
            splits = {k: v for k, v in state.splits.items() if k != key}
            return {"primaries": {**state.primaries, key: pinned}, "splits": splits}

        self._update(key, change)
        return self._state.primaries[key]

    def restore(self, key: str, config: FlagdConfig, digest: str, split: int) -> None:
        """Put back a primary kept across a restart."""
        pinned = Pinned(config, digest, FlagSetEvaluator(config))
        self._update(
            key,
            lambda s: {"primaries": {**s.primaries, key: pinned}, "splits": {**s.splits, key: split}},
        )

    def unpin(self, key: str) -> None:
        """No rollout any more (its Canary is gone): Git's definition serves everyone."""
        self._update(
            key,
            lambda s: {
                "primaries": {k: v for k, v in s.primaries.items() if k != key},
                "splits": {k: v for k, v in s.splits.items() if k != key},
            },
        )

    def set_split(self, key: str, percent: int) -> None:
        if not 0 <= percent <= 100:
            raise ValueError(f"split {percent} is outside 0..100")
        self._update(
            key, lambda s: None if s.splits.get(key, 0) == percent else {"splits": {**s.splits, key: percent}}
        )

    def disable(self, key: str) -> None:
        """The kill switch: `key` answers DISABLED at once, for everyone, whatever Git or a rollout says."""

        def change(state: _State) -> dict[str, Any]:
            if key not in state.configs:
                raise KeyError(key)
            evaluator = FlagSetEvaluator(one_flag(state.configs[key], key, state="DISABLED"))
            return {"killed": {**state.killed, key: evaluator}}

        self._update(key, change)

    def enable(self, key: str) -> None:
        """Lift the kill switch: Git's definition (and any rollout) serves again."""
        self._update(
            key,
            lambda s: (
                {"killed": {k: v for k, v in s.killed.items() if k != key}} if key in s.killed else None
            ),
        )

    def _update(self, key: str, change: Callable[[_State], dict[str, Any] | None]) -> None:
        """Swap in the state `change` makes of the current one (None: nothing to do); answers for `key` moved."""
        with self._lock:
            old = self._state
            fields = change(old)
            if fields is None:
                return
            new = dc_replace(old, version=old.version + 1, **fields)
            self._state = new = dc_replace(new, etag=_overlay_etag(new))
            subscribers = list(self._subscribers)
        event = FlagChange(new.version, new.etag, (key,), self._clock())
        for notify in subscribers:
            notify(event)

    # -- writing --------------------------------------------------------------------------------------------

    def replace(self, sources: Iterable[FlagSource]) -> FlagChange | None:
        """The flag sets of one revision, all or nothing. Returns the change, or None if nothing changed."""
        sources = list(sources)
        with self._lock:
            old = self._state
            evaluators: dict[str, FlagSetEvaluator] = {}
            infos: dict[str, FlagInfo] = {}
            owner: dict[str, str] = {}
            for src in sorted(sources, key=lambda s: s.name):
                for key in src.config.flags:
                    if key in owner:
                        raise FlagSetError(
                            f"{src.name}: flag {key}", f"flag key {key!r} is also declared in {owner[key]}"
                        )
                    owner[key] = src.name
                try:
                    evaluator = FlagSetEvaluator(src.config)
                except Exception as exc:  # flagd-core refused what our model accepted: refuse the revision
                    raise FlagSetError(src.name, f"the evaluator refused the flag set: {exc}") from exc
                flagd = src.config.to_flagd()
                for key, flag in src.config.flags.items():
                    digest = _digest(
                        {
                            "flag": flagd["flags"][key],
                            "evaluators": flagd.get("$evaluators", {}),
                            "set": src.name,
                        }
                    )
                    before = old.infos.get(key)
                    revision = (
                        before.revision if before is not None and before.digest == digest else src.revision
                    )
                    evaluators[key] = evaluator
                    infos[key] = FlagInfo(
                        key=key,
                        flag_set=src.name,
                        flag_type=flag.flag_type,
                        state=flag.state,
                        default_variant=flag.defaultVariant or None,
                        variants=tuple(flag.variants),
                        revision=revision,
                        digest=digest,
                    )
            changed = sorted(
                {k for k in infos if k not in old.infos or old.infos[k].digest != infos[k].digest}
                | {k for k in old.infos if k not in infos}
            )
            set_meta = {s.name: s.config.metadata for s in sources}
            git_etag = (
                '"' + _digest({"flags": {k: i.digest for k, i in infos.items()}, "sets": set_meta})[:32] + '"'
            )
            if not changed and git_etag == old.git_etag:
                return None
            configs = {key: src.config for src in sources for key in src.config.flags}
            killed = {  # a killed flag stays off; its DISABLED copy follows Git's new definition
                k: FlagSetEvaluator(one_flag(configs[k], k, state="DISABLED")) if k in changed else v
                for k, v in old.killed.items()
                if k in configs
            }
            new = dc_replace(
                old,
                version=old.version + 1,
                evaluators=evaluators,
                infos=infos,
                configs=configs,
                git_etag=git_etag,
                killed=killed,
            )
            self._state = dc_replace(new, etag=_overlay_etag(new))
            change = FlagChange(new.version, self._state.etag, tuple(changed), self._clock())
            subscribers = list(self._subscribers)
        for notify in subscribers:
            notify(change)
        return change

    def subscribe(self, callback: Callable[[FlagChange], None]) -> Callable[[], None]:
        """Call `callback` after every change (from the thread that made it); returns the unsubscribe."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe


def _serving(state: _State, key: str, git: FlagSetEvaluator, targeting_key: str | None) -> FlagSetEvaluator:
    """Which definition answers `key` for this targeting key: kill switch, then rollout, then Git."""
    killed = state.killed.get(key)
    if killed is not None:
        return killed
    pinned = state.primaries.get(key)
    if pinned is None or pinned.digest == state.infos[key].digest:
        return git
    share = state.splits.get(key, 0)
    if targeting_key is not None and share > 0 and bucket(key, targeting_key) < share:
        return git
    return pinned.evaluator


def _overlay_etag(state: _State) -> str:
    if not state.special and not state.splits:
        return state.git_etag
    overlay = {
        "git": state.git_etag,
        "primaries": {k: p.digest for k, p in state.primaries.items()},
        "splits": dict(state.splits),
        "killed": sorted(state.killed),
    }
    return '"' + _digest(overlay)[:32] + '"'


# -- from the objects of the store ------------------------------------------------------------------------------


def revision_of(source: str) -> str:
    """The reconciler writes an object's source as "Kustomization ns/name@<revision>"."""
    return source.rsplit("@", 1)[1] if "@" in source else ""


def source_of(obj: FlagSet | FeatureFlag, revision: str = "") -> FlagSource:
    return FlagSource(f"{obj.kind} {obj.metadata.key}", obj.config, revision)


def sources_from_store(store: State) -> list[FlagSource]:
    """Every FlagSet and FeatureFlag object in the store, with the revision that last wrote it.

    Raises FlagSetError for a stored body that no longer parses (it names the object and field)."""
    out: list[FlagSource] = []
    for kind, model in (("FlagSet", FlagSet), ("FeatureFlag", FeatureFlag)):
        for stored in store.list_objects(kind):
            try:
                obj = model.model_validate(stored.body)
            except ValidationError as exc:
                first = exc.errors()[0]
                path = ".".join(str(p) for p in first["loc"])
                raise FlagSetError(f"{kind} {stored.key}", f"{path}: {first['msg']}") from exc
            assert isinstance(obj, FlagSet | FeatureFlag)
            out.append(source_of(obj, revision_of(stored.source)))
    return out
