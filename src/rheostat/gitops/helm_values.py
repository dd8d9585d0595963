"""A HelmRelease's values in Flux's order: valuesFiles, each valuesFrom (ConfigMap or Secret, `valuesKey`,
`targetPath`), then `spec.values`; and the redaction of Secret values from every message."""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from rheostat.gitops.helm_chart import Failure, merge
from rheostat.gitops.sources import SecretLookup
from rheostat.model.helm import HelmRelease
from rheostat.model.yaml_limits import YamlLimitError, safe_load
from rheostat.store.port import State


def set_path(values: dict[str, Any], path: str, text: str) -> dict[str, Any]:
    """`--set path=value` as Flux's targetPath does it: dotted keys, `a[0]` indexes, typed scalars."""
    parts = [p for p in re.split(r"\.(?![^\[]*\])", path) if p]
    if not parts:
        raise ValueError(f"targetPath {path!r} is empty")
    scalar: Any = yaml.safe_load(text) if re.fullmatch(r"-?\d+|true|false|null", text) else text
    out = copy.deepcopy(values)
    node: Any = out
    for i, part in enumerate(parts):
        m = re.fullmatch(r"([^\[\]]+)(?:\[(\d+)\])?", part)
        if m is None:
            raise ValueError(f"targetPath {path!r}: {part!r} is not a key or key[index]")
        name, index = m.group(1), m.group(2)
        last = i == len(parts) - 1
        if index is None:
            node[name] = scalar if last else node.get(name) if isinstance(node.get(name), dict) else {}
            node = node[name]
        else:
            items = node.get(name) if isinstance(node.get(name), list) else []
            items = list(items) + [None] * (int(index) + 1 - len(items))
            node[name] = items
            items[int(index)] = (
                scalar if last else items[int(index)] if isinstance(items[int(index)], dict) else {}
            )
            node = items[int(index)]
    return out


class ReleaseValues:
    """ConfigMaps from the store (applied from Git); Secrets from Rheostat's secret lookup, never from Git."""

    def __init__(self, store: State, secrets: SecretLookup | None) -> None:
        self.store = store
        self.secrets = secrets

    def values_of(self, hr: HelmRelease, base: dict[str, Any]) -> dict[str, Any]:
        """Flux's order: valuesFiles, then each valuesFrom in turn (targetPath sets one value), then values."""
        values = copy.deepcopy(base)
        ns = hr.metadata.namespace
        for i, ref in enumerate(hr.spec.valuesFrom):
            field = f"spec.valuesFrom[{i}]"
            data = self.config_map(ns, ref.name) if ref.kind == "ConfigMap" else self.secret(ns, ref.name)
            if data is None:
                if ref.optional:
                    continue
                raise Failure("InitFailed", f"{field}.name", f"{ref.kind} {ns}/{ref.name} not found")
            if ref.valuesKey not in data:
                if ref.optional:
                    continue
                raise Failure(
                    "InitFailed",
                    f"{field}.valuesKey",
                    f"{ref.kind} {ns}/{ref.name} has no key {ref.valuesKey!r}",
                )
            text = data[ref.valuesKey]
            if ref.targetPath:
                try:
                    values = set_path(values, ref.targetPath, text)
                except ValueError as exc:
                    raise Failure("InitFailed", f"{field}.targetPath", str(exc)) from None
                continue
            try:
                parsed = safe_load(text) or {}
            except (yaml.YAMLError, YamlLimitError):
                parsed = None  # the text itself is never echoed: it may be a Secret's
            if not isinstance(parsed, dict):
                raise Failure(
                    "InitFailed",
                    f"{field}.valuesKey",
                    f"key {ref.valuesKey!r} of {ref.kind} {ns}/{ref.name} is not a YAML mapping of values",
                )
            values = merge(values, parsed)
        return merge(values, hr.spec.values)

    def inputs(self, hr: HelmRelease) -> list[Any]:
        ns = hr.metadata.namespace
        return [
            self.config_map(ns, ref.name) if ref.kind == "ConfigMap" else self.secret(ns, ref.name)
            for ref in hr.spec.valuesFrom
        ]

    def redact(self, hr: HelmRelease, text: str) -> str:
        """`text` with every value the release takes from a Secret blanked out (events, conditions, API)."""
        words: set[str] = set()
        for ref in hr.spec.valuesFrom:
            if ref.kind != "Secret" or (data := self.secret(hr.metadata.namespace, ref.name)) is None:
                continue
            raw = data.get(ref.valuesKey)
            if raw is None:
                continue
            words.add(raw.strip())
            try:
                parsed = safe_load(raw)
            except (yaml.YAMLError, YamlLimitError):
                parsed = None
            words.update(_leaves(parsed))
        for word in sorted((w for w in words if len(w) >= 3), key=len, reverse=True):
            text = text.replace(word, "(redacted)")
        return text

    def config_map(self, ns: str, name: str) -> dict[str, str] | None:
        stored = self.store.get_object("ConfigMap", f"{ns}/{name}")
        if stored is None:
            return None
        data = stored.body.get("data") or {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def secret(self, ns: str, name: str) -> dict[str, str] | None:
        found = self.secrets(ns, name) if self.secrets is not None else None
        return dict(found) if found is not None else None


def _leaves(data: Any) -> list[str]:
    if isinstance(data, dict):
        return [w for v in data.values() for w in _leaves(v)]
    if isinstance(data, list):
        return [w for v in data for w in _leaves(v)]
    return [] if data is None or isinstance(data, bool) else [str(data)]
