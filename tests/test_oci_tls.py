"""OCIRepository `certSecretRef` against a real docker-registry served over TLS with a private CA that also
requires client certificates: the CA and the client certificate come from the Secret, and each missing piece
is named."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.oci_registry import Registry, docker_registry
from tests.pki import cert, key, pem
from tests.test_oci import World, workload


@dataclass
class Pki:
    ca: str
    client_crt: str
    client_key: str
    files: dict[str, str]


def pki(tmp: Path) -> Pki:
    ca_key = key()
    ca = cert("rheostat test CA", ca_key, None, ca=True)
    issuer = (ca.subject, ca_key)
    server_key, client_key = key(), key()
    server = cert("127.0.0.1", server_key, issuer, server=True)
    client = cert("flux", client_key, issuer)
    files = {}
    for name, text in {
        "ca.crt": pem(ca),
        "server.crt": pem(server),
        "server.key": pem(server_key),
    }.items():
        (tmp / name).write_text(text)
        files[name] = str(tmp / name)
    return Pki(
        (tmp / "ca.crt").read_text(),
        pem(client),
        pem(client_key),
        files,
    )


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, Pki]]:
    tmp = tmp_path_factory.mktemp("tls-registry")
    keys = pki(tmp)
    (tmp / "client.crt").write_text(keys.client_crt)
    (tmp / "client.key").write_text(keys.client_key)
    ctx = ssl.create_default_context(cafile=keys.files["ca.crt"])
    ctx.load_cert_chain(tmp / "client.crt", tmp / "client.key")
    tls = {
        "certificate": keys.files["server.crt"],
        "key": keys.files["server.key"],
        "clientca": keys.files["ca.crt"],
    }
    with docker_registry(tmp, tls=tls, client_tls=ctx) as reg:
        yield reg, keys


async def test_a_private_ca_and_a_client_certificate_from_the_secret(
    tmp_path: Path, tls_registry: tuple[Registry, Pki]
) -> None:
    reg, keys = tls_registry
    digest = reg.push_artifact("secure/app", "v1", {"w.yaml": workload("1")})
    url = f"oci://{reg.host}/secure/app"
    secret = {"ca.crt": keys.ca, "tls.crt": keys.client_crt, "tls.key": keys.client_key}
    w = World(
        tmp_path,
        url,
        {("flux-system", "tls"): secret},
        ref={"tag": "v1"},
        insecure=False,
        certSecretRef={"name": "tls"},
    )
    await w.reconcile()
    assert w.version() == "1" and w.ks()["lastAppliedRevision"] == f"v1@{digest}"
    said = json.dumps([w.events(), w.store.list_states("OCIRepository")])
    assert "PRIVATE KEY" not in said


def tls_world(tmp: Path, reg: Registry, secret: dict[str, str] | None) -> World:
    url = f"oci://{reg.host}/secure/app"
    if secret is None:
        return World(tmp, url, ref={"tag": "v1"}, insecure=False)
    secrets = {("flux-system", "tls"): secret}
    return World(tmp, url, secrets, ref={"tag": "v1"}, insecure=False, certSecretRef={"name": "tls"})


async def test_each_missing_piece_is_named(tmp_path: Path, tls_registry: tuple[Registry, Pki]) -> None:
    reg, keys = tls_registry
    reg.push_artifact("secure/app", "v1", {"w.yaml": workload("1")})
    no_ca = tls_world(tmp_path / "a", reg, None)
    await no_ca.reconcile()
    assert no_ca.ready_message().startswith(f"spec.url: cannot reach oci://{reg.host}/secure/app: ")
    assert "needs its ca.crt in spec.certSecretRef" in no_ca.ready_message()
    ca_only = tls_world(tmp_path / "b", reg, {"ca.crt": keys.ca})
    await ca_only.reconcile()  # the registry wants a client certificate
    assert ca_only.ready_message().startswith(f"spec.url: cannot reach oci://{reg.host}/secure/app: ")
    half = tls_world(tmp_path / "c", reg, {"ca.crt": keys.ca, "tls.crt": keys.client_crt})
    await half.reconcile()
    assert half.ready_message() == (
        "spec.certSecretRef: secret flux-system/tls has tls.crt without tls.key (or the other way round); "
        "give both or neither"
    )
    for w in (no_ca, ca_only, half):
        assert w.version() is None
