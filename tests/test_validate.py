"""`rheostat validate`: schemas and policies over a folder, offline; table, JSON and SARIF 2.1.0."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from rheostat.cli.main import cli

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
