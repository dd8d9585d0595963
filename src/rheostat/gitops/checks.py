"""Rules across objects that no single schema can state, checked on the whole desired state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from rheostat.flags.store import FlagSetError, FlagSource, FlagStore, source_of
from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.flags import FeatureFlag, FlagSet
from rheostat.model.load import FieldError, Manifest, ManifestError
from rheostat.model.workload import Workload


@dataclass
class Index:
    """What the cross-object rules need of everything applied, by owner, kept up to date as owners apply."""

    workloads: dict[str, str] = field(default_factory=dict)  # workload key -> owner
    ports: dict[int, tuple[str, str]] = field(default_factory=dict)  # port -> (canary key, owner)
    flag_sets: dict[str, tuple[frozenset[str], str]] = field(
        default_factory=dict
    )  # "Kind ns/name" -> (keys, owner)
    owned: dict[str, list[Manifest]] = field(default_factory=dict)

    def add(self, obj: Manifest, owner: str) -> None:
        if isinstance(obj, Workload):
            self.workloads[str(obj.metadata.key)] = owner
        elif isinstance(obj, Canary):
            if obj.spec.service is not None:
                self.ports[obj.spec.service.port] = (str(obj.metadata.key), owner)
        elif isinstance(obj, FlagSet | FeatureFlag):
            self.flag_sets[_flag_set_id(obj)] = (frozenset(obj.config.flags), owner)
        else:
            return
        self.owned.setdefault(owner, []).append(obj)

    def replace(self, owner: str, objects: Iterable[Manifest]) -> None:
        """An owner applied a new revision: forget what it had, remember what it has."""
        for old in self.owned.pop(owner, []):
            if isinstance(old, Workload) and self.workloads.get(str(old.metadata.key)) == owner:
                del self.workloads[str(old.metadata.key)]
            elif (
                isinstance(old, Canary)
                and old.spec.service is not None
                and self.ports.get(old.spec.service.port, ("", ""))[1] == owner
            ):
                del self.ports[old.spec.service.port]
            elif (
                isinstance(old, FlagSet | FeatureFlag)
                and self.flag_sets.get(_flag_set_id(old), ("", ""))[1] == owner
            ):
                del self.flag_sets[_flag_set_id(old)]
        for obj in objects:
            self.add(obj, owner)


def check_references(
    objects: Iterable[Manifest], source: str, index: Index | None = None, owner: str = ""
) -> None:
    """`objects` are the candidate revision of `owner`; `index` holds what every owner applied."""
    objects = list(objects)
    index = index or Index()
    own = {o.metadata.key for o in objects if isinstance(o, Workload)}
    ports: dict[int, str] = {}
    flag_keys: dict[str, str] = {}
    flag_sets = {
        _flag_set_id(x): frozenset(x.config.flags) for x in objects if isinstance(x, FlagSet | FeatureFlag)
    }
    for o in objects:
        if not isinstance(o, Canary):
            continue
        ref = o.spec.targetRef
        where = f"Canary {o.metadata.key}"
        if o.spec.is_flag:
            _check_flag_target(o, flag_sets, index, owner, source, own, flag_keys)
            continue
        if ref.kind != "Workload":
            raise ManifestError(
                source,
                where,
                [
                    FieldError(
                        "spec.targetRef.kind",
                        f"{ref.kind} targets need the kubernetes platform; the local platform runs "
                        "`rheostat.dev/v1alpha1` Workload targets",
                    )
                ],
            )
        target = object_key(o.metadata.namespace, ref.name)
        if target not in own and index.workloads.get(target, owner) == owner:
            raise ManifestError(
                source, where, [FieldError("spec.targetRef.name", f"Workload {target} is not declared")]
            )
        port = o.spec.the_service.port
        taken = ports.get(port) or next(
            (c for c, w in [index.ports.get(port, ("", owner))] if w != owner), None
        )
        if taken:
            raise ManifestError(
                source,
                where,
                [FieldError("spec.service.port", f"port {port} is already used by Canary {taken}")],
            )
        ports[port] = o.metadata.key


def _flag_set_id(obj: FlagSet | FeatureFlag) -> str:
    return f"{obj.kind} {obj.metadata.key}"


def _check_flag_target(
    o: Canary,
    mine: dict[str, frozenset[str]],  # this revision's flag sets: "Kind ns/name" -> their flag keys
    index: Index,
    owner: str,
    source: str,
    workloads: set[ObjectKey],
    taken: dict[str, str],
) -> None:
    """The flag set must be declared and hold the flag; one Canary per flag; the app must be declared."""
    assert o.spec.flag is not None  # the model requires it for flag targets
    where = f"Canary {o.metadata.key}"
    ref, key = o.spec.targetRef, o.spec.flag.key
    wanted = f"{ref.kind} {object_key(o.metadata.namespace, ref.name)}"
    keys = mine.get(wanted)
    if keys is None:
        keys, by = index.flag_sets.get(wanted, (None, owner))
        if by == owner:  # what this owner applied before is replaced by this revision
            keys = None
    if keys is None:
        raise ManifestError(source, where, [FieldError("spec.targetRef.name", f"{wanted} is not declared")])
    if key not in keys:
        raise ManifestError(source, where, [FieldError("spec.flag.key", f"{wanted} has no flag {key!r}")])
    if key in taken:
        raise ManifestError(
            source,
            where,
            [FieldError("spec.flag.key", f"flag {key!r} is already rolled out by Canary {taken[key]}")],
        )
    taken[key] = o.metadata.key
    app = o.spec.flag.appRef
    if app is not None:
        target = object_key(o.metadata.namespace, app.name)
        if target not in workloads and index.workloads.get(target, owner) == owner:
            raise ManifestError(
                source, where, [FieldError("spec.flag.appRef.name", f"Workload {target} is not declared")]
            )


def check_flags(objects: Iterable[Manifest], others: Iterable[FlagSource]) -> None:
    """A flag key served by two flag sets would answer differently by the order they load: refuse it."""
    mine = [source_of(o) for o in objects if isinstance(o, FlagSet | FeatureFlag)]
    if not mine:
        return
    try:
        FlagStore().replace([*others, *mine])
    except FlagSetError as exc:
        raise ManifestError(exc.where, exc.where, [FieldError("", exc.message)]) from exc
