"""The port every Kubernetes plugin talks through: plain JSON objects, typed errors, no client library."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Obj = dict[str, Any]
WatchType = Literal["ADDED", "MODIFIED", "DELETED"]
FIELD_MANAGER = "rheostat"


@dataclass(frozen=True)
class Kind:
    """A resource the plugins read or write: enough to build its URL without discovery."""

    api_version: str  # "apps/v1", "v1", "networking.istio.io/v1beta1"
    kind: str
    plural: str
    namespaced: bool = True
    status: bool = False  # has a status subresource

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return base + (f"/{name}" if name else "")

    def __str__(self) -> str:
        return f"{self.plural}.{self.group or 'core'}/{self.version}"


class KubeError(Exception):
    """The API server refused or could not serve a request."""

    def __init__(self, status: int, verb: str, kind: Kind, message: str, name: str = "") -> None:
        self.status = status
        self.verb = verb
        self.kind = kind
        self.name = name
        what = f"{kind}" + (f" {name}" if name else "")
        super().__init__(f"{verb} {what}: {status} {message}")


class Conflict(KubeError):
    """409: the object changed since it was read (stale resourceVersion), or a field manager conflict."""


class Forbidden(KubeError):
    """403: RBAC does not allow `verb` on the resource; the message names both."""

    def __init__(self, status: int, verb: str, kind: Kind, message: str, name: str = "") -> None:
        super().__init__(status, verb, kind, message, name)
        self.args = (f"forbidden: cannot {verb} {kind.plural}.{kind.group or 'core'} ({message})",)


class NotInstalled(KubeError):
    """404 on the resource itself: the CRD (or API group) is not installed in the cluster."""

    def __init__(self, status: int, verb: str, kind: Kind, message: str, name: str = "") -> None:
        super().__init__(status, verb, kind, message, name)
        self.args = (f"the {kind.kind} CRD ({kind.plural}.{kind.group}/{kind.version}) is not installed",)


class Unavailable(KubeError):
    """The server is unreachable, or answered 429/5xx after the retries."""


class NotLeader(KubeError):
    """Not sent: this replica does not hold the leader Lease (see lease.py); only the leader writes."""


WriteCheck = Callable[[str, Kind, str], None]  # (verb, kind, name): raises NotLeader when no write may go out


class KubeAPI(Protocol):
    """Get, list, watch, create, server-side apply, status and delete of objects, and Events.

    Objects are plain dicts as the API serves them. `get` of a missing object is None; every other failure
    is a `KubeError` (or a subclass). Writes are retried with backoff on 429/5xx by the implementation;
    a 409 on a stale `metadata.resourceVersion` is raised, never retried blindly.
    """

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj | None: ...

    async def list(
        self, kind: Kind, namespace: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Obj]: ...

    def watch(self, kind: Kind, namespace: str | None = None) -> AsyncIterator[tuple[WatchType, Obj]]:
        """Every object as ADDED first, then changes as they happen, until the caller stops iterating."""
        ...

    async def create(self, obj: Obj) -> Obj:
        """POST: Conflict when it exists already."""
        ...

    async def apply(self, obj: Obj, *, force: bool = False) -> Obj:
        """Server-side apply (field manager `rheostat`); returns the object as stored."""
        ...

    async def replace(self, obj: Obj) -> Obj:
        """PUT with `metadata.resourceVersion`: Conflict when the object changed since it was read."""
        ...

    async def patch_status(self, kind: Kind, namespace: str, name: str, status: Obj) -> Obj:
        """Merge-patch the status subresource only."""
        ...

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """True when it existed."""
        ...

    async def event(self, regarding: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        """A core/v1 Event on `regarding`, as `kubectl describe` shows them."""
        ...

    async def close(self) -> None:
        """Close connections (watches end)."""
        ...
