"""Flags in Git: flagd files and FeatureFlag objects to typed models; errors name the flag and the field."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rheostat.flags.store import FlagSetError, FlagSource, FlagStore, source_of
from rheostat.model.flags import (
    FeatureFlag,
    FlagdConfig,
    flag_set_from_document,
    is_flagd_document,
)

FLAGD_YAML = """
$schema: https://flagd.dev/schema/v0/flags.json
metadata: {flagSetId: checkout, version: 3}
$evaluators:
  staff: {ends_with: [{var: email}, "@example.com"]}
flags:
  new-cart:
    state: ENABLED
    variants: {"on": true, "off": false}
    defaultVariant: "off"
    targeting: {if: [{$ref: staff}, "on", null]}
    metadata: {owner: payments}
"""

FEATURE_FLAG = """
apiVersion: core.openfeature.dev/v1beta1
kind: FeatureFlag
metadata: {name: sample, namespace: shop}
spec:
  flagSpec:
    flags:
      banner:
        state: ENABLED
        variants: {red: "#f00", blue: "#00f"}
        defaultVariant: red
        targeting: {}
"""


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]


def test_flagd_yaml_file_becomes_a_flag_set() -> None:
    doc = yaml.safe_load(FLAGD_YAML)
    assert is_flagd_document(doc)
    fs = flag_set_from_document(doc, "flags/checkout.yaml")
    assert fs.metadata.key == "default/checkout"
    assert fs.spec.flags["new-cart"].flag_type == "boolean"
    store = FlagStore()
    store.replace([source_of(fs, "abc")])
    from rheostat.flags.evaluate import Context

    res = store.evaluate("new-cart", Context("u", {"email": "x@example.com"}))
    assert (res.value, res.variant, res.reason) == (True, "on", "TARGETING_MATCH")
    assert res.metadata == {"owner": "payments", "flagSetId": "checkout", "version": 3}


def test_name_falls_back_to_the_file() -> None:
    fs = flag_set_from_document({"flags": {}}, "deploy/My_Flags.json")
    assert fs.metadata.name == "my-flags"


def test_array_form_and_feature_flag_kind() -> None:
    cfg = FlagdConfig.model_validate(
        {"flags": [{"key": "a", "state": "ENABLED", "variants": {"x": 1, "y": 2.5}, "defaultVariant": "x"}]}
    )
    assert cfg.flags["a"].flag_type == "float"
    ff = FeatureFlag.model_validate(yaml.safe_load(FEATURE_FLAG))
    assert not is_flagd_document(yaml.safe_load(FEATURE_FLAG))
    assert ff.config.flags["banner"].flag_type == "string"
    assert ff.metadata.key == "shop/sample"


@pytest.mark.parametrize(
    ("flag", "where", "message"),
    [
        ({"state": "ON", "variants": {"a": 1}}, "flags.f.state", "Input should be 'ENABLED' or 'DISABLED'"),
        ({"state": "ENABLED", "variants": {}}, "flags.f.variants", "at least 1 item"),
        (
            {"state": "ENABLED", "variants": {"a": 1, "b": "x"}},
            "flags.f.variants",
            "all variants must have one type",
        ),
        (
            {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "z"},
            "flags.f",
            "defaultVariant 'z' is not one of the variants",
        ),
        ({"state": "ENABLED", "variants": {True: 1}}, "flags.f.variants", "read as a boolean"),
        ({"state": "ENABLED", "variants": {"a": 1}, "colour": "x"}, "flags.f.colour", "Extra inputs"),
        (
            {"state": "ENABLED", "variants": {"a": 1}, "metadata": {"k": [1]}},
            "flags.f.metadata.k",
            "valid",
        ),
    ],
)
def test_errors_name_flag_and_field(flag: dict[str, Any], where: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        flag_set_from_document({"flags": {"f": flag}}, "flags.yaml")
    errors = _errors(info.value)
    assert any(loc.startswith(where) and message in msg for loc, msg in errors), errors


def test_duplicate_key_across_sets_refuses_the_revision_and_keeps_the_old_flags() -> None:
    one = FlagdConfig.model_validate(
        {"flags": {"k": {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}}}
    )
    store = FlagStore()
    store.replace([FlagSource("FlagSet default/one", one, "r1")])
    with pytest.raises(FlagSetError, match="also declared in FlagSet default/one"):
        store.replace(
            [FlagSource("FlagSet default/one", one, "r2"), FlagSource("FlagSet default/two", one, "r2")]
        )
    assert store.evaluate("k").value == 1
    assert store.get("k") is not None and store.get("k").revision == "r1"  # type: ignore[union-attr]


def test_revision_is_kept_per_flag() -> None:
    def cfg(b: int) -> FlagdConfig:
        return FlagdConfig.model_validate(
            {
                "flags": {
                    "a": {"state": "ENABLED", "variants": {"x": 1}, "defaultVariant": "x"},
                    "b": {"state": "ENABLED", "variants": {"x": b}, "defaultVariant": "x"},
                }
            }
        )

    store = FlagStore()
    store.replace([FlagSource("FlagSet default/s", cfg(1), "r1")])
    change = store.replace([FlagSource("FlagSet default/s", cfg(2), "r2")])
    assert change is not None and change.changed == ("b",)
    assert [(f.key, f.revision) for f in store.flags()] == [("a", "r1"), ("b", "r2")]
    assert store.replace([FlagSource("FlagSet default/s", cfg(2), "r3")]) is None
