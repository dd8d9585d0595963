"""Objects that policies may look at besides the one under review: Gatekeeper's `data.inventory`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

from rheostat.model.policy import LabelSelector
from rheostat.policy.review import JsonObject, plain
from rheostat.policy.selectors import selector_matches


class Inventory:
    """Known objects by namespace, apiVersion, kind and name; Namespace objects answer namespaceSelectors.

    The Gatekeeper tree is `cluster[apiVersion][kind][name]` for cluster-scoped objects and
    `namespace[ns][apiVersion][kind][name]` for namespaced ones (what a sync Config replicates).
    """

    def __init__(self, objects: Iterable[Mapping[str, Any]] = ()) -> None:
        self._objects: list[JsonObject] = []
        for obj in objects:
            data = plain(obj)
            if not isinstance(data, dict) or not data.get("apiVersion") or not data.get("kind"):
                raise ValueError(f"inventory object without apiVersion or kind: {obj!r:.120}")
            self._objects.append(data)

    def __len__(self) -> int:
        return len(self._objects)

    def objects(self) -> list[JsonObject]:
        return list(self._objects)

    @cached_property
    def tree(self) -> JsonObject:
        cluster: JsonObject = {}
        namespaced: JsonObject = {}
        for obj in self._objects:
            meta = obj.get("metadata") or {}
            name, ns = str(meta.get("name", "")), str(meta.get("namespace") or "")
            root = namespaced.setdefault(ns, {}) if ns else cluster
            root.setdefault(obj["apiVersion"], {}).setdefault(obj["kind"], {})[name] = obj
        return {"cluster": cluster, "namespace": namespaced}

    @cached_property
    def data_json(self) -> str:
        """`data` for a Rego engine: {"inventory": tree}, serialised once."""
        return json.dumps({"inventory": self.tree}, separators=(",", ":"))

    @cached_property
    def namespaces(self) -> dict[str, JsonObject]:
        return {
            str((o.get("metadata") or {}).get("name", "")): o
            for o in self._objects
            if o.get("kind") == "Namespace" and o.get("apiVersion") == "v1"
        }

    def find(
        self,
        api_version: str,
        kind: str,
        *,
        name: str | None = None,
        namespace: str | None = None,
        selector: LabelSelector | None = None,
    ) -> list[JsonObject]:
        """Objects of apiVersion/kind, narrowed by name, namespace (None: any) and label selector."""
        out = []
        for obj in self._objects:
            if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
                continue
            meta = obj.get("metadata") or {}
            if name is not None and meta.get("name") != name:
                continue
            if namespace is not None and (meta.get("namespace") or "") != namespace:
                continue
            labels = meta.get("labels") or {}
            if selector is not None and not selector_matches(selector, labels):
                continue
            out.append(obj)
        return out
