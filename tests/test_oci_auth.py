"""OCIRepository credentials and signatures: the registry's token auth with a docker-config Secret, and
cosign key signatures (in cosign's own `.sig` tag format) checked before anything is applied."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from rheostat.model.load import ManifestError, parse_object, read_text
from tests.oci_registry import OCI_MANIFEST, Registry, docker_registry
from tests.oci_token import TokenService, token_service
from tests.test_oci import World, workload

USER, PASSWORD = "robot", "s3cret-registry-password"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


@pytest.fixture(scope="module")
def private(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenService]]:
    tmp = tmp_path_factory.mktemp("private")
    with contextlib.ExitStack() as stack:
        tokens = stack.enter_context(token_service(tmp, USER, PASSWORD))
        reg = stack.enter_context(
            docker_registry(tmp, token={"realm": tokens.realm, "bundle": str(tokens.bundle)})
        )
        reg.auth = (USER, PASSWORD)
        yield reg, tokens


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with docker_registry(tmp_path_factory.mktemp("public")) as reg:
        yield reg


def docker_config(host: str, user: str, password: str) -> dict[str, str]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {".dockerconfigjson": json.dumps({"auths": {host: {"auth": auth}}})}


def everything_said(w: World) -> str:
    return json.dumps(
        [w.events(), w.store.list_states("OCIRepository"), w.store.list_states("Kustomization")]
    )


async def test_token_auth_with_a_docker_config_secret(
    tmp_path: Path, private: tuple[Registry, TokenService]
) -> None:
    reg, tokens = private
    digest = reg.push_artifact("team/app", "v1", {"w.yaml": workload("1")})
    secrets = {("flux-system", "regcred"): docker_config(reg.host, USER, PASSWORD)}
    w = World(
        tmp_path, f"oci://{reg.host}/team/app", secrets, ref={"tag": "v1"}, secretRef={"name": "regcred"}
    )
    await w.reconcile()
    assert w.version() == "1" and w.ks()["lastAppliedRevision"] == f"v1@{digest}"
    assert f"{USER} repository:team/app:pull" in tokens.issued
    assert PASSWORD not in everything_said(w)


async def test_anonymous_and_wrong_credentials_are_refused_by_field(
    tmp_path: Path, private: tuple[Registry, TokenService]
) -> None:
    reg, _ = private
    reg.push_artifact("team/closed", "v1", {"w.yaml": workload("1")})
    url = f"oci://{reg.host}/team/closed"
    anonymous = World(tmp_path / "a", url, ref={"tag": "v1"})
    await anonymous.reconcile()
    assert anonymous.ready_message().startswith(f"spec.secretRef: {url}: access to tag 'v1' denied (401)")
    wrong = World(
        tmp_path / "b",
        url,
        {("flux-system", "regcred"): docker_config(reg.host, USER, "not-the-password")},
        ref={"tag": "v1"},
        secretRef={"name": "regcred"},
    )
    await wrong.reconcile()
    assert wrong.ready_message() == f"spec.secretRef: {url}: the token service refused (401)"
    assert "not-the-password" not in everything_said(wrong)
    other_host = World(
        tmp_path / "c",
        url,
        {("flux-system", "regcred"): docker_config("ghcr.io", USER, PASSWORD)},
        ref={"tag": "v1"},
        secretRef={"name": "regcred"},
    )
    await other_host.reconcile()
    assert (
        other_host.ready_message()
        == f"spec.secretRef: secret flux-system/regcred has no credentials for {reg.host}"
    )
    for w in (anonymous, wrong, other_host):
        assert w.version() is None


# -- cosign -------------------------------------------------------------------------------------------------


def key_pair() -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def sign(
    reg: Registry, name: str, digest: str, key: ec.EllipticCurvePrivateKey, *, names: str | None = None
) -> None:
    """What `cosign sign --key` pushes: a simple-signing payload layer with its signature annotation."""
    payload = json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": f"{reg.host}/{name}"},
                "image": {"docker-manifest-digest": names or digest},
                "type": "cosign container image signature",
            },
            "optional": None,
        }
    ).encode()
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    config = b'{"architecture":"","os":""}'
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": reg.push_blob(name, config),
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": SIMPLE_SIGNING,
                "digest": reg.push_blob(name, payload),
                "size": len(payload),
                "annotations": {"dev.cosignproject.cosign/signature": signature},
            }
        ],
    }
    reg.push_manifest(name, digest.replace(":", "-") + ".sig", manifest)


def verified(w: World) -> dict[str, Any] | None:
    return next((c for c in w.source().get("conditions", []) if c["type"] == "SourceVerified"), None)


async def test_a_cosign_signature_by_a_trusted_key_is_verified(tmp_path: Path, public: Registry) -> None:
    key, pem = key_pair()
    digest = public.push_artifact("signed/app", "v1", {"w.yaml": workload("1")})
    sign(public, "signed/app", digest, key)
    secrets = {("flux-system", "cosign-keys"): {"old.pub": key_pair()[1], "release.pub": pem}}
    w = World(
        tmp_path,
        f"oci://{public.host}/signed/app",
        secrets,
        ref={"tag": "v1"},
        verify={"provider": "cosign", "secretRef": {"name": "cosign-keys"}},
    )
    await w.reconcile()
    assert w.version() == "1"
    condition = verified(w)
    assert condition is not None and condition["status"] == "True"
    assert "with cosign key release.pub (SHA256:" in condition["message"]


async def test_unsigned_wrongly_signed_and_misdirected_signatures_apply_nothing(
    tmp_path: Path, public: Registry
) -> None:
    key, pem = key_pair()
    stranger, _ = key_pair()
    secrets = {("flux-system", "cosign-keys"): {"release.pub": pem}}
    verify = {"provider": "cosign", "secretRef": {"name": "cosign-keys"}}
    url = f"oci://{public.host}/signed/bad"

    unsigned = public.push_artifact("signed/bad", "unsigned", {"w.yaml": workload("1")})
    w = World(tmp_path / "a", url, secrets, ref={"tag": "unsigned"}, verify=verify)
    await w.reconcile()
    assert (
        w.ready_message()
        == f"spec.verify: {unsigned} has no cosign signature (no tag {unsigned.replace(':', '-')}.sig)"
    )

    by_stranger = public.push_artifact("signed/bad", "stranger", {"w.yaml": workload("2")})
    sign(public, "signed/bad", by_stranger, stranger)
    w2 = World(tmp_path / "b", url, secrets, ref={"tag": "stranger"}, verify=verify)
    await w2.reconcile()
    assert w2.ready_message().startswith(
        f"spec.verify: no cosign signature of {by_stranger} verifies with the keys in secret "
        "flux-system/cosign-keys (release.pub)"
    )

    other = public.push_artifact("signed/bad", "other", {"w.yaml": workload("3")})
    sign(public, "signed/bad", other, key, names=unsigned)  # a good signature, of another digest
    w3 = World(tmp_path / "c", url, secrets, ref={"tag": "other"}, verify=verify)
    await w3.reconcile()
    assert "0 signature(s) for this digest found" in w3.ready_message()

    for world in (w, w2, w3):
        assert world.version() is None
        assert world.source()["conditions"][0]["reason"] == "VerificationFailed"
        c = verified(world)
        assert c is not None and c["status"] == "False"


# -- what is refused by name --------------------------------------------------------------------------------


def oci_doc(api: str = "source.toolkit.fluxcd.io/v1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": "OCIRepository",
        "metadata": {"name": "app", "namespace": "flux-system"},
        "spec": {"url": "oci://ghcr.io/org/app", "interval": "5m", **spec},
    }


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        (
            {"verify": {"provider": "notation", "secretRef": {"name": "n"}}},
            "spec.verify",
            "notation is not supported by Rheostat yet",
        ),
        (
            {"verify": {"provider": "cosign"}},
            "spec.verify",
            "keyless verification is not supported by Rheostat yet",
        ),
        ({"provider": "aws"}, "spec.provider", "provider 'aws' is not supported by Rheostat yet"),
        ({"url": "oci://ghcr.io/org/app:v1"}, "spec.url", "must not hold a tag or digest"),
        ({"url": "https://ghcr.io/org/app"}, "spec.url", "must start with oci://"),
        ({"ref": {"digest": "sha256:abc"}}, "spec.ref.digest", "should match pattern"),
        ({"layerSelector": {"operation": "move"}}, "spec.layerSelector.operation", "'extract' or 'copy'"),
        ({"serviceAccountName": "sa"}, "spec.serviceAccountName", "not supported by Rheostat yet"),
        ({"proxySecretRef": {"name": "p"}}, "spec.proxySecretRef", "not supported by Rheostat yet"),
    ],
)
def test_what_rheostat_does_not_do_is_refused_by_field(spec: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ManifestError) as err:
        parse_object(oci_doc(**spec), "sources.yaml")
    text = str(err.value)
    assert text.startswith(f"sources.yaml: OCIRepository flux-system/app: {field}")
    assert words in text


def test_v1beta2_loads_with_a_warning() -> None:
    loaded = read_text(yaml.safe_dump(oci_doc("source.toolkit.fluxcd.io/v1beta2")), "s.yaml")
    assert loaded.errors == [] and loaded.objects[0].kind == "OCIRepository"
    assert loaded.warnings == [
        (
            "OCIRepository flux-system/app",
            "apiVersion source.toolkit.fluxcd.io/v1beta2 is deprecated; use source.toolkit.fluxcd.io/v1",
        )
    ]
