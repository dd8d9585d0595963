"""Constraint parameters against the template's openAPIV3Schema: types, properties, items and enums.

A structural subset of what the Kubernetes API server checks for a Constraint CRD. Fields the schema does
not declare are accepted (the API server prunes them), formats, patterns and bounds are not checked.
"""

from __future__ import annotations

from typing import Any

from rheostat.util.errors import json_type

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def _type_ok(expected: str, value: object) -> bool:
    if expected not in _TYPES:
        return True
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[expected])


def schema_errors(value: object, schema: dict[str, Any], path: str = "parameters") -> list[str]:
    """Every place where value does not fit schema, as `path: message`."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "type" not in schema:
        return []
    if value is None:
        return [] if schema.get("nullable", True) else [f"{path}: must not be null"]
    expected = schema.get("type")
    if isinstance(expected, str) and not _type_ok(expected, value):
        return [f"{path}: expected {expected}, got {json_type(value)}"]
    errors: list[str] = []
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        errors.append(f"{path}: {value!r} is not one of {enum}")
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if isinstance(props, dict) and isinstance(props.get(key), dict):
                errors += schema_errors(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                errors += schema_errors(item, extra, f"{path}.{key}")
        for key in schema.get("required") or []:
            if key not in value:
                errors.append(f"{path}.{key}: field required")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{path}[{i}]")
    return errors
