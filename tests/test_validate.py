"""`rheostat validate`: schemas, `run`'s cross-object checks and policies over a folder; table, JSON and SARIF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.gitops.checks import check_references
from rheostat.model.load import ManifestError, parse_text

GOOD = """apiVersion: rheostat.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop}
spec:
  template:
    command: [app, --port, "{port}"]
    readinessProbe: {path: /readyz}
"""


def run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["validate", *args])
    return res.exit_code, res.output


def test_a_clean_folder_passes(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(GOOD)
    code, out = run(str(tmp_path), "--starter")
    assert code == 0 and "0 error(s)" in out


def test_a_policy_deny_fails_with_json_and_sarif(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(GOOD.replace("    readinessProbe: {path: /readyz}\n", ""))
    code, out = run(str(tmp_path), "--starter", "-o", "json")
    assert code == 1
    (finding,) = json.loads(out)
    assert finding["rule"] == "workload-must-have-readiness-probe" and finding["level"] == "error"
    assert finding["file"].endswith("web.yaml") and finding["object"] == "Workload shop/web"
    code, out = run(str(tmp_path), "--starter", "-o", "sarif")
    doc = json.loads(out)
    assert code == 1 and doc["version"] == "2.1.0"
    result = doc["runs"][0]["results"][0]
    assert result["ruleId"] == "workload-must-have-readiness-probe" and result["level"] == "error"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].endswith("web.yaml")
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert rules[result["ruleIndex"]]["id"] == result["ruleId"]


def test_schema_errors_name_file_object_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        GOOD.replace("replicas", "x").replace("spec:\n", "spec:\n  replicaz: 2\n")
    )
    code, out = run(str(tmp_path), "-o", "json")
    (finding,) = json.loads(out)
    assert code == 1 and finding["rule"] == "schema"
    assert finding["object"] == "Workload shop/web" and finding["message"].startswith("spec.replicaz")


def test_policies_in_the_folder_are_used_and_warn_does_not_fail(tmp_path: Path) -> None:
    from importlib import resources

    probe = (
        resources.files("rheostat.policy").joinpath("library", "workload-readiness-probe.yaml").read_text()
    )
    name = "  name: workload-must-have-readiness-probe\nspec:\n"
    (tmp_path / "policy.yaml").write_text(probe.replace(name, name + "  enforcementAction: warn\n"))
    (tmp_path / "web.yaml").write_text(GOOD.replace("    readinessProbe: {path: /readyz}\n", ""))
    code, out = run(str(tmp_path))
    assert code == 0 and "warning" in out


CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: shop}
spec:
  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}
  service: {port: 9898}
  analysis:
    interval: 10s
    stepWeight: 20
    metrics:
    - {name: request-success-rate, thresholdRange: {min: 99}}
    webhooks:
    - {name: load-test, url: "http://localhost:8470/loadtester/"}
"""

TEMPLATE = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: errors, namespace: shop}
spec:
  provider: {type: prometheus, address: "http://127.0.0.1:9090"}
  query: up
