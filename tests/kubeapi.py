"""A Kubernetes API server for tests: kmock's HTTP server, request parsing, request log and discovery, plus the
API semantics Rheostat relies on and plain kmock lacks (../shared/notes/k8s_testing.md §2.1):

- metadata.uid / resourceVersion / generation / creationTimestamp filled by the server; generation moves on
  spec changes only; a write that changes nothing changes no resourceVersion;
- 409 on a write with a stale resourceVersion, 409 AlreadyExists on a duplicate create; PUT;
- the status subresource kept apart: a write to /status changes only status, a main write never does;
- server-side apply (application/apply-patch+yaml) with field ownership per manager (`rheostat.plugins.kube.ssa`),
  recorded with its content type, field manager and force; strategic merge refused (415) on custom resources;
- server-side dry-run (`dryRun=All`): validated and answered, nothing stored; `validators` refuse writes as
  the API server's schema or an admission webhook would (422 with the field in the message and causes);
- label selectors on list and watch; watches that resume from a resourceVersion, `drop_watches()` to end every
  stream as the API server's timeout does, `compact()` so an old resourceVersion answers 410 Gone;
- `uninstall(kind)`: its resource answers 404 (the CRD is not installed); `fail(...)`: the next N requests
  answer 403 / 409 / 429 / 500; `calls` logs every resource request, `verbs()` counts them.

The test plays the kubelet with `set_status(kind, ns, name, status)`.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import pytest
import yaml
from kmock._internal import parsing
from kmock._internal.rendering import Response  # renders a streamed payload; not in kmock.__all__

from rheostat.plugins.kube import kinds, ssa
from rheostat.plugins.kube.api import Kind, Obj, WatchType
from rheostat.plugins.kube.memory import merge, now

Key = tuple[str, str, str]  # (apiVersion/plural, namespace, name)
_parse_path = parsing.parse_path


def _parse_namespaces(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads `/api/v1/namespaces` (the Namespaces themselves) as a namespace without a name and
    fails with a 500; a real server lists them. Only that path is read differently."""
    if path.strip("/") == "api/v1/namespaces":
        return parsing.ParsedPath("", "v1", "namespaces", None, None, None)
    return _parse_path(path)


parsing.parse_path = _parse_namespaces
_SUBRESOURCES = ("status", "scale")


@dataclass(frozen=True)
class Call:
    verb: str  # get, list, watch, create, update, patch, delete
    kind: Kind | None  # None: a resource the server does not serve
    namespace: str
    name: str
    subresource: str
    content_type: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class Applied:
    kind: Kind
    namespace: str
    name: str
    content_type: str
    field_manager: str
    force: bool


@dataclass
class _Fault:
    status: int
    times: int
    verb: str | None
    kind: Kind | None
    retry_after: float | None


class Refused(Exception):
    def __init__(
        self, code: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, dict(details or {})


def selects(labels: Mapping[str, str], selector: str) -> bool:
    """Whether `labels` satisfy a label selector: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b)."""
    for term in (t.strip() for t in re.split(r",(?![^(]*\))", selector) if t.strip()):
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s*\(([^)]*)\)", term):
            values = {v.strip() for v in m[3].split(",")}
            if (labels.get(m[1]) in values) != (m[2] == "in"):
                return False
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w.-]*)", term):
            if (labels.get(m[1]) == m[3]) != (m[2] != "!="):
                return False
        elif m := re.fullmatch(r"(!?)([\w./-]+)", term):
            if (m[2] in labels) == bool(m[1]):
                return False
        else:
            raise Refused(400, "BadRequest", f"unable to parse requirement: {term!r}")
    return True


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(body).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _status_body(code: int, reason: str, message: str, details: Mapping[str, Any] | None = None) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": dict(details or {}),
    }


def _what(kind: Kind) -> str:
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


