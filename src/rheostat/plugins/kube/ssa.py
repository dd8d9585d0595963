"""Server-side apply as the fakes emulate it (MemoryKube and the kmock test server): field ownership per
manager at the level of leaves, lists atomic. Enough for what Rheostat relies on: a field the manager applied
before and now omits is removed, a field another manager set to another value is a conflict unless forced,
`status` and identity metadata are never applied through the main resource."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from typing import Any

from rheostat.plugins.kube.api import Obj

Path = tuple[str, ...]
Owners = dict[str, set[Path]]  # manager -> the leaves it owns
_METADATA_FIELDS = ("labels", "annotations")  # the only metadata a client applies


def leaves(obj: Mapping[str, Any], prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    for k, v in obj.items():
        if isinstance(v, Mapping) and v:
            yield from leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def applied_leaves(config: Obj, *, status_apart: bool) -> dict[Path, Any]:
    """The leaves of an applied configuration a manager comes to own."""
    out: dict[Path, Any] = {}
    for path, value in leaves(config):
        if path[0] in ("apiVersion", "kind") or (status_apart and path[0] == "status"):
            continue
        if path[0] == "metadata" and (len(path) < 3 or path[1] not in _METADATA_FIELDS):
            continue
        out[path] = value
    return out


def _get(obj: Mapping[str, Any], path: Path) -> Any:
    node: Any = obj
    for k in path:
        if not isinstance(node, Mapping) or k not in node:
            return None
        node = node[k]
    return node


def _set(obj: Obj, path: Path, value: Any) -> None:
    node = obj
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = copy.deepcopy(value)


def _remove(obj: Obj, path: Path) -> None:
    parents = [obj]
    for k in path[:-1]:
        child = parents[-1].get(k)
        if not isinstance(child, dict):
            return
        parents.append(child)
    parents[-1].pop(path[-1], None)
    for depth in range(len(path) - 1, 0, -1):  # prune the dicts the removal left empty
        if not parents[depth]:
            parents[depth - 1].pop(path[depth - 1], None)


def conflicts(old: Obj, fields: Mapping[Path, Any], manager: str, owners: Owners) -> list[str]:
    """'spec.x (owned by m)' for each field another manager owns with another value."""
    return [
        f"{'.'.join(path)} (owned by {other})"
        for path, value in fields.items()
        for other, owned in sorted(owners.items())
        if other != manager and path in owned and _get(old, path) != value
    ]


def apply(old: Obj, config: Obj, manager: str, owners: Owners, *, force: bool, status_apart: bool) -> Obj:
    """The object after `manager` applies `config`; `owners` is updated in place. Call `conflicts` first."""
    fields = applied_leaves(config, status_apart=status_apart)
    for other, owned in owners.items():
        if other != manager and force:
            owned -= {p for p, v in fields.items() if _get(old, p) != v}
    kept = set().union(*(owned for other, owned in owners.items() if other != manager))
    new = copy.deepcopy(old)
    for path in owners.get(manager, set()) - set(fields) - kept:
        _remove(new, path)
    for path, value in fields.items():
        _set(new, path, value)
    owners[manager] = set(fields)
    return new


def record_update(old: Obj, new: Obj, manager: str, owners: Owners, *, status_apart: bool) -> None:
    """A PUT or merge patch by `manager`: the leaves it changed move to it."""
    before = applied_leaves(old, status_apart=status_apart)
    changed = {p for p, v in applied_leaves(new, status_apart=status_apart).items() if before.get(p) != v}
    if not changed:
        return
    for owned in owners.values():
        owned -= changed
    owners.setdefault(manager, set()).update(changed)


def spec_changed(old: Obj, new: Obj, *, status_apart: bool) -> bool:
    """Whether metadata.generation moves: anything but metadata (and status, when it is a subresource)."""
    skip = {"metadata", "status"} if status_apart else {"metadata"}
    return {k: v for k, v in old.items() if k not in skip} != {k: v for k, v in new.items() if k not in skip}