"""

# (what to change in the Canary or template, the field named, words of the message, level)
CROSS_OBJECT_CASES = [
    (
        (
            "{apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}",
            "{apiVersion: apps/v1, kind: Deployment, name: web}",
        ),
        "Canary shop/web",
        "spec.targetRef.kind",
        "Deployment cannot run in the embedded default (a Kubernetes target: run against a cluster with "
        "`rheostat run --kubeconfig`); supported: FeatureFlag, FlagSet, Workload",
    ),
    (
        (
            "targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}",
            "provider: istio\n  targetRef: {apiVersion: rheostat.dev/v1alpha1, kind: Workload, name: web}",
        ),
        "Canary shop/web",
        "spec.provider",
        "'istio' is not available in the embedded default; available: envoy, flags",
    ),
    (
        ("{name: request-success-rate,", "{name: error-rate,"),
        "Canary shop/web",
        "spec.analysis.metrics[0].name",
        "'error-rate' is not a builtin metric and has no templateRef or query; builtin metrics: "
        "request-success-rate, request-duration",
    ),
    (
        ("{type: prometheus,", "{type: externalmetrics,"),
        "MetricTemplate shop/errors",
        "spec.provider.type",
        "provider type 'externalmetrics' is not supported; supported: ",
    ),
    (
        ('address: "http://127.0.0.1:9090"', "address: 127.0.0.1:9090"),
        "MetricTemplate shop/errors",
        "spec.provider.address",
        "must be an http(s) URL, got '127.0.0.1:9090'",
    ),
    (
        ('"http://localhost:8470/loadtester/"', '"http://localhost:99999/"'),
        "Canary shop/web",
        "spec.analysis.webhooks[0].url",
        "is not a URL",
    ),
    (
        ('"http://localhost:8470/loadtester/"', '"localhost:8470/loadtester/"'),
        "Canary shop/web",
        "spec.analysis.webhooks[0].url",
        "is not an http:// or https:// URL with a host",
    ),
]


def write_app(tmp_path: Path, old: str = "", new: str = "") -> None:
    (tmp_path / "web.yaml").write_text(GOOD)
    (tmp_path / "canary.yaml").write_text(CANARY.replace(old, new) if old else CANARY)
    (tmp_path / "template.yaml").write_text(TEMPLATE.replace(old, new) if old else TEMPLATE)


def test_a_good_canary_with_its_workload_passes(tmp_path: Path) -> None:
    write_app(tmp_path)
    code, out = run(str(tmp_path), "-o", "json")
    assert code == 0 and json.loads(out) == []


@pytest.mark.parametrize(("change", "obj", "field", "words"), CROSS_OBJECT_CASES)
def test_validate_and_run_refuse_the_same_cross_object_errors(
    tmp_path: Path, change: tuple[str, str], obj: str, field: str, words: str
) -> None:
    write_app(tmp_path, *change)
    code, out = run(str(tmp_path), "-o", "json")
    (finding,) = json.loads(out)
    assert code == 1 and finding["level"] == "error" and finding["rule"] == "cross-object"
    assert (
        finding["object"] == obj
        and finding["message"].startswith(f"{field}: ")
        and words in finding["message"]
    )
    assert finding["file"].endswith("template.yaml" if obj.startswith("MetricTemplate") else "canary.yaml")
    # What `run` does with the same revision: its reconciler calls check_references before applying.
    objects = [o for f in sorted(tmp_path.iterdir()) for o in parse_text(f.read_text(), str(f))]
    files = {f"{o.kind} {o.metadata.key}": str(tmp_path / "x.yaml") for o in objects}
    files[obj] = finding["file"]
    with pytest.raises(ManifestError) as refused:
        check_references(objects, "Kustomization flux-system/flux-system", files=files)
    assert refused.value.source == finding["file"] and refused.value.obj == obj
    assert [(e.path, e.message) for e in refused.value.errors] == [tuple(finding["message"].split(": ", 1))]


def test_a_webhook_host_that_does_not_resolve_is_a_warning(tmp_path: Path) -> None:
    write_app(tmp_path, "http://localhost:8470/loadtester/", "http://flagger-loadtester.test/")
    code, out = run(str(tmp_path), "-o", "json")
    (finding,) = json.loads(out)
    assert code == 0 and finding["level"] == "warning" and finding["object"] == "Canary shop/web"
    assert finding["message"].startswith("spec.analysis.webhooks[0].url: host 'flagger-loadtester.test'")
    # `run` does not look hosts up when it applies: the same revision is accepted.
    objects = [o for f in sorted(tmp_path.iterdir()) for o in parse_text(f.read_text(), str(f))]
    check_references(objects, "Kustomization flux-system/flux-system")


def test_a_bad_retry_policy_is_a_schema_error_naming_the_field(tmp_path: Path) -> None:
    write_app(
        tmp_path, "  service: {port: 9898}", "  service: {port: 9898, retries: {retryOn: connect-fail}}"
    )
    code, out = run(str(tmp_path), "-o", "json")
    (finding,) = json.loads(out)
    assert code == 1 and finding["rule"] == "schema" and finding["object"] == "Canary shop/web"
    assert (
        finding["message"].startswith("spec.service.retries.retryOn") and "connect-fail" in finding["message"]
    )


def test_flaggers_examples_get_the_target_kind_error_each(shared: Path) -> None:
    examples = shared / "testdata" / "flagger" / "examples"
    code, out = run(str(examples), "-o", "json")
    findings = json.loads(out)
    errors = [f for f in findings if f["level"] == "error"]
    files = sorted(p.name for p in examples.glob("*.yaml"))
    assert code == 1 and sorted(Path(f["file"]).name for f in errors) == files
    for f in errors:
        assert f["object"] == "Canary test/podinfo" and f["rule"] == "cross-object"
        assert f["message"].startswith("spec.targetRef.kind: Deployment cannot run in the embedded default")
    # Their load tester lives at http://flagger-loadtester.test/, a name that never resolves (RFC 2606).
    warnings = [f for f in findings if f["level"] == "warning"]
    assert warnings and all("'flagger-loadtester.test'" in f["message"] for f in warnings)


def test_flaggers_examples_pass_for_a_cluster_but_an_unavailable_provider_is_named(shared: Path) -> None:
    examples = shared / "testdata" / "flagger" / "examples"
    code, out = run("--cluster", str(examples), "-o", "json")
    assert code == 0 and [f for f in json.loads(out) if f["level"] == "error"] == []
    # kuma-canary.yaml sets no provider: Flagger's is the controller's -mesh-provider, here Kuma's, which
    # Rheostat has no router for; the Canaries that name their provider are unaffected.
    code, out = run("--cluster", "--mesh-provider", "kuma", str(examples), "-o", "json")
    errors = [f for f in json.loads(out) if f["level"] == "error"]
    assert code == 1
    assert [(Path(f["file"]).name, f["message"]) for f in errors] == [
        (
            "kuma-canary.yaml",
            "spec.provider: 'kuma' is not available in this cluster; available: gatewayapi, gatewayapi:v1, "
            "gatewayapi:v1beta1, istio, kubernetes, linkerd, nginx, smi:v1alpha2, smi:v1alpha3",
        )
    ]
