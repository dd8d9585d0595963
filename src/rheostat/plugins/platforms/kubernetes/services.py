"""The apex, `-primary` and `-canary` ClusterIP Services generated from `spec.service` (pure)."""

from __future__ import annotations

from typing import Any

from rheostat.model.canary import CustomMetadata, Service
from rheostat.plugins.kube.api import Obj
from rheostat.plugins.platforms.kubernetes.labels import copied, marks
from rheostat.plugins.platforms.kubernetes.settings import Bound

SIDECARS = ("istio-proxy", "envoy")  # a mesh's proxy ports are not the app's


def main_port(service: Service) -> dict[str, Any]:
    port: dict[str, Any] = {
        "name": service.portName or "http",
        "protocol": "TCP",
        "port": service.port,
        "targetPort": service.targetPort if service.targetPort not in (None, 0, "") else service.port,
    }
    if service.appProtocol:
        port["appProtocol"] = service.appProtocol
    return port


def discovered_ports(service: Service, pod: dict[str, Any]) -> list[dict[str, Any]]:
    """`portDiscovery`: every container port but the service's own, named as Flagger names them.

    Beyond Flagger, a port whose number or name the main port already uses is left out, since a Service
    with two equal ports is refused by the API server.
    """
    if not service.portDiscovery:
        return []
    main = main_port(service)
    found: dict[str, int] = {}
    for container in pod.get("containers") or []:
        if container.get("name") in SIDECARS:
            continue
        for i, p in enumerate(container.get("ports") or []):
            number = int(p["containerPort"])
            target = service.targetPort
            if (
                (target in (None, 0, "") and number == service.port)
                or target == number
                or target == p.get("name")
            ):
                continue
            name = p.get("name") or f"tcp-{container.get('name')}-{i}"
            if number == main["port"] or name == main["name"] or number in found.values():
                continue
            found.setdefault(name, number)
    return [
        {"name": name, "protocol": "TCP", "port": number, "targetPort": number}
        for name, number in sorted(found.items())
    ]


def service_of(
    b: Bound,
    name: str,
    selector: dict[str, str],
    metadata: CustomMetadata | None,
    ports: list[dict[str, Any]],
) -> Obj:
    """One generated Service; `metadata` is `service.apex`/`primary`/`canary` (custom labels, annotations)."""
    ours_labels, ours_annotations = marks(b.canary)
    key = next(iter(selector))
    labels = {**copied(metadata.labels if metadata else None), key: name, **ours_labels}
    annotations = {**copied(metadata.annotations if metadata else None), **ours_annotations}
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "selector": selector,
        "ports": [main_port(b.service), *ports],
    }
    if b.service.headless:
        spec["clusterIP"] = "None"
    if b.service.trafficDistribution:
        spec["trafficDistribution"] = b.service.trafficDistribution
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": b.namespace, "labels": labels, "annotations": annotations},
        "spec": spec,
    }
