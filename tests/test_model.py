"""The Flagger kinds: every field of Flagger's CRD schemas is accepted; bad input names file, object, field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from rheostat.model.canary import Canary, Strategy
from rheostat.model.load import ManifestError, load_file, load_tree, parse_object, parse_text

BASES: dict[str, dict[str, Any]] = {
    "Canary": {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "a", "namespace": "t"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "a"},
            "service": {"port": 80},
            "analysis": {"interval": "1m", "threshold": 1, "stepWeight": 10},
        },
    },
    "MetricTemplate": {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "m"},
        "spec": {"provider": {"type": "prometheus"}, "query": "up"},
    },
    "AlertProvider": {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": "p"},
        "spec": {"type": "slack", "address": "https://hooks.example/x"},
    },
}


def sample(schema: dict[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    if schema.get("x-kubernetes-int-or-string"):
        return 8080
    t = schema.get("type")
    if t == "string":
        pattern = schema.get("pattern", "")
        return "1m" if "(m|s)" in pattern else ("Service" if pattern.startswith("^[a-zA-Z]") else "abc")
    if t in ("number", "integer"):
        return 50
    if t == "boolean":
        return True
    if t == "array":
        return [sample(schema["items"])]
    if t == "object":
        if isinstance(schema.get("additionalProperties"), dict):
            return {"k": sample(schema["additionalProperties"])}
        props = schema.get("properties", {})
        required = schema.get("required") or ([next(iter(props))] if ("oneOf" in schema and props) else [])
        return {k: sample(props[k]) for k in required if k in props}
    return "x"


def leaves(schema: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every leaf path of a schema with each value it can take (each enum value, else one sample)."""
    out: list[tuple[tuple[str, ...], Any]] = []
    props = schema.get("properties")
    if props:
        for k, sub in props.items():
            out += leaves(sub, (*path, k))
        return out
    if schema.get("type") == "array" and schema["items"].get("properties"):
        for sub_path, v in leaves(schema["items"]):
            out.append(((*path, "[]", *sub_path), v))
        return out
    if isinstance(schema.get("additionalProperties"), dict) and schema["additionalProperties"].get(
        "properties"
    ):
        for sub_path, v in leaves(schema["additionalProperties"]):
            out.append(((*path, "{}", *sub_path), v))
        return out
    for v in schema.get("enum") or [sample(schema)]:
        out.append((path, f"v-{path[-1].lower()}" if v == "abc" else v))  # distinct strings per field
    return out


