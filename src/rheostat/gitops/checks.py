"""Rules across objects that no single schema can state, checked on the whole desired state."""

from __future__ import annotations

from collections.abc import Iterable

from rheostat.model.base import object_key
from rheostat.model.canary import Canary
from rheostat.model.load import FieldError, Manifest, ManifestError
from rheostat.model.workload import Workload


def check_references(objects: Iterable[Manifest], source: str) -> None:
    objects = list(objects)
    workloads = {o.metadata.key for o in objects if isinstance(o, Workload)}
    ports: dict[int, str] = {}
    for o in objects:
        if not isinstance(o, Canary):
            continue
        ref = o.spec.targetRef
        where = f"Canary {o.metadata.key}"
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
        if target not in workloads:
            raise ManifestError(
                source, where, [FieldError("spec.targetRef.name", f"Workload {target} is not declared")]
            )
        port = o.spec.service.port
        if port in ports:
            raise ManifestError(
                source,
                where,
                [FieldError("spec.service.port", f"port {port} is already used by Canary {ports[port]}")],
            )
        ports[port] = o.metadata.key
