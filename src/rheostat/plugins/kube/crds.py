"""CustomResourceDefinitions of the kinds Rheostat reads, their schemas derived from the pydantic models.

A CRD schema must be structural (every node typed, no `$ref`, no `anyOf` of types), so the models' JSON
schema is rewritten: references inlined, `X | None` made `nullable`, `int | str` made int-or-string, a union
of other types, `Any` or a recursive model left open (`x-kubernetes-preserve-unknown-fields`). Defaults are
left out: Rheostat applies its own when it loads an object, and the API server must not write them in.

Rheostat's own kinds (`rheostat.dev`) are always applied. Flagger's, Flux's and OpenFeature's kinds are
generated the same way and applied only when the cluster has no CRD of that name: their projects' own CRDs,
when installed, win.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from rheostat.model.load import KINDS
from rheostat.model.policy import POLICY_KINDS

Schema = dict[str, Any]
OWN_GROUP = "rheostat.dev"
# What a CRD of these groups is; a group not listed here gets no CRD from Rheostat (core kinds, policies).
GROUPS = {
    OWN_GROUP: "Rheostat",
    "flagger.app": "Flagger",
    "source.toolkit.fluxcd.io": "Flux",
    "kustomize.toolkit.fluxcd.io": "Flux",
    "notification.toolkit.fluxcd.io": "Flux",
    "core.openfeature.dev": "OpenFeature",
}
_ANY: Schema = {"x-kubernetes-preserve-unknown-fields": True}
_KEPT = ("description", "pattern", "minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum")
# Short names users know from their projects (kubectl get canary, ks, gitrepo, ff)
_SHORT = {"Kustomization": ["ks"], "GitRepository": ["gitrepo"], "FeatureFlag": ["ff"]}


@dataclass(frozen=True)
class CrdKind:
    group: str
    kind: str
    versions: tuple[str, ...]  # the first is the storage version
    model: type[BaseModel]

    @property
    def plural(self) -> str:
        lower = self.kind.lower()
        return lower[:-1] + "ies" if lower.endswith("y") else lower + "s"

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def owner(self) -> str:
        return GROUPS[self.group]

    @property
    def own(self) -> bool:
        return self.group == OWN_GROUP


def _version_rank(version: str) -> tuple[int, int, int]:
    """v1 > v1beta2 > v1beta1 > v1alpha1: Kubernetes' version priority."""
    major, _, rest = version[1:].partition("beta" if "beta" in version else "alpha")
    level = 2 if not rest else 1 if "beta" in version else 0
    return int(major or 0), level, int(rest or 0)


def crd_kinds() -> list[CrdKind]:
    """Every kind of the groups Rheostat gives CRDs for, from the loader's registry, in a stable order."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    models: dict[tuple[str, str], type[BaseModel]] = {}
    for (api_version, kind), model in KINDS.items():
        group, _, version = api_version.rpartition("/")
        if group not in GROUPS or (api_version, kind) in POLICY_KINDS:
            continue
        found[(group, kind)].append(version)
        models[(group, kind)] = model
    return [
        CrdKind(group, kind, tuple(sorted(versions, key=_version_rank, reverse=True)), models[(group, kind)])
        for (group, kind), versions in sorted(found.items())
    ]


def _resolve(node: Schema, defs: dict[str, Schema], seen: frozenset[str]) -> tuple[Schema, frozenset[str]]:
    """A `$ref` replaced by what it names (its sibling keys kept); `seen` grows to catch recursion."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node, seen
    name = ref.rsplit("/", 1)[-1]
    if name in seen:
        return _ANY, seen
    target = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return _resolve(target, defs, seen | {name})


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string" if isinstance(value, str) else "object"


