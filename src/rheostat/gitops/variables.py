"""postBuild variables: `substitute` over `substituteFrom` (ConfigMaps and Secrets), in Flux's precedence.

Flux reads the referred objects from the cluster. Here a ConfigMap is the one a Kustomization applied from Git
(the store keeps its data); a Secret is one a Kustomization built in this run (its values held in memory only:
the store keeps no Secret values) or, else, one of Rheostat's secret files (docs/gitops.md#secrets).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from rheostat.model.gitops import Kustomization

Lookup = Callable[[str, str], Mapping[str, str] | None]  # (namespace, name) -> keys, or None when absent
_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")


class VariablesError(Exception):
    """A referred object is missing or holds a key that cannot be a variable; names the field."""


def variables_for(ks: Kustomization, configmaps: Lookup, secrets: Lookup) -> dict[str, str] | None:
    """The variables of a Kustomization's postBuild, or None without postBuild (nothing substituted).

    Later substituteFrom entries override earlier ones, and `substitute` overrides them all (Flux)."""
    post = ks.spec.postBuild
    if post is None:
        return None
    namespace = ks.metadata.namespace
    out: dict[str, str] = {}
    for i, ref in enumerate(post.substituteFrom):
        field = f"spec.postBuild.substituteFrom[{i}]"
        lookup = configmaps if ref.kind == "ConfigMap" else secrets
        try:
            found = lookup(namespace, ref.name)
        except ValueError as exc:  # an unreadable secret file: its message names it, never a value
            raise VariablesError(f"{field}: {exc}") from None
        if found is None:
            if ref.optional:
                continue
            raise VariablesError(
                f"{field}: {ref.kind} {namespace}/{ref.name} not found (set optional: true if it may be absent)"
            )
        for name, value in found.items():
            if not _NAME.fullmatch(name):
                raise VariablesError(
                    f"{field}: {ref.kind} {namespace}/{ref.name}: key {name!r} is not a variable name "
                    "(^[_a-zA-Z][_a-zA-Z0-9]*$)"
                )
            out[name] = value
    return out | post.substitute
