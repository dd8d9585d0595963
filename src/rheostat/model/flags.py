"""Feature flags declared in Git: flagd flag-definition files and the OpenFeature operator's FeatureFlag.

Two shapes reach the store:

- a flagd file (JSON or YAML with `flags`, `$evaluators`, `metadata`), which has no apiVersion or kind. It is
  wrapped in a `FlagSet` object (`rheostat.dev/v1alpha1`) named after `metadata.flagSetId` or the file, so
  that it is stored, pruned and traced like every other object;
- `core.openfeature.dev/v1beta1` `FeatureFlag`, whose `spec.flagSpec` is the same flag configuration.

Both validate to a `FlagdConfig`; errors name the flag and the field (`flags.my-flag.defaultVariant`).
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Any, Final, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from rheostat.model.base import ObjectMeta, Strict

MetadataValue = bool | int | float | str
FlagType = Literal["boolean", "string", "integer", "float", "object"]

FLAGSET_API: Final = "rheostat.dev/v1alpha1"
FEATUREFLAG_API: Final = "core.openfeature.dev/v1beta1"
_NAME_OK = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict | list):
        return "object"
    return "null" if value is None else type(value).__name__


class FlagDefinition(Strict):
    """One flag, as flagd's `flags.json` schema declares it."""

    key: str | None = None  # only in the array form of `flags`; the map form keys by name
    state: Literal["ENABLED", "DISABLED"]
    variants: dict[str, Any] = Field(min_length=1)
    defaultVariant: str | None = None
    targeting: dict[str, Any] | None = None
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("variants", mode="before")
    @classmethod
    def _names_are_strings(cls, variants: Any) -> Any:
        if isinstance(variants, dict):
            for name in variants:
                if isinstance(name, bool):
                    raise ValueError(
                        f"variant name {name!r} was read as a boolean: in YAML write on/off/yes/no "
                        f"variant names in quotes ('on')"
                    )
        return variants

    @field_validator("defaultVariant", mode="before")
    @classmethod
    def _default_is_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(
                f"defaultVariant {value!r} was read as a boolean: in YAML write on/off/yes/no in quotes ('off')"
            )
        return value

    @field_validator("variants")
    @classmethod
    def _one_type(cls, variants: dict[str, Any]) -> dict[str, Any]:
        kinds = {name: _kind_of(v) for name, v in variants.items()}
        bad = {n: k for n, k in kinds.items() if k not in ("boolean", "number", "string", "object")}
        if bad:
            name, kind = next(iter(bad.items()))
            raise ValueError(f"variant {name!r} is {kind}; variants are boolean, number, string or object")
        if len(set(kinds.values())) > 1:
            listed = ", ".join(f"{n}: {k}" for n, k in kinds.items())
            raise ValueError(f"all variants must have one type, got {listed}")
        return variants

    @model_validator(mode="after")
    def _default_is_a_variant(self) -> FlagDefinition:
        if self.defaultVariant not in (None, "") and self.defaultVariant not in self.variants:
            known = ", ".join(repr(v) for v in self.variants)
            raise ValueError(f"defaultVariant {self.defaultVariant!r} is not one of the variants ({known})")
        return self

    @property
    def flag_type(self) -> FlagType:
        """The type every variant shares; a number flag is integer only when every variant is integral."""
        values = list(self.variants.values())
        first = values[0]
        if isinstance(first, bool):
            return "boolean"
        if isinstance(first, str):
            return "string"
        if isinstance(first, dict | list):
            return "object"
        return "integer" if all(isinstance(v, int) for v in values) else "float"

    def to_flagd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "variants": self.variants}
        if self.defaultVariant not in (None, ""):
            out["defaultVariant"] = self.defaultVariant
        if self.targeting is not None:
            out["targeting"] = self.targeting
        if self.metadata:
            out["metadata"] = self.metadata
        return out


