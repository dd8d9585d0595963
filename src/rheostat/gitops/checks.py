"""Rules across objects that no single schema can state, checked on the whole desired state."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from rheostat.flags.store import FlagSetError, FlagSource, FlagStore, source_of
from rheostat.model.base import ObjectKey, object_key
from rheostat.model.canary import Canary
from rheostat.model.flags import FeatureFlag, FlagSet
from rheostat.model.load import FieldError, Manifest, ManifestError
from rheostat.model.metric_template import MetricTemplate
from rheostat.model.workload import Workload
from rheostat.plugins.metrics import sources
from rheostat.plugins.registry import UnknownPlugin
from rheostat.rollout.backends import EMBEDDED, Catalogue
from rheostat.rollout.judges import BUILTIN

RESOLVE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Finding:
    """One cross-object problem: the object ("Kind ns/name"), the field and what is wrong."""

    obj: str
    field: str
    message: str
    warning: bool = False
    at: int = -1  # the object's position in the checked list (two files may declare one name)


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
    objects: Iterable[Manifest],
    source: str,
    index: Index | None = None,
    owner: str = "",
    files: Mapping[str, str] | None = None,
    catalogue: Catalogue = EMBEDDED,
) -> None:
    """`objects` are the candidate revision of `owner`; `index` holds what every owner applied.

    ManifestError for the first object with an error, naming its file (from `files`, "Kind ns/name" -> file)
    and every wrong field. Warnings do not refuse a revision.
    """
    errors = [f for f in find_problems(objects, index, owner, catalogue=catalogue) if not f.warning]
    if errors:
        first = errors[0].obj
        raise ManifestError(
            (files or {}).get(first, source),
            first,
            [FieldError(f.field, f.message) for f in errors if f.obj == first],
        )


def find_problems(
    objects: Iterable[Manifest],
    index: Index | None = None,
    owner: str = "",
    resolve: Callable[[str], str | None] | None = None,
    catalogue: Catalogue = EMBEDDED,
) -> list[Finding]:
    """Every cross-object problem of a revision; `resolve(host)` (validate only) says why a host does not resolve.
    `catalogue`: what the Canaries must run on (the embedded default, or a cluster for `validate --cluster`)."""
    revision = _Revision(list(objects), index or Index(), owner, resolve, catalogue)
    return [
        dataclasses.replace(f, at=at) for at, o in enumerate(revision.objects) for f in revision.problems(o)
    ]


@dataclass
class _Revision:
    objects: list[Manifest]
    index: Index
    owner: str
    resolve: Callable[[str], str | None] | None
    catalogue: Catalogue = EMBEDDED
    ports: dict[int, str] = field(default_factory=dict)  # port -> Canary, in this revision
    flag_keys: dict[str, str] = field(default_factory=dict)  # flag key -> the Canary rolling it out

    def __post_init__(self) -> None:
        self.workloads = {o.metadata.key for o in self.objects if isinstance(o, Workload)}
        self.flag_sets = {
            _flag_set_id(x): frozenset(x.config.flags)
            for x in self.objects
            if isinstance(x, FlagSet | FeatureFlag)
        }

    def problems(self, o: Manifest) -> list[Finding]:
        if isinstance(o, MetricTemplate):
            return _template_problems(o)
        if not isinstance(o, Canary):
            return []
        where = f"Canary {o.metadata.key}"
        found = [Finding(where, f, m) for f, m in _metric_problems(o)]
        found += _webhook_problems(o, where, self.resolve)
        return found + [Finding(where, f, m) for f, m in self._target_problems(o)]

    def _target_problems(self, o: Canary) -> list[tuple[str, str]]:
        # GitOps applies to the embedded default (Workloads behind Envoy, flags): a Deployment target or a
        # mesh provider cannot run there, and is refused by field rather than ignored.
        if unavailable := self.catalogue.problems(o):
            return [(u.field, u.message) for u in unavailable]
        if o.spec.is_flag:
            return _flag_target_problems(
                o, self.flag_sets, self.index, self.owner, self.workloads, self.flag_keys
            )
        ref = o.spec.targetRef
        if ref.kind != "Workload":  # a cluster's Deployment: the cluster says at run time whether it exists
            return []
        target = object_key(o.metadata.namespace, ref.name)
        if target not in self.workloads and self.index.workloads.get(target, self.owner) == self.owner:
            return [("spec.targetRef.name", f"Workload {target} is not declared")]
        port = o.spec.the_service.port
        taken = self.ports.get(port) or next(
            (c for c, w in [self.index.ports.get(port, ("", self.owner))] if w != self.owner), None
        )
        if taken:
            return [("spec.service.port", f"port {port} is already used by Canary {taken}")]
        self.ports[port] = o.metadata.key
        return []


def _metric_problems(o: Canary) -> list[tuple[str, str]]:
    out = []
    for i, m in enumerate(o.spec.the_analysis.metrics):
        if m.templateRef is None and m.query is None and m.name not in BUILTIN:
            out.append(
                (
                    f"spec.analysis.metrics[{i}].name",
                    f"{m.name!r} is not a builtin metric and has no templateRef or query; builtin metrics: "
                    + ", ".join(BUILTIN),
                )
            )
    return out


def _webhook_problems(o: Canary, where: str, resolve: Callable[[str], str | None] | None) -> list[Finding]:
    out = []
    for i, hook in enumerate(o.spec.the_analysis.webhooks):
        field = f"spec.analysis.webhooks[{i}].url"
        try:
            url = urlsplit(hook.url)
            url.port  # noqa: B018  (raises on a port that is not a number in range)
        except ValueError as exc:
            out.append(Finding(where, field, f"{hook.url!r} is not a URL: {exc}"))
            continue
        if url.scheme not in ("http", "https") or not url.hostname:
            out.append(Finding(where, field, f"{hook.url!r} is not an http:// or https:// URL with a host"))
            continue
        reason = resolve(url.hostname) if resolve is not None else None
        if reason is not None:
            # Not an error: DNS where the controller runs may differ; a hook that cannot connect fails its check.
            out.append(Finding(where, field, reason, warning=True))
    return out


def resolve_host(host: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> str | None:
    """None if `host` resolves (an IP, a name in /etc/hosts or in DNS) within `timeout_s`, else why not."""
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host)
        return None
    outcome: list[OSError | None] = []

    def look_up() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    # A daemon thread: a resolver that hangs neither blocks the caller past the bound nor the process exit.
    thread = threading.Thread(target=look_up, name=f"resolve {host}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        return f"host {host!r} did not resolve within {timeout_s:g}s"
    error = outcome[0]
    return None if error is None else f"host {host!r} does not resolve: {error.strerror or error}"


def _flag_set_id(obj: FlagSet | FeatureFlag) -> str:
    return f"{obj.kind} {obj.metadata.key}"


def _flag_target_problems(
    o: Canary,
    mine: dict[str, frozenset[str]],  # this revision's flag sets: "Kind ns/name" -> their flag keys
    index: Index,
    owner: str,
    workloads: set[ObjectKey],
    taken: dict[str, str],
) -> list[tuple[str, str]]:
    """The flag set must be declared and hold the flag; one Canary per flag; the app must be declared."""
    assert o.spec.flag is not None  # the model requires it for flag targets
    ref, key = o.spec.targetRef, o.spec.flag.key
    wanted = f"{ref.kind} {object_key(o.metadata.namespace, ref.name)}"
    keys = mine.get(wanted)
    if keys is None:
        keys, by = index.flag_sets.get(wanted, (None, owner))
        if by == owner:  # what this owner applied before is replaced by this revision
            keys = None
    if keys is None:
        return [("spec.targetRef.name", f"{wanted} is not declared")]
    if key not in keys:
        return [("spec.flag.key", f"{wanted} has no flag {key!r}")]
    if key in taken:
        return [("spec.flag.key", f"flag {key!r} is already rolled out by Canary {taken[key]}")]
    taken[key] = o.metadata.key
    app = o.spec.flag.appRef
    if app is not None:
        target = object_key(o.metadata.namespace, app.name)
        if target not in workloads and index.workloads.get(target, owner) == owner:
            return [("spec.flag.appRef.name", f"Workload {target} is not declared")]
    return []


def check_flags(objects: Iterable[Manifest], others: Iterable[FlagSource]) -> None:
    """A flag key served by two flag sets would answer differently by the order they load: refuse it."""
    mine = [source_of(o) for o in objects if isinstance(o, FlagSet | FeatureFlag)]
    if not mine:
        return
    try:
        FlagStore().replace([*others, *mine])
    except FlagSetError as exc:
        raise ManifestError(exc.where, exc.where, [FieldError("", exc.message)]) from exc


def _template_problems(template: MetricTemplate) -> list[Finding]:
    """The provider type is one Rheostat has, and the template has what that provider needs."""
    where, spec = f"MetricTemplate {template.metadata.key}", template.spec.provider
    if spec.type == "builtin":
        return []
    try:
        kind = sources.kind_of(spec.type)
    except UnknownPlugin:
        message = f"provider type {spec.type!r} is not supported; supported: " + ", ".join(
            sources.supported()
        )
        return [Finding(where, "spec.provider.type", message)]
    return [Finding(where, f"spec.provider.{f}", m) for f, m in kind.problems(spec)]
