"""Every object a Kubernetes plugin writes is checked against its real schema: the CRDs in ../shared
(Istio, Gateway API, SMI, Flagger) or kubernetes-validate's (core kinds), strictly (unknown fields fail)."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from tests.conftest import SHARED

K8S_VERSION = "1.33"  # the Kubernetes version the docs claim
CRD_FILES = (
    SHARED / "schemas" / "crds" / "istio-networking.yaml",
    SHARED / "schemas" / "crds" / "gateway.networking.k8s.io_httproutes.yaml",
    SHARED / "schemas" / "crds" / "split.smi-spec.io.yaml",
    SHARED / "testdata" / "flagger" / "crd.yaml",
)


def _to_jsonschema(node: Any) -> Any:
    """A CRD's openAPIV3Schema as a strict JSON schema (int-or-string, nullable, no unknown fields)."""
    if isinstance(node, list):
        return [_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    out.pop("nullable", None)
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> schema, for every served version of every CRD file present."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in CRD_FILES:
        if not Path(path).is_file():
            continue
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = version.get("schema", {}).get("openAPIV3Schema")
                if schema is None:
                    continue
                s = _to_jsonschema(copy.deepcopy(schema))
                props = s.setdefault("properties", {})
                props.update({"apiVersion": {"type": "string"}, "kind": {"type": "string"}})
                props["metadata"] = {"type": "object"}
                out[(f"{spec['group']}/{version['name']}", spec["names"]["kind"])] = s
    return out


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What is wrong with `obj` by its schema; raises LookupError for a kind with no schema here."""
    key = (obj.get("apiVersion", ""), obj.get("kind", ""))
    schema = crd_schemas().get(key)
    if schema is not None:
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        raise LookupError(f"no schema for {key[1]} {key[0]}") from None
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(str(p) for p in exc.path)}: {exc.message}"]
    return []


def assert_valid(obj: dict[str, Any]) -> None:
    errors = schema_errors(obj)
    name = obj.get("metadata", {}).get("name")
    assert not errors, f"{obj.get('kind')} {name} does not validate: {errors}"