class FlagdConfig(Strict):
    """A flag set: the body of a flagd file, or `spec.flagSpec` of a FeatureFlag."""

    schema_: str | None = Field(default=None, alias="$schema")
    flags: dict[str, FlagDefinition]
    evaluators: dict[str, Any] = Field(default_factory=dict, alias="$evaluators")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("flags", mode="before")
    @classmethod
    def _array_to_map(cls, flags: Any) -> Any:
        """flagd's daemon also accepts `flags` as a list of flags that carry their `key`."""
        if not isinstance(flags, list):
            return flags
        out: dict[str, Any] = {}
        for i, flag in enumerate(flags):
            key = flag.get("key") if isinstance(flag, dict) else None
            if not isinstance(key, str) or not key:
                raise ValueError(f"flags[{i}]: a flag in the array form needs a string `key`")
            if key in out:
                raise ValueError(f"flags[{i}]: flag key {key!r} is declared twice")
            out[key] = flag
        return out

    @model_validator(mode="after")
    def _keys_agree(self) -> FlagdConfig:
        for name, flag in self.flags.items():
            if flag.key is not None and flag.key != name:
                raise ValueError(f"flags.{name}.key: {flag.key!r} differs from the flag's name {name!r}")
            if not name:
                raise ValueError("flags: a flag key must not be empty")
        return self

    def to_flagd(self) -> dict[str, Any]:
        """The JSON flagd's evaluator reads (map form, code defaults left out)."""
        out: dict[str, Any] = {"flags": {k: f.to_flagd() for k, f in self.flags.items()}}
        if self.evaluators:
            out["$evaluators"] = self.evaluators
        if self.metadata:
            out["metadata"] = self.metadata
        return out


class FlagSet(Strict):
    """A flagd flag-definition file as an object of the store (our wrapper; no such kind upstream)."""

    apiVersion: Literal["rheostat.dev/v1alpha1"] = FLAGSET_API
    kind: Literal["FlagSet"] = "FlagSet"
    metadata: ObjectMeta
    spec: FlagdConfig

    @property
    def config(self) -> FlagdConfig:
        return self.spec


class FlagSpec(Strict):
    flags: dict[str, FlagDefinition]
    evaluators: dict[str, Any] = Field(default_factory=dict, alias="$evaluators")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict)

    @field_validator("flags", mode="before")
    @classmethod
    def _array_to_map(cls, flags: Any) -> Any:
        return FlagdConfig._array_to_map(flags)


class FeatureFlagSpec(Strict):
    flagSpec: FlagSpec


class FeatureFlag(Strict):
    """The OpenFeature operator's `core.openfeature.dev/v1beta1` FeatureFlag."""

    apiVersion: Literal["core.openfeature.dev/v1beta1"]
    kind: Literal["FeatureFlag"]
    metadata: ObjectMeta
    spec: FeatureFlagSpec
    status: dict[str, Any] | None = None

    @property
    def config(self) -> FlagdConfig:
        spec = self.spec.flagSpec
        return FlagdConfig(flags=spec.flags, evaluators=spec.evaluators, metadata=spec.metadata)


FLAG_KINDS: dict[tuple[str, str], type[BaseModel]] = {
    (FLAGSET_API, "FlagSet"): FlagSet,
    (FEATUREFLAG_API, "FeatureFlag"): FeatureFlag,
}


def is_flagd_document(doc: Any) -> bool:
    """A flagd flag-definition file: a mapping with `flags` and neither apiVersion nor kind."""
    return isinstance(doc, dict) and "flags" in doc and "apiVersion" not in doc and "kind" not in doc


def flag_set_name(doc: dict[str, Any], source: str) -> str:
    """`metadata.flagSetId` when it is a valid object name, else the file's name made into one."""
    meta = doc.get("metadata")
    set_id = meta.get("flagSetId") if isinstance(meta, dict) else None
    if isinstance(set_id, str) and _NAME_OK.match(set_id) and len(set_id) <= 253:
        return set_id
    stem = PurePath(source).name.rsplit(".", 1)[0] if source and not source.startswith("<") else "flags"
    name = re.sub(r"[^a-z0-9.-]+", "-", stem.lower()).strip("-.")
    return name or "flags"


def flag_set_from_document(
    doc: dict[str, Any], source: str = "<input>", namespace: str = "default"
) -> FlagSet:
    """A flagd file to a FlagSet. Raises pydantic's ValidationError with paths relative to the file
    (`flags.my-flag.variants`), so that the caller can name file, flag and field."""
    config = FlagdConfig.model_validate(doc)
    return FlagSet(
        metadata=ObjectMeta(name=flag_set_name(doc, source), namespace=namespace),
        spec=config,
    )


__all__ = [
    "FEATUREFLAG_API",
    "FLAGSET_API",
    "FLAG_KINDS",
    "FeatureFlag",
    "FlagDefinition",
    "FlagSet",
    "FlagType",
    "FlagdConfig",
    "ValidationError",
    "flag_set_from_document",
    "flag_set_name",
    "is_flagd_document",
]
