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
from typing import Any

from pydantic import ValidationError

from rheostat.flags.evaluate import ERROR, FLAG_NOT_FOUND, Context, FlagSetEvaluator, Resolution
from rheostat.model.flags import FeatureFlag, FlagdConfig, FlagSet, FlagType
from rheostat.store import Store

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
class _State:
    version: int = 0
    etag: str = '"0"'
    evaluators: Mapping[str, FlagSetEvaluator] = field(default_factory=dict)  # flag key -> its set
    infos: Mapping[str, FlagInfo] = field(default_factory=dict)


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
        evaluator = self._state.evaluators.get(key)
        if evaluator is None:
            return Resolution(key, default, False, None, ERROR, {}, FLAG_NOT_FOUND, f"flag {key!r} not found")
        return evaluator.evaluate(key, context, flag_type, default)

    def evaluate_all(self, context: Context | None = None) -> list[Resolution]:
        """Every flag (disabled ones included, as flagd's bulk evaluation does), sorted by key."""
        state = self._state
        ctx = context.to_openfeature() if context is not None else None
        return [state.evaluators[k].evaluate(k, ctx) for k in sorted(state.evaluators)]

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
            etag = (
                '"' + _digest({"flags": {k: i.digest for k, i in infos.items()}, "sets": set_meta})[:32] + '"'
            )
            if not changed and etag == old.etag:
                return None
            self._state = _State(old.version + 1, etag, evaluators, infos)
            change = FlagChange(old.version + 1, etag, tuple(changed), self._clock())
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


# -- from the objects of the store ------------------------------------------------------------------------------


def revision_of(source: str) -> str:
    """The reconciler writes an object's source as "Kustomization ns/name@<revision>"."""
    return source.rsplit("@", 1)[1] if "@" in source else ""


def source_of(obj: FlagSet | FeatureFlag, revision: str = "") -> FlagSource:
    return FlagSource(f"{obj.kind} {obj.metadata.key}", obj.config, revision)


def sources_from_store(store: Store) -> list[FlagSource]:
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
