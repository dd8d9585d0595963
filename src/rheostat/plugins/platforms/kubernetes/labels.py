"""Labels and annotations: the selector label, the primary's labels, what is copied and what marks ours."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rheostat.plugins.platforms.base import PlatformError

# Flagger's default `-selector-labels`: the target's selector must use one of them.
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
MANAGED_BY = "app.kubernetes.io/managed-by"
CANARY_ANNOTATION = "rheostat.dev/canary"
REVISION_ANNOTATION = "rheostat.dev/revision"  # on the primary: the revision it was given
INITIALIZED_ANNOTATION = "rheostat.dev/initialized"  # on the primary: the target was scaled to 0 once
ORIGINAL_SELECTOR_ANNOTATION = "rheostat.dev/original-selector"  # on an adopted apex Service
TOOLKIT = "toolkit.fluxcd.io"  # Flux's ownership marks must not follow a copy (Flux would prune it)
# Set by kubectl and the Deployment controller about the object they sit on: wrong on a copy.
NOT_COPIED = ("kubectl.kubernetes.io/last-applied-configuration", "deployment.kubernetes.io/revision")


def selector_label(obj: Mapping[str, Any], what: str) -> tuple[str, str]:
    """The (key, value) of the target's selector label Flagger keys the primary on."""
    match = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for key in SELECTOR_LABELS:
        if key in match:
            return key, str(match[key])
    raise PlatformError(f"{what}: spec.selector.matchLabels must contain one of {', '.join(SELECTOR_LABELS)}")


def copied(meta: Mapping[str, str] | None) -> dict[str, str]:
    """Labels or annotations as a copy carries them: without Flux's and kubectl's marks."""
    return {k: v for k, v in (meta or {}).items() if TOOLKIT not in k and k not in NOT_COPIED}


def primary_labels(labels: Mapping[str, str] | None, key: str, value: str) -> dict[str, str]:
    return {**copied(labels), key: value}


def marks(canary: str) -> tuple[dict[str, str], dict[str, str]]:
    """The label and annotation every object Rheostat creates carries."""
    return {MANAGED_BY: "rheostat"}, {CANARY_ANNOTATION: canary}


def is_ours(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata", {}).get("labels") or {}).get(MANAGED_BY) == "rheostat")
