"""Label selectors and Gatekeeper's name globs."""

from __future__ import annotations

from collections.abc import Mapping

from rheostat.model.policy import LabelSelector


def glob_matches(pattern: str, value: str) -> bool:
    """Gatekeeper's wildcard: an exact name, a prefix glob `kube-*` or a suffix glob `*-system`."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return value == pattern


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: matchLabels and every matchExpressions requirement must hold."""
    for key, value in selector.matchLabels.items():
        if labels.get(key) != value:
            return False
    for req in selector.matchExpressions:
        present = req.key in labels
        if req.operator == "In" and not (present and labels[req.key] in req.values):
            return False
        if req.operator == "NotIn" and present and labels[req.key] in req.values:
            return False
        if req.operator == "Exists" and not present:
            return False
        if req.operator == "DoesNotExist" and present:
            return False
    return True