def set_path(doc: dict[str, Any], schema: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node: Any = doc
    sch = schema
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if part == "[]":
            sch = sch["items"]
            if not node:
                node.append(({} if "oneOf" in sch else sample(sch)) if sch.get("type") == "object" else None)
            node = node[0]
            continue
        if part == "{}":
            sch = sch["additionalProperties"]
            if "oneOf" in sch or "k" not in node:
                node["k"] = {} if "oneOf" in sch else sample(sch)
            node = node["k"]
            continue
        sch = sch["properties"][part]
        if last:
            node[part] = value
        else:
            if part not in node or not isinstance(node[part], dict | list):
                fresh = {} if "oneOf" in sch else sample(sch)  # a oneOf object takes just the leaf being set
                node[part] = [] if sch.get("type") == "array" else fresh
            node = node[part]


def crd_cases(shared: Path) -> list[tuple[str, tuple[str, ...], Any, dict[str, Any]]]:
    cases = []
    for crd in yaml.safe_load_all((shared / "testdata/flagger/crd.yaml").read_text()):
        kind = crd["spec"]["names"]["kind"]
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, value in leaves(schema["properties"]["spec"], ("spec",)):
            cases.append((kind, path, value, schema))
    return cases


# Free-form strings in the CRD that Rheostat reads and checks: a placeholder would rightly be refused.
REAL_VALUES: dict[tuple[str, ...], Any] = {
    ("spec", "service", "retries", "retryOn"): "connect-failure,refused-stream,503",
    ("spec", "service", "retries", "perTryTimeout"): "2s",
}


def test_every_field_of_flaggers_crds_is_accepted(shared: Path) -> None:
    cases = crd_cases(shared)
    assert len(cases) > 200
    rejected = []
    for kind, path, value, schema in cases:
        value = REAL_VALUES.get(path, value)
        doc = copy.deepcopy(BASES[kind])
        set_path(doc, schema, path, value)
        if path[:3] == ("spec", "analysis", "match"):
            doc["spec"]["analysis"]["iterations"] = 5
        try:
            parse_object(doc)
        except ManifestError as exc:
            rejected.append(f"{kind} {'.'.join(path)}={value!r}: {exc}")
    assert rejected == []


def test_flaggers_examples_load_with_their_strategy(shared: Path) -> None:
    examples = sorted((shared / "testdata/flagger/examples").glob("*.yaml"))
    assert len(examples) >= 5
    strategies = {}
    for f in examples:
        (obj,) = [o for o in load_file(f) if isinstance(o, Canary)]
        strategies[f.name] = obj.strategy
    assert strategies["istio-abtest.yaml"] is Strategy.AB_TESTING
    assert strategies["istio-canary.yaml"] is Strategy.CANARY


def test_defaults_are_flaggers() -> None:
    c = parse_object(
        BASES["Canary"]
        | {
            "spec": {
                **BASES["Canary"]["spec"],
                "analysis": {
                    "stepWeight": 5,
                    "metrics": [{"name": "x"}],
                    "webhooks": [{"name": "w", "url": "http://w"}],
                },
            }
        }
    )
    assert isinstance(c, Canary)
    a = c.spec.the_analysis
    assert (a.interval_s, a.threshold, a.max_weight, c.spec.progressDeadlineSeconds) == (60, 1, 100, 600)
    assert a.metrics[0].interval == "1m" and a.webhooks[0].timeout == "10s"


def bad(analysis: dict[str, Any], **spec: Any) -> ManifestError:
    doc = copy.deepcopy(BASES["Canary"])
    doc["spec"]["analysis"] = analysis
    doc["spec"].update(spec)
    with pytest.raises(ManifestError) as info:
        parse_object(doc, "repo/apps/canary.yaml")
    return info.value


@pytest.mark.parametrize(
    ("analysis", "path", "words"),
    [
        ({"stepWeight": 60, "maxWeight": 50}, "spec.analysis", "stepWeight: 60 is greater than maxWeight 50"),
        ({"stepWeights": [10, 5]}, "spec.analysis", "strictly increasing"),
        ({"interval": "1m"}, "spec.analysis", "set stepWeight, stepWeights or iterations"),
        (
            {"stepWeight": 10, "match": [{"headers": {"x": {"exact": "y"}}}]},
            "spec.analysis",
            "needs iterations",
        ),
        ({"stepWeight": 10, "interval": "50ms"}, "spec.analysis.interval", "below the minimum of 100ms"),
        ({"stepWeight": 10, "interval": "soon"}, "spec.analysis.interval", "expected a duration"),
        ({"stepWeight": "ten"}, "spec.analysis.stepWeight", "integer"),
        ({"stepWeight": 10, "stepWieght": 10}, "spec.analysis.stepWieght", "Extra inputs are not permitted"),
        (
            {"stepWeight": 10, "metrics": [{"name": "a", "thresholdRange": {"minimum": 1}}]},
            "spec.analysis.metrics[0].thresholdRange.minimum",
            "Extra inputs",
        ),
        (
            {"iterations": 2, "match": [{"headers": {"x": {"exact": "a", "regex": "b"}}}]},
            "spec.analysis.match[0].headers.x",
            "exactly one",
        ),
    ],
)
def test_bad_canaries_name_file_object_and_field(analysis: dict[str, Any], path: str, words: str) -> None:
    err = bad(analysis)
    text = str(err)
    assert text.startswith("repo/apps/canary.yaml: Canary t/a: ")
    assert any(e.path == path for e in err.errors), err.errors
    assert words in text


def test_unknown_kind_and_wrong_top_level_type() -> None:
    with pytest.raises(ManifestError, match="unknown kind 'DaemonSet'"):
        parse_text("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\n", "f.yaml")
    with pytest.raises(ManifestError, match="expected a mapping"):
        parse_text("- 1\n- 2\n", "f.yaml")


def test_a_tree_is_all_or_nothing_and_refuses_duplicates(tmp_path: Path) -> None:
    good = "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {name: m}\nspec:\n  provider: {type: prometheus}\n  query: up\n"
    (tmp_path / "a.yaml").write_text(good)
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.yaml").write_text("not: [valid")
    assert len(load_tree(tmp_path)) == 1
    (tmp_path / "b.yaml").write_text(good)
    with pytest.raises(ManifestError, match="also declared in"):
        load_tree(tmp_path)


def test_workload_revision_follows_the_template() -> None:
    from rheostat.model.workload import Workload

    doc: dict[str, Any] = {
        "apiVersion": "rheostat.dev/v1alpha1",
        "kind": "Workload",
        "metadata": {"name": "w", "namespace": "t"},
        "spec": {"replicas": 2, "template": {"command": ["python", "-m", "app", "--port", "{port}"]}},
    }
    a = parse_object(doc)
    doc["spec"]["replicas"] = 3
    b = parse_object(doc)
    doc["spec"]["template"]["env"] = {"X": "1"}
    c = parse_object(doc)
    assert isinstance(a, Workload) and isinstance(b, Workload) and isinstance(c, Workload)
    assert a.spec.template.revision() == b.spec.template.revision() != c.spec.template.revision()
    doc["spec"]["template"]["command"] = ["python", "-m", "app"]
    with pytest.raises(ManifestError, match=r"spec.template.command: .*\{port\}"):
        parse_object(doc)
