"""Every Flux API version users commit: read, read with a warning naming the replacement, or refused by name
with what to do; and `rheostat validate` reporting every bad object of every file at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.cli.validate import validate
from rheostat.model.core import CoreObject
from rheostat.model.gitops import GitRepository, Kustomization, Receiver
from rheostat.model.load import ManifestError, parse_object, read_text

EXAMPLES = "testdata/flux-examples"


def doc(api_version: str, kind: str, spec: dict[str, object], name: str = "x") -> dict[str, object]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "flux-system"},
        "spec": spec,
    }


GIT: dict[str, object] = {"url": "https://example.com/repo", "interval": "1m", "ref": {"branch": "main"}}
KS: dict[str, object] = {
    "sourceRef": {"kind": "GitRepository", "name": "flux-system"},
    "path": "./apps",
    "prune": True,
}
RECEIVER: dict[str, object] = {
    "type": "generic",
    "secretRef": {"name": "t"},
    "resources": [{"kind": "GitRepository", "name": "x"}],
}


@pytest.mark.parametrize(
    ("api_version", "kind", "spec", "model"),
    [
        (f"source.toolkit.fluxcd.io/{v}", "GitRepository", GIT, GitRepository)
        for v in ("v1", "v1beta2", "v1beta1")
    ]
    + [
        (f"kustomize.toolkit.fluxcd.io/{v}", "Kustomization", KS, Kustomization)
        for v in ("v1", "v1beta2", "v1beta1")
    ]
    + [(f"notification.toolkit.fluxcd.io/{v}", "Receiver", RECEIVER, Receiver) for v in ("v1", "v1beta2")],
)
def test_every_version_of_the_kinds_rheostat_runs_loads(
    api_version: str, kind: str, spec: dict[str, object], model: type
) -> None:
    text = yaml.safe_dump(doc(api_version, kind, spec))
    loaded = read_text(text, "f.yaml")
    assert loaded.errors == []
    assert isinstance(loaded.objects[0], model)
    warnings = [w for _, w in loaded.warnings]
    if api_version.endswith("/v1"):
        assert warnings == []
    else:
        group = api_version.rsplit("/", 1)[0]
        assert warnings == [f"apiVersion {api_version} is deprecated; use {group}/v1"]


def test_deprecated_fields_of_old_versions_load_with_a_warning_and_still_act() -> None:
    ks = doc(
        "kustomize.toolkit.fluxcd.io/v1beta2",
        "Kustomization",
        {
            **KS,
            "validation": "client",
            "patchesStrategicMerge": [{"kind": "Workload", "metadata": {"name": "a"}}],
        },
    )
    git = doc("source.toolkit.fluxcd.io/v1beta2", "GitRepository", {**GIT, "gitImplementation": "go-git"})
    loaded = read_text(yaml.safe_dump_all([ks, git]), "f.yaml")
    assert loaded.errors == []
    obj = loaded.objects[0]
    assert isinstance(obj, Kustomization) and obj.spec.needs_kustomize
    warned = [w for _, w in loaded.warnings]
    assert "spec.patchesStrategicMerge: deprecated; use spec.patches" in warned
    assert "spec.validation: deprecated and without effect; remove it" in warned
    assert "spec.gitImplementation: deprecated and without effect; remove it" in warned


NOT_YET = [  # Helm's kinds are read since issue 14.3, OCIRepository and Bucket since 14.4/14.5
    ("image.toolkit.fluxcd.io", "ImageRepository", ("v1", "v1beta2")),
    ("image.toolkit.fluxcd.io", "ImagePolicy", ("v1", "v1beta2")),
    ("image.toolkit.fluxcd.io", "ImageUpdateAutomation", ("v1", "v1beta2")),
]


@pytest.mark.parametrize(
    ("api_version", "kind"), [(f"{g}/{v}", k) for g, k, versions in NOT_YET for v in versions]
)
def test_kinds_not_run_yet_are_refused_by_name_with_what_to_do(api_version: str, kind: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_object(doc(api_version, kind, {"interval": "1m"}, name="podinfo"), "apps/podinfo.yaml")
    text = str(err.value)
    assert text.startswith(
        f"apps/podinfo.yaml: {kind} flux-system/podinfo: kind: {kind} is not supported by Rheostat yet: "
    )
    assert len(text.split("not supported by Rheostat yet: ", 1)[1]) > 20  # says what to do
    assert "unknown kind" not in text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("serviceAccountName", "dev-team"),
        ("kubeConfig", {"secretRef": {"name": "remote"}}),
        ("healthCheckExprs", [{"apiVersion": "x/v1", "kind": "Y", "current": "true"}]),
        ("deletionPolicy", "Orphan"),
        ("postBuild", {"substituteStrategy": "Strict"}),
    ],
)
def test_kustomization_fields_not_run_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ManifestError) as err:
        parse_object(doc("kustomize.toolkit.fluxcd.io/v1", "Kustomization", {**KS, field: value}), "c.yaml")
    text = str(err.value)
    assert "is not supported by Rheostat yet: " in text
    assert "Extra inputs" not in text


def test_a_misspelt_kustomization_field_says_so_and_is_not_called_unsupported() -> None:
    with pytest.raises(ManifestError) as err:
        parse_object(doc("kustomize.toolkit.fluxcd.io/v1", "Kustomization", {**KS, "prunne": True}), "c.yaml")
    assert "spec.prunne: Kustomization has no field 'prunne' here (check the spelling)" in str(err.value)


def test_sources_other_than_git_oci_and_buckets_are_refused_by_name() -> None:
    spec = {**KS, "sourceRef": {"kind": "ExternalArtifact", "name": "x"}}
    with pytest.raises(
        ManifestError, match=r"spec\.sourceRef\.kind: ExternalArtifact is not supported by Rheostat yet"
    ):
        parse_object(doc("kustomize.toolkit.fluxcd.io/v1", "Kustomization", spec), "c.yaml")
    for kind in ("OCIRepository", "Bucket"):
        spec = {**KS, "sourceRef": {"kind": kind, "name": "x"}}
        parse_object(doc("kustomize.toolkit.fluxcd.io/v1", "Kustomization", spec), "c.yaml")


def test_a_version_flux_never_served_names_the_ones_it_does() -> None:
    with pytest.raises(
        ManifestError, match=r"apiVersion: Kustomization has no apiVersion 'kustomize.toolkit.fluxcd.io/v2'"
    ):
        parse_object(doc("kustomize.toolkit.fluxcd.io/v2", "Kustomization", KS), "c.yaml")


def test_core_kinds_beside_flagger_files_load_and_secret_values_are_not_kept() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"token": "c2VjcmV0"}}
    obj = parse_object(secret)
    assert isinstance(obj, CoreObject)
    assert "c2VjcmV0" not in json.dumps(obj.model_dump())
    for api_version, kind in [
        ("v1", "Namespace"),
        ("v1", "Service"),
        ("v1", "ConfigMap"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("apps/v1", "Deployment"),
    ]:
        assert isinstance(
            parse_object({"apiVersion": api_version, "kind": kind, "metadata": {"name": "a"}}), CoreObject
        )


# -- validate -------------------------------------------------------------------------------------------


def test_validate_reports_every_bad_object_of_every_file(tmp_path: Path) -> None:
    bad = [
        doc("helm.toolkit.fluxcd.io/v2", "HelmRelease", {}, name="a"),
        doc(
            "kustomize.toolkit.fluxcd.io/v1",
            "Kustomization",
            {**KS, "decryption": {"provider": "sops"}},
            name="b",
        ),
        doc("source.toolkit.fluxcd.io/v1beta2", "OCIRepository", {}, name="c"),
    ]
    (tmp_path / "one.yaml").write_text(yaml.safe_dump_all(bad))
    (tmp_path / "two.yaml").write_text(
        yaml.safe_dump(doc("source.toolkit.fluxcd.io/v1", "Bucket", {"endpoint": "s3.example"}, name="d"))
    )
    (tmp_path / "old.yaml").write_text(
        yaml.safe_dump(doc("source.toolkit.fluxcd.io/v1beta2", "GitRepository", GIT))
    )
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [one.yaml, two.yaml]\npatches:\n- path: patch.yaml\n"
    )
    (tmp_path / "patch.yaml").write_text(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: b}\nspec: {path: ./x}\n"
    )
    results = validate([tmp_path])
    errors = sorted((Path(r.file).name, r.object) for r in results if r.level == "error")
    assert errors == [
        ("one.yaml", "HelmRelease flux-system/a"),
        ("one.yaml", "Kustomization flux-system/b"),
        ("one.yaml", "OCIRepository flux-system/c"),
        ("two.yaml", "Bucket flux-system/d"),
    ]
    warnings = [(Path(r.file).name, r.message) for r in results if r.level == "warning"]
    assert warnings == [
        (
            "old.yaml",
            "apiVersion source.toolkit.fluxcd.io/v1beta2 is deprecated; use source.toolkit.fluxcd.io/v1",
        )
    ]


def test_validate_names_every_problem_of_the_upstream_examples_at_once(shared: Path) -> None:
    repos = shared / EXAMPLES
    runner = CliRunner()
    out = runner.invoke(
        cli,
        [
            "validate",
            str(repos / "flux2-multi-tenancy"),
            str(repos / "flux2-kustomize-helm-example"),
            "-o",
            "sarif",
        ],
    )
    assert out.exit_code == 1, out.output
    found = json.loads(out.output)["runs"][0]["results"]
    text = [r["message"]["text"] for r in found]
    files = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"].split("flux-examples/")[1]
        for r in found
    }
    assert {
        "flux2-multi-tenancy/clusters/staging/infrastructure.yaml",
        "flux2-multi-tenancy/clusters/production/tenants.yaml",
        "flux2-multi-tenancy/infrastructure/kyverno/source.yaml",
        "flux2-multi-tenancy/tenants/base/dev-team/sync.yaml",
        "flux2-kustomize-helm-example/clusters/staging/artifacts.yaml",
        "flux2-kustomize-helm-example/infrastructure/controllers/cert-manager.yaml",
    } <= files
    # the OCIRepository beside the HelmRelease loads (an OCI source); the HelmRelease is refused
    assert (
        sum(
            "flux2-kustomize-helm-example/infrastructure/controllers/cert-manager.yaml"
            in r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in found
        )
        == 1
    )
    assert (
        sum(t.startswith("Kustomization flux-system/kyverno") and "serviceAccountName" in t for t in text)
        == 5  # kyverno and kyverno-policies in two clusters, and kyverno-controller
    )
    assert not any("kustomization.yaml" in f or "patch" in f for f in files)  # kustomize's files
    assert not any("Extra inputs" in t or "document 1" in t for t in text)
    assert not any("unknown kind" in t and "fluxcd.io" in t for t in text)  # every Flux kind named


def test_a_kustomize_file_under_another_name_says_what_it_is() -> None:
    text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n"
    with pytest.raises(ManifestError) as err:
        parse_object(yaml.safe_load(text), "apps/kustomize.yaml")
    assert str(err.value).startswith(
        "apps/kustomize.yaml: kustomize Kustomization: kind: kustomize's own file"
    )
    assert "document 1" not in str(err.value)