def structural(node: Schema, defs: dict[str, Schema], seen: frozenset[str] = frozenset()) -> Schema:
    """A pydantic JSON schema node as a structural OpenAPI v3 schema node."""
    node, seen = _resolve(node, defs, seen)
    if node is _ANY:
        return dict(_ANY)
    out: Schema = {k: node[k] for k in _KEPT if k in node}
    if "description" in out:
        out["description"] = " ".join(str(out["description"]).split())
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), (int, float)) and not isinstance(node.get(bound), bool):
            out[flag], out[bound] = node[bound], True  # JSON Schema 2020's number is OpenAPI 3.0's flag
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o != {"type": "null"}]
        nullable = len(options) < len(node["anyOf"])
        if len(options) == 1:
            inner = structural(
                {**options[0], **{k: node[k] for k in ("description",) if k in node}}, defs, seen
            )
        else:
            types = {_resolve(o, defs, seen)[0].get("type") for o in options}
            if types == {"integer", "string"}:
                inner = {"x-kubernetes-int-or-string": True}
            elif (
                len(types) == 1 and None not in types and types <= {"string", "integer", "number", "boolean"}
            ):
                inner = {"type": types.pop()}
            else:
                inner = dict(_ANY)  # a union of shapes: checked by Rheostat when it loads the object
            inner.update({k: v for k, v in out.items() if k == "description"})
        if nullable and "type" in inner:
            inner["nullable"] = True
        return inner
    if "const" in node:
        return {**out, "type": _type_of(node["const"]), "enum": [node["const"]]}
    if "enum" in node:
        return {**out, "type": node.get("type") or _type_of(node["enum"][0]), "enum": list(node["enum"])}
    typ = node.get("type")
    if typ == "object" or "properties" in node:
        return _object(node, out, defs, seen)
    if typ == "array":
        out["type"] = "array"
        items = node.get("items")
        out["items"] = structural(items, defs, seen) if isinstance(items, dict) and items else dict(_ANY)
        return out
    if typ in ("string", "integer", "number", "boolean"):
        return {**out, "type": typ}
    return {**dict(_ANY), **{k: v for k, v in out.items() if k == "description"}}


def _object(node: Schema, out: Schema, defs: dict[str, Schema], seen: frozenset[str]) -> Schema:
    out["type"] = "object"
    props = node.get("properties")
    extra = node.get("additionalProperties")
    if props:
        out["properties"] = {name: structural(p, defs, seen) for name, p in props.items()}
        if node.get("required"):
            out["required"] = list(node["required"])
    elif isinstance(extra, dict) and extra:
        out["additionalProperties"] = structural(extra, defs, seen)
    else:  # dict[str, Any], or an object of any fields
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def schema_of(model: type[BaseModel]) -> Schema:
    """The openAPIV3Schema of a kind: its model's spec and the rest, metadata left to the API server."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    props = raw.get("properties", {})
    out: Schema = {
        "type": "object",
        "description": " ".join((model.__doc__ or model.__name__).split()),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        },
        "required": ["spec"] if "spec" in raw.get("required", []) else [],
    }
    if "spec" in props:
        out["properties"]["spec"] = structural(props["spec"], defs)
    # The status is the controller's to write, through the subresource; its shape is Rheostat's or Flux's.
    out["properties"]["status"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if not out["required"]:
        del out["required"]
    return out


def crd(kind: CrdKind, labels: dict[str, str]) -> dict[str, Any]:
    """The CustomResourceDefinition of `kind`, every version served, the status a subresource."""
    schema = schema_of(kind.model)
    names: dict[str, Any] = {
        "kind": kind.kind,
        "listKind": f"{kind.kind}List",
        "plural": kind.plural,
        "singular": kind.kind.lower(),
    }
    if kind.kind in _SHORT:
        names["shortNames"] = _SHORT[kind.kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.name,
            "labels": dict(labels),
            "annotations": {"rheostat.dev/schema": f"generated from Rheostat's {kind.model.__name__} model"},
        },
        "spec": {
            "group": kind.group,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == kind.versions[0],
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
                for version in kind.versions
            ],
        },
    }
