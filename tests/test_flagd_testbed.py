"""The OpenFeature flagd conformance suite (flagd-testbed 3.9.0), run with pytest-bdd against our evaluator.

Which scenarios run (shared/testdata/SOURCES.md): every scenario of `evaluator/gherkin/` except the
`@fractional-v1` and `@fractional-v2` ones, plus the `@fractional-v3` scenarios of
`provider/gherkin/targeting.feature`. flagd-core 2.0 buckets `fractional` with the CBOR-based v3, so the v1/v2
tables cannot pass and are left out, not skipped. The provider feature's Background (an option, a provider)
does not apply to an in-process evaluator: its steps load the provider suite's flags (every
`provider/flags/*.json` but the `selector*` ones, merged as the testbed's launchpad merges them).

The flags go through our own model (`FlagdConfig`) before reaching the evaluator, so the suite also checks
that every upstream flag file is accepted by the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pytest_bdd import given, parsers, scenarios, then, when
from pytest_bdd.feature import get_feature
from pytest_bdd.utils import CONFIG_STACK

from rheostat.flags.evaluate import FlagSetEvaluator, Resolution
from rheostat.model.flags import FlagdConfig, FlagType

TESTBED = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "flagd-testbed"
EXCLUDED = {"fractional-v1", "fractional-v2"}
V3 = "fractional-v3"
TYPES: dict[str, FlagType] = {
    "Boolean": "boolean",
    "String": "string",
    "Integer": "integer",
    "Float": "float",
    "Object": "object",
}


def _select(path: Path, keep_only_v3: bool) -> set[str]:
    """Drop, in pytest-bdd's parsed copy of the feature, the scenarios and example tables not to run.

    Returns the tags still in use, which become pytest marks and so must be registered markers."""
    feature = get_feature(str(path.parent), path.name)
    tags = set(feature.tags)
    for name, template in list(feature.scenarios.items()):
        if keep_only_v3:
            has_v3 = V3 in template.tags or any(V3 in ex.tags for ex in template.examples)
            if not has_v3:
                del feature.scenarios[name]
                continue
            if V3 not in template.tags:
                template.examples = [ex for ex in template.examples if V3 in ex.tags]
        if template.tags & EXCLUDED:
            del feature.scenarios[name]
            continue
        if template.templated:
            template.examples = [ex for ex in template.examples if not ex.tags & EXCLUDED]
            if not template.examples:
                del feature.scenarios[name]
                continue
        tags |= template.tags
        for ex in template.examples:
            tags |= ex.tags
    return tags


def _features() -> list[Path]:
    if not TESTBED.is_dir():
        return []
    evaluator = sorted((TESTBED / "evaluator" / "gherkin").glob("*.feature"))
    provider = TESTBED / "provider" / "gherkin" / "targeting.feature"
    tags: set[str] = set()
    for path in evaluator:
        tags |= _select(path, keep_only_v3=False)
    tags |= _select(provider, keep_only_v3=True)
    if (
        CONFIG_STACK
    ):  # the feature files' tags are upstream data; register them so --strict-markers accepts them
        config = CONFIG_STACK[-1]
        for tag in sorted(tags):
            config.addinivalue_line("markers", f"{tag}: flagd-testbed tag")
    return [*evaluator, provider]


FEATURES = _features()
if FEATURES:
    scenarios(*(str(p) for p in FEATURES))


def test_testbed_is_present(shared: Path) -> None:
    """Without the data the suite above is empty: this says so (and fails in CI, via `shared`)."""
    assert (shared / "testdata" / "flagd-testbed" / "evaluator" / "flags" / "testkit-flags.json").is_file()
    assert FEATURES, "the flagd-testbed feature files were not found"


# -- flags --------------------------------------------------------------------------------------------------


def _evaluator_flags() -> FlagdConfig:
    doc = json.loads((TESTBED / "evaluator" / "flags" / "testkit-flags.json").read_text(encoding="utf-8"))
    return FlagdConfig.model_validate(doc)


def _provider_flags() -> FlagdConfig:
    flags: dict[str, Any] = {}
    evaluators: dict[str, Any] = {}
    for path in sorted((TESTBED / "provider" / "flags").glob("*.json")):
        if path.name.startswith("selector"):
            continue
        doc = json.loads(path.read_text(encoding="utf-8"))
        FlagdConfig.model_validate(doc)  # each upstream file on its own is valid for our model
        flags.update(doc["flags"])
        evaluators.update(doc.get("$evaluators", {}))
    return FlagdConfig.model_validate({"flags": flags, "$evaluators": evaluators})


_CACHE: dict[str, FlagSetEvaluator] = {}


def _evaluator(which: str) -> FlagSetEvaluator:
    if which not in _CACHE:
        _CACHE[which] = FlagSetEvaluator(_evaluator_flags() if which == "evaluator" else _provider_flags())
    return _CACHE[which]


# -- values as the feature files write them -------------------------------------------------------------------


def _unescape(text: str) -> str:
    """Table cells carry JSON with `\\"` escapes."""
    return text.replace('\\"', '"')


def _typed(kind: str, text: str) -> Any:
    if kind == "Boolean":
        return text.strip().lower() == "true"
    if kind == "Integer":
        return int(text)
    if kind == "Float":
        return float(text)
    if kind == "Object":
        return json.loads(_unescape(text))
    return text


# -- steps --------------------------------------------------------------------------------------------------


@pytest.fixture
def context() -> dict[str, Any]:
    return {"targeting_key": None, "attributes": {}}


@given("an evaluator", target_fixture="evaluator")
def an_evaluator() -> FlagSetEvaluator:
    return _evaluator("evaluator")


@given(parsers.re(r'an option "(?P<name>[^"]*)" of type "(?P<kind>[^"]*)" with value "(?P<value>[^"]*)"'))
def an_option(name: str, kind: str, value: str) -> None:
    """Provider options (cache, resolver...) have no meaning for an in-process evaluator."""


@given("a stable flagd provider", target_fixture="evaluator")
def a_provider() -> FlagSetEvaluator:
    return _evaluator("provider")


@given(
    parsers.re(
        r'an? (?P<kind>Boolean|String|Integer|Float|Object)-flag with key "(?P<key>[^"]*)" '
        r'and a (?:fallback|default) value "(?P<default>.*)"'
    ),
    target_fixture="flag",
)
def a_flag(kind: str, key: str, default: str) -> dict[str, Any]:
    return {"kind": kind, "key": key, "default": _typed(kind, default)}


@given(parsers.re(r'a context containing a targeting key with value "(?P<value>.*)"'))
def a_targeting_key(context: dict[str, Any], value: str) -> None:
    context["targeting_key"] = value


@given(
    parsers.re(
        r'a context containing a key "(?P<key>[^"]*)", with type "(?P<kind>[^"]*)" '
        r'and with value "(?P<value>.*)"'
    )
)
def a_context_key(context: dict[str, Any], key: str, kind: str, value: str) -> None:
    context["attributes"][key] = _typed(kind, value)


@given(
    parsers.re(
        r'a context containing a nested property with outer key "(?P<outer>[^"]*)" '
        r'and inner key "(?P<inner>[^"]*)", with value "(?P<value>.*)"'
    )
)
def a_nested_key(context: dict[str, Any], outer: str, inner: str, value: str) -> None:
    context["attributes"].setdefault(outer, {})[inner] = value


@when("the flag was evaluated with details", target_fixture="details")
def evaluate(evaluator: FlagSetEvaluator, flag: dict[str, Any], context: dict[str, Any]) -> Resolution:
    from openfeature.evaluation_context import EvaluationContext

    ctx = EvaluationContext(targeting_key=context["targeting_key"], attributes=dict(context["attributes"]))
    return evaluator.evaluate(flag["key"], ctx, TYPES[flag["kind"]], flag["default"])


@then(parsers.re(r'the resolved details value should be "(?P<value>.*)"'))
def value_is(details: Resolution, flag: dict[str, Any], value: str) -> None:
    expected = _typed(flag["kind"], value)
    assert details.value == expected, details
    assert type(details.value) is type(expected), details


@then(parsers.re(r'the reason should be "(?P<reason>[^"]*)"'))
def reason_is(details: Resolution, reason: str) -> None:
    assert details.reason == reason, details


@then(parsers.re(r'the variant should be "(?P<variant>[^"]*)"'))
def variant_is(details: Resolution, variant: str) -> None:
    assert details.variant == variant, details


@then(parsers.re(r'the error-code should be "(?P<code>[^"]*)"'))
def error_code_is(details: Resolution, code: str) -> None:
    assert details.error_code == code, details


@then("the resolved metadata should contain")
def metadata_contains(details: Resolution, datatable: list[list[str]]) -> None:
    header, *rows = datatable
    col = {name: i for i, name in enumerate(header)}
    for row in rows:
        key, kind, text = row[col["key"]], row[col["metadata_type"]], row[col["value"]]
        assert key in details.metadata, details
        assert details.metadata[key] == _typed(kind, text), details


@then("the resolved metadata is empty")
def metadata_empty(details: Resolution) -> None:
    assert not details.metadata, details
