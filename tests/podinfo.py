"""podinfo as Flagger's kustomize/podinfo declares it: the target of Flagger's tutorials, and of our tests."""

from __future__ import annotations

from typing import Any

IMAGE = "ghcr.io/stefanprodan/podinfo"


def deployment(
    ns: str, version: str = "6.0.0", *, name: str = "podinfo", image: str = IMAGE, **container: Any
) -> dict[str, Any]:
    """The Deployment; `container` adds fields to its one container (a readinessProbe, envFrom, ...)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 2,
            "minReadySeconds": 3,
            "progressDeadlineSeconds": 60,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels, "annotations": {"prometheus.io/scrape": "true"}},
                "spec": {
                    "containers": [
                        {
                            "name": "podinfod",
                            "image": f"{image}:{version}",
                            "command": ["./podinfo", "--port=9898", "--level=info"],
                            "ports": [{"name": "http", "containerPort": 9898, "protocol": "TCP"}],
                            **container,
                        }
                    ]
                },
            },
        },
    }


def hpa(ns: str, name: str = "podinfo") -> dict[str, Any]:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 2,
            "maxReplicas": 4,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 99}},
                }
            ],
        },
    }