@attrs.define(kw_only=True)
class KubeServer(kmock.KubernetesScaffold):
    kinds: dict[tuple[str, str], Kind] = attrs.field(factory=dict, init=False)  # (apiVersion, plural)
    store: dict[Key, Obj] = attrs.field(factory=dict, init=False)
    owners: dict[Key, ssa.Owners] = attrs.field(factory=dict, init=False)
    calls: list[Call] = attrs.field(factory=list, init=False)
    applies: list[Applied] = attrs.field(factory=list, init=False)
    version: int = attrs.field(default=0, init=False)
    history: list[tuple[int, Kind, WatchType, Obj]] = attrs.field(factory=list, init=False)
    compacted: int = attrs.field(default=0, init=False)
    _faults: list[_Fault] = attrs.field(factory=list, init=False)
    _wakeups: set[asyncio.Event] = attrs.field(factory=set, init=False)
    _drops: int = attrs.field(default=0, init=False)
    # each write (dry-run or not) is shown to these first; one that returns a Refused refuses it
    validators: list[Callable[[Kind, Obj], Refused | None]] = attrs.field(factory=list, init=False)
    _dry: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for kind in kinds.ALL:
            self.install(kind)

    # -- what a test does -------------------------------------------------------------------------

    def install(self, kind: Kind) -> None:
        self.kinds[(kind.api_version, kind.plural)] = kind
        self.resources[kmock.resource(kind.group, kind.version, kind.plural)] = kmock.ResourceInfo(
            kind=kind.kind,
            namespaced=kind.namespaced,
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"} if kind.status else set(),
        )

    def uninstall(self, kind: Kind) -> None:
        """The resource answers 404, as when its CRD is not installed; its objects are gone."""
        self.kinds.pop((kind.api_version, kind.plural), None)
        del self.resources[kmock.resource(kind.group, kind.version, kind.plural)]
        for key in [k for k in self.store if k[0] == f"{kind.api_version}/{kind.plural}"]:
            del self.store[key]

    def fail(
        self,
        status: int,
        times: int = 1,
        *,
        verb: str | None = None,
        kind: Kind | None = None,
        retry_after: float | None = None,
    ) -> None:
        """The next `times` requests (of `verb` on `kind`, when given) answer `status`."""
        self._faults.append(_Fault(status, times, verb, kind, retry_after))

    def set_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> None:
        """Play the kubelet or a controller: replace an object's status."""
        key = self._key(kind, namespace, name)
        new = copy.deepcopy(self.store[key])
        new["status"] = copy.deepcopy(status)
        self._commit(kind, key, new, "MODIFIED")

    def add(self, obj: Obj, *, manager: str = "kubectl") -> Obj:
        """Create an object as another client would (`manager` comes to own its fields)."""
        kind = next(
            k for k in self.kinds.values() if (k.api_version, k.kind) == (obj["apiVersion"], obj["kind"])
        )
        meta = obj["metadata"]
        return self._create(kind, meta.get("namespace", "default"), obj, manager)

    def object(self, kind: Kind, namespace: str, name: str) -> Obj | None:
        found = self.store.get(self._key(kind, namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def drop_watches(self) -> None:
        """End every open watch stream, as the API server does when its request timeout passes."""
        self._drops += 1
        for wake in self._wakeups:
            wake.set()

    def compact(self) -> None:
        """Forget the history: a watch from an older resourceVersion answers 410 Gone."""
        self.compacted = self.version
        self.history.clear()

    def verbs(self) -> Counter[str]:
        return Counter(call.verb for call in self.calls)

    # -- storage ----------------------------------------------------------------------------------

    def _key(self, kind: Kind, namespace: str, name: str) -> Key:
        return (f"{kind.api_version}/{kind.plural}", namespace if kind.namespaced else "", name)

    def refuse_invalid(self, kind: Kind, field: str, bad: Callable[[Obj], bool], message: str) -> None:
        """Writes of `kind` for which `bad(obj)` holds are refused (422 Invalid, naming `field`)."""

        def check(of: Kind, obj: Obj) -> Refused | None:
            if of != kind or not bad(obj):
                return None
            name = obj.get("metadata", {}).get("name", "")
            text = f'{kind.kind}.{kind.group or "core"} "{name}" is invalid: {field}: {message}'
            causes = [{"reason": "FieldValueInvalid", "message": message, "field": field}]
            return Refused(422, "Invalid", text, {"name": name, "kind": kind.kind, "causes": causes})

        self.validators.append(check)

    def writes(self) -> list[Call]:
        """The requests that change something (a dry-run does not)."""
        return [
            c
            for c in self.calls
            if c.verb in ("create", "update", "patch", "delete") and c.params.get("dryRun") != "All"
        ]

    def _establish(self, crd: Obj) -> None:
        """What the apiextensions controller does: the CRD's kind is served, and the CRD says Established."""
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        for version in spec.get("versions") or []:
            if version.get("served", True):
                self.install(
                    Kind(
                        f"{spec['group']}/{version['name']}",
                        names["kind"],
                        names["plural"],
                        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                        status="status" in (version.get("subresources") or {}),
                    )
                )
        crd["status"] = {
            "acceptedNames": names,
            "conditions": [{"type": t, "status": "True"} for t in ("NamesAccepted", "Established")],
        }

    def _validate(self, kind: Kind, obj: Obj) -> None:
        for check in self.validators:
            if (refused := check(kind, obj)) is not None:
                raise refused

    def _commit(self, kind: Kind, key: Key, obj: Obj, event: WatchType) -> Obj:
        if self._dry:  # validated and answered as it would be stored; nothing is kept
            if event != "DELETED":
                self._validate(kind, obj)
            return copy.deepcopy(obj)
        if event != "DELETED":
            self._validate(kind, obj)
            if kind.kind == "CustomResourceDefinition":
                self._establish(obj)
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        if event == "DELETED":
            self.store.pop(key, None)
            self.owners.pop(key, None)
        else:
            self.store[key] = obj
        self.history.append((self.version, kind, event, copy.deepcopy(obj)))
        for wake in self._wakeups:
            wake.set()
        return copy.deepcopy(obj)

    def _create(self, kind: Kind, namespace: str, body: Obj, manager: str) -> Obj:
        meta = body.get("metadata") or {}
        name = meta.get("name") or (meta.get("generateName", "") + uuid.uuid4().hex[:5])
        if not name:
            raise Refused(422, "Invalid", "metadata.name: Required value")
        key = self._key(kind, namespace, name)
        if key in self.store:
            raise Refused(
                409,
                "AlreadyExists",
                f'{_what(kind)} "{name}" already exists',
                {"name": name, "group": kind.group, "kind": kind.plural},
            )
        new = copy.deepcopy(body)
        if kind.status:
            new.pop("status", None)
        new["metadata"] = {k: v for k, v in meta.items() if k not in ("resourceVersion", "generateName")}
        new["metadata"].update(name=name, uid=str(uuid.uuid4()), generation=1, creationTimestamp=now())
        if kind.namespaced:
            new["metadata"]["namespace"] = namespace
        ssa.record_update({}, new, manager, self._owners(key), status_apart=kind.status)
        return self._commit(kind, key, new, "ADDED")

    def _owners(self, key: Key) -> ssa.Owners:
        """The field owners of an object; a private copy during a dry-run."""
        if self._dry:
            return copy.deepcopy(self.owners.get(key, {}))
        return self.owners.setdefault(key, {})

    def _existing(self, kind: Kind, key: Key) -> Obj:
        if key not in self.store:
            name = key[2]
            raise Refused(
                404,
                "NotFound",
                f'{_what(kind)} "{name}" not found',
                {"name": name, "group": kind.group, "kind": kind.plural},
            )
        return self.store[key]

    def _check_version(self, kind: Kind, old: Obj, body: Obj) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted not in (None, "", old["metadata"]["resourceVersion"]):
            raise Refused(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {_what(kind)} "{old["metadata"]["name"]}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": old["metadata"]["name"], "group": kind.group, "kind": kind.plural},
            )

    def _write(self, kind: Kind, key: Key, old: Obj, new: Obj, manager: str) -> Obj:
        """Commit a main-resource or status write: generation, ownership, and nothing when nothing changed."""
        new["metadata"] = {
            **new["metadata"],
            **{k: old["metadata"][k] for k in ("uid", "creationTimestamp", "generation", "name")},
            "resourceVersion": old["metadata"]["resourceVersion"],
        }
        if kind.namespaced:
            new["metadata"]["namespace"] = old["metadata"]["namespace"]
        if ssa.spec_changed(old, new, status_apart=kind.status):
            new["metadata"]["generation"] = int(old["metadata"]["generation"]) + 1
        if new == old:
            return copy.deepcopy(old)
        ssa.record_update(old, new, manager, self._owners(key), status_apart=kind.status)
        return self._commit(kind, key, new, "MODIFIED")

    # -- HTTP -------------------------------------------------------------------------------------

    def _target(self, path: str) -> tuple[str, str, str, str, str] | None:
        """(apiVersion, plural, namespace, name, subresource) of a resource path; None for anything else."""
        parts = path.strip("/").split("/")
        if parts[:1] == ["api"] and len(parts) >= 3:
            api_version, rest = parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            api_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in _SUBRESOURCES:
            ns, rest = rest[1], rest[2:]
        else:
            ns = ""
        rest += ["", "", ""]
        return api_version, rest[0], ns, rest[1], rest[2]

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        target = self._target(request.url.path)
        if target is None:
            return await super()._handle(request)  # discovery, /version, reactions of the kmock DSL
        api_version, plural, ns, name, sub = target
        kind = self.kinds.get((api_version, plural))
        method = request.method.value.upper()
        watching = request.params.get("watch", "").lower() in ("true", "1")
        verb = {
            "GET": "get" if name else "watch" if watching else "list",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method, method.lower())
        content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
        content_type = content_type.split(";")[0].strip()
        self.calls.append(Call(verb, kind, ns, name, sub, content_type, dict(request.params)))
        try:
            for fault in self._faults:
                if (fault.verb or verb) == verb and (fault.kind or kind) == kind:
                    fault.times -= 1
                    self._faults = [f for f in self._faults if f.times > 0]
                    raise self._injected(fault, verb, kind, plural, ns, name)
            if kind is None:
                raise Refused(404, "NotFound", "the server could not find the requested resource")
            if sub and (sub != "status" or not kind.status):
                raise Refused(404, "NotFound", "the server could not find the requested resource")
            if verb == "watch":
                return await self._watch(request, kind, ns)
            self._dry = request.params.get("dryRun") == "All"
            try:  # _serve does not wait on anything: no other request runs while _dry is set
                return await self._serve(request, verb, kind, ns, name, sub, content_type)
            finally:
                self._dry = False
        except Refused as exc:
            headers = {"Retry-After": exc.details.pop("retryAfter")} if "retryAfter" in exc.details else {}
            return _json(_status_body(exc.code, exc.reason, exc.message, exc.details), exc.code, headers)

    def _injected(
        self, fault: _Fault, verb: str, kind: Kind | None, plural: str, ns: str, name: str
    ) -> Refused:
        group = kind.group if kind else ""
        details = {"retryAfter": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        if fault.status == 403:
            return Refused(
                403,
                "Forbidden",
                f'{plural}.{group} "{name}" is forbidden: User "system:serviceaccount:rheostat:rheostat" cannot '
                f'{verb} resource "{plural}" in API group "{group}" in the namespace "{ns}"',
            )
        if fault.status == 409:
            return Refused(
                409, "Conflict", f'Operation cannot be fulfilled on {plural}.{group} "{name}"', {"name": name}
            )
        if fault.status == 429:
            return Refused(429, "TooManyRequests", "the server has received too many requests", details)
        return Refused(fault.status, "InternalError", "injected failure", details)

    def _body(self, request: kmock.Request) -> Obj:
        data = request.data
        if data is None and request.text:
            data = yaml.safe_load(request.text)  # an apply body may be YAML
        if not isinstance(data, dict):
            raise Refused(400, "BadRequest", "the body is not an object")
        return data

    async def _serve(
        self, request: kmock.Request, verb: str, kind: Kind, ns: str, name: str, sub: str, content_type: str
    ) -> aiohttp.web.StreamResponse:
        key = self._key(kind, ns, name)
        manager = request.params.get("fieldManager", "unknown")
        if verb == "get":
            return _json(self._existing(kind, key))
        if verb == "list":
            return _json(self._list(kind, ns, request.params.get("labelSelector", "")))
        if verb == "create":
            return _json(self._create(kind, ns, self._body(request), manager), 201)
        if verb == "delete":
            old = copy.deepcopy(self._existing(kind, key))
            return _json(self._commit(kind, key, old, "DELETED"))
        body = self._body(request)
        if verb == "update":
            if (body.get("metadata") or {}).get("name") != name:
                raise Refused(400, "BadRequest", "the name of the object does not match the name on the URL")
            old = self._existing(kind, key)
            self._check_version(kind, old, body)
            return _json(self._write(kind, key, old, self._part(kind, old, body, sub), manager))
        if verb != "patch":
            raise Refused(405, "MethodNotAllowed", f"{verb} is not supported")
        if content_type == "application/apply-patch+yaml":
            return self._apply(request, kind, key, body, sub)
        custom = "." in kind.group and not kind.group.endswith(".k8s.io")
        if content_type == "application/strategic-merge-patch+json" and custom:
            raise Refused(
                415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources"
            )
        if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise Refused(415, "UnsupportedMediaType", f"the test server does not emulate {content_type!r}")
        old = self._existing(kind, key)
        self._check_version(kind, old, body)
        return _json(self._write(kind, key, old, self._part(kind, old, merge(old, body), sub), manager))

    def _part(self, kind: Kind, old: Obj, new: Obj, sub: str) -> Obj:
        """What a write may change: only status through /status; never status through the main resource."""
        if sub == "status":
            out = copy.deepcopy(old)
            if "status" in new:
                out["status"] = copy.deepcopy(new["status"])
            return out
        out = copy.deepcopy(new)
        if kind.status:
            out.pop("status", None)
            if "status" in old:
                out["status"] = copy.deepcopy(old["status"])
        return out

    def _apply(
        self, request: kmock.Request, kind: Kind, key: Key, body: Obj, sub: str
    ) -> aiohttp.web.Response:
        manager = request.params.get("fieldManager")
        if not manager:
            raise Refused(400, "BadRequest", "PATCH, application/apply-patch+yaml: fieldManager is required")
        force = request.params.get("force", "").lower() == "true"
        if not self._dry:
            self.applies.append(Applied(kind, key[1], key[2], "application/apply-patch+yaml", manager, force))
        old = self.store.get(key)
        if sub == "status":
            old = self._existing(kind, key)
            return _json(self._write(kind, key, old, self._part(kind, old, merge(old, body), sub), manager))
        owners = self._owners(key)
        if old is not None:
            self._check_version(kind, old, body)
            fields = ssa.applied_leaves(body, status_apart=kind.status)
            if not force and (clash := ssa.conflicts(old, fields, manager, owners)):
                raise Refused(
                    409, "Conflict", f"Apply failed with {len(clash)} conflict(s): {', '.join(clash)}"
                )
        ident = {"name": key[2], **({"namespace": key[1]} if kind.namespaced else {})}
        base = old or {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": ident}
        new = ssa.apply(base, body, manager, owners, force=force, status_apart=kind.status)
        if old is None:
            created = self._create(kind, key[1], new, manager)
            if not self._dry:
                self.owners[key] = owners
            return _json(created, 201)
        return _json(self._write(kind, key, old, new, manager))

    def _matching(self, kind: Kind, ns: str, obj: Obj, selector: str) -> bool:
        meta = obj["metadata"]
        return (not ns or meta.get("namespace") == ns) and selects(meta.get("labels") or {}, selector)

    def _list(self, kind: Kind, ns: str, selector: str) -> Obj:
        prefix = f"{kind.api_version}/{kind.plural}"
        items = [
            o
            for k, o in sorted(self.store.items())
            if k[0] == prefix and self._matching(kind, ns, o, selector)
        ]
        return {
            "apiVersion": kind.api_version,
            "kind": f"{kind.kind}List",
            "metadata": {"resourceVersion": str(self.version)},
            "items": items,
        }

    async def _watch(self, request: kmock.Request, kind: Kind, ns: str) -> aiohttp.web.StreamResponse:
        selector = request.params.get("labelSelector", "")
        since = request.params.get("resourceVersion", "")
        if since not in ("", "0") and int(since) < self.compacted:
            gone = _status_body(410, "Expired", f"too old resource version: {since} ({self.compacted})")
            return await Response(status=200, payload=iter([{"type": "ERROR", "object": gone}]))(request)
        stream = self._events(kind, ns, selector, None if since in ("", "0") else int(since))
        response = Response(status=200, headers={"Content-Type": "application/json"}, payload=stream)
        return await response(request)

    async def _events(self, kind: Kind, ns: str, selector: str, since: int | None) -> AsyncIterator[Any]:
        yield b""  # the headers go out now, as a real watch's do
        epoch, wake = self._drops, asyncio.Event()
        self._wakeups.add(wake)
        try:
            if since is None:  # no resourceVersion: every object as ADDED, then what comes
                since = self.version
                for obj in self._list(kind, ns, selector)["items"]:
                    yield {"type": "ADDED", "object": obj}
            while epoch == self._drops:
                wake.clear()
                for event in self._after(since):
                    since = event[0]
                    _, of, typ, obj = event
                    if of == kind and self._matching(kind, ns, obj, selector):
                        yield {"type": typ, "object": obj}
                if epoch == self._drops:
                    await wake.wait()
        finally:
            self._wakeups.discard(wake)

    def _after(self, version: int) -> Iterator[tuple[int, Kind, WatchType, Obj]]:
        yield from self.history[bisect.bisect_right(self.history, version, key=lambda h: h[0]) :]


@pytest.fixture
async def kube_server() -> AsyncIterator[KubeServer]:
    async with KubeServer() as server, kmock.Server(server):
        try:
            yield server
        finally:
            server.drop_watches()


@pytest.fixture
def kubeconfig(kube_server: KubeServer, tmp_path: Path) -> Path:
    """A kubeconfig file whose current context points at the test server."""
    path = tmp_path / "kubeconfig"
    server = str(kube_server.url).rstrip("/")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": server}}],
                "users": [{"name": "kmock", "user": {"token": "test"}}],
                "contexts": [
                    {
                        "name": "kmock",
                        "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"},
                    }
                ],
                "current-context": "kmock",
            }
        )
    )
    return path
