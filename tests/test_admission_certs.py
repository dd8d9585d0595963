"""The webhook's certificates on a cluster (kmock through lightkube): the Secret rheostat-webhook-tls, the
caBundle of the ValidatingWebhookConfiguration `rheostat`, renewal before expiry; and cert-manager's files."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509

from rheostat.plugins.kube.client import LightkubeAPI
from rheostat.plugins.kube.kinds import SECRET, VALIDATING_WEBHOOK_CONFIGURATION
from rheostat.server.certs import Bundle, CertError, issue, new_ca, service_names
from rheostat.server.webhook_tls import FileKeeper, SecretKeeper, WebhookTLS
from tests import kubeapi
from tests.kube_e2e_world import RHEOSTAT
from tests.kube_schemas import assert_valid
from tests.kubeapi import KubeServer
from tests.processes import stop
from tests.servers import free_port

kube_server = kubeapi.kube_server
kubeconfig = kubeapi.kubeconfig

NS = "rheostat-system"
NAMES = service_names("rheostat-webhook", NS)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def webhook_configuration() -> dict[str, Any]:
    """As `rheostat install` writes it (without caBundle)."""
    hook = {
        "name": "validation.rheostat.dev",
        "clientConfig": {
            "service": {
                "name": "rheostat-webhook",
                "namespace": NS,
                "path": "/admission/validate",
                "port": 443,
            }
        },
        "rules": [
            {"apiGroups": ["*"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}
        ],
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 3,
    }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "rheostat"},
        "webhooks": [hook, {**hook, "name": "validation-delete.rheostat.dev"}],
    }


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def api(kube_server: KubeServer, kubeconfig: Path) -> AsyncIterator[LightkubeAPI]:
    client = LightkubeAPI.from_kubeconfig(str(kubeconfig))
    try:
        yield client
    finally:
        await client.close()


def replica(api: LightkubeAPI, clock: Clock) -> WebhookTLS:
    return WebhookTLS(
        SecretKeeper(api, NS),
        managed=True,
        names=NAMES,
        ips=["127.0.0.1"],
        kube=api,
        validity=dt.timedelta(days=90),
        clock=clock,
    )


def ca_bundles(server: KubeServer) -> list[bytes]:
    obj = server.object(VALIDATING_WEBHOOK_CONFIGURATION, "", "rheostat")
    assert obj is not None
    return [base64.b64decode(h["clientConfig"]["caBundle"]) for h in obj["webhooks"]]


def secret_bundle(server: KubeServer) -> Bundle:
    obj = server.object(SECRET, NS, "rheostat-webhook-tls")
    assert obj is not None
    assert_valid(obj)
    data = {k: base64.b64decode(v) for k, v in obj["data"].items()}
    return Bundle(data["tls.crt"], data["tls.key"], data["ca.crt"], data.get("ca.key", b""))


async def test_the_certificate_is_kept_in_the_secret_and_the_ca_bundle_patched(
    kube_server: KubeServer, api: LightkubeAPI
) -> None:
    kube_server.add(webhook_configuration())
    clock = Clock()
    first = replica(api, clock)
    await first.check()
    kept = secret_bundle(kube_server)
    secret = kube_server.object(SECRET, NS, "rheostat-webhook-tls")
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert {"tls.crt", "tls.key", "ca.crt"} <= set(secret["data"])
    assert kept == first.bundle
    assert set(NAMES) <= set(kept.dns_names())
    assert "rheostat-webhook.rheostat-system.svc" in kept.dns_names()
    san = kept.serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert ca_bundles(kube_server) == [kept.ca_crt, kept.ca_crt]
    # the rest of the configuration, as the install wrote it, is untouched
    vwc = kube_server.object(VALIDATING_WEBHOOK_CONFIGURATION, "", "rheostat")
    assert vwc is not None
    assert_valid(vwc)
    for hook in vwc["webhooks"]:
        hook["clientConfig"].pop("caBundle")
    assert vwc["webhooks"] == webhook_configuration()["webhooks"]

    # a second replica serves what the Secret holds: no second CA, no write
    writes = kube_server.verbs()
    second = replica(api, clock)
    await second.check()
    assert second.bundle == kept
    assert (
        kube_server.verbs()["patch"] == writes["patch"] and kube_server.verbs()["update"] == writes["update"]
    )


async def test_the_serving_certificate_is_renewed_when_a_third_of_it_is_left_and_the_ca_kept(
    kube_server: KubeServer, api: LightkubeAPI
) -> None:
    kube_server.add(webhook_configuration())
    clock = Clock()
    tls = replica(api, clock)
    await tls.check()
    before = secret_bundle(kube_server)
    clock.now = START + dt.timedelta(days=59)  # 31 days of 90 left: more than a third
    await tls.check()
    assert secret_bundle(kube_server) == before
    clock.now = START + dt.timedelta(days=61)  # 29 left: renewed
    await tls.check()
    after = secret_bundle(kube_server)
    assert after.serial() != before.serial()
    assert after.not_after() > before.not_after()
    assert after.ca_crt == before.ca_crt and ca_bundles(kube_server) == [before.ca_crt] * 2
    assert tls.bundle == after


async def test_a_ca_near_its_end_is_replaced_and_both_are_trusted_meanwhile(
    kube_server: KubeServer, api: LightkubeAPI
) -> None:
    kube_server.add(webhook_configuration())
    clock = Clock()
    tls = replica(api, clock)
    await tls.check()
    old_ca = secret_bundle(kube_server).ca
    clock.now = old_ca.not_valid_after_utc - dt.timedelta(days=300)  # less than a third of ten years left
    await tls.check()
    after = secret_bundle(kube_server)
    cas = x509.load_pem_x509_certificates(after.ca_crt)
    assert [c.serial_number for c in cas][1:] == [old_ca.serial_number]
    assert cas[0].serial_number != old_ca.serial_number
    assert after.serving.issuer == cas[0].subject
    assert ca_bundles(kube_server) == [after.ca_crt] * 2


async def test_two_replicas_starting_at_once_end_up_serving_the_secrets_certificate(
    kube_server: KubeServer, api: LightkubeAPI
) -> None:
    kube_server.add(webhook_configuration())
    clock = Clock()
    a, b = replica(api, clock), replica(api, clock)
    await asyncio.gather(a.check(), b.check())  # both find no Secret and both write one
    await asyncio.gather(a.check(), b.check())  # the next check (within RECHECK_S of a write) converges
    kept = secret_bundle(kube_server)
    assert a.bundle == kept and b.bundle == kept
    assert ca_bundles(kube_server) == [kept.ca_crt] * 2


async def test_a_webhook_configuration_installed_later_gets_its_ca_bundle_at_the_next_check(
    kube_server: KubeServer, api: LightkubeAPI
) -> None:
    tls = replica(api, Clock())
    await tls.check()  # not installed yet: serves anyway
    assert tls.bundle is not None
    kube_server.add(webhook_configuration())
    await tls.check()
    assert ca_bundles(kube_server) == [tls.bundle.ca_crt] * 2


async def test_an_unusable_secret_is_made_again(kube_server: KubeServer, api: LightkubeAPI) -> None:
    kube_server.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "rheostat-webhook-tls", "namespace": NS},
            "data": {
                "tls.crt": base64.b64encode(b"junk").decode(),
                "tls.key": base64.b64encode(b"junk").decode(),
            },
        }
    )
    tls = replica(api, Clock())
    await tls.check()
    assert secret_bundle(kube_server) == tls.bundle


async def test_the_private_keys_never_reach_the_logs(
    kube_server: KubeServer, api: LightkubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = Clock()
    tls = replica(api, clock)
    await tls.check()
    clock.now = START + dt.timedelta(days=80)
    await tls.check()
    assert tls.bundle is not None
    key_body = tls.bundle.tls_key.decode().splitlines()[1]
    assert "renewed" in caplog.text
    assert "PRIVATE KEY" not in caplog.text and key_body not in caplog.text


def write_cert_manager_files(folder: Path, now: dt.datetime) -> Bundle:
    ca_crt, ca_key = new_ca(now)
    crt, key = issue(ca_crt, ca_key, NAMES, ["127.0.0.1"], now)
    folder.mkdir(exist_ok=True)
    (folder / "tls.crt").write_bytes(crt)
    (folder / "tls.key").write_bytes(key)
    (folder / "ca.crt").write_bytes(ca_crt)
    return Bundle(crt, key, ca_crt)


async def test_cert_manager_files_are_served_and_reloaded_never_written(tmp_path: Path) -> None:
    folder = tmp_path / "cert-manager"
    given = write_cert_manager_files(folder, START)
    tls = WebhookTLS(FileKeeper(folder), managed=False, names=NAMES, ips=["127.0.0.1"], clock=Clock())
    await tls.check()
    assert tls.bundle == given
    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    renewed = write_cert_manager_files(folder, START + dt.timedelta(days=1))  # cert-manager renewed it
    await tls.check()
    assert tls.bundle == renewed


async def test_cert_manager_files_that_are_not_a_key_pair_are_refused_by_name(tmp_path: Path) -> None:
    folder = tmp_path / "cert-manager"
    write_cert_manager_files(folder, START)
    other = write_cert_manager_files(tmp_path / "other", START)
    (folder / "tls.key").write_bytes(other.tls_key)
    tls = WebhookTLS(FileKeeper(folder), managed=False, names=NAMES, ips=["127.0.0.1"])
    with pytest.raises(CertError, match=r"tls\.key is not the key of tls\.crt"):
        await tls.check()


async def test_rheostat_run_serves_the_webhook_with_a_certificate_from_its_secret(
    kube_server: KubeServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """The real `rheostat run --kubeconfig ... --webhook`: the Secret made, caBundle patched, a review answered
    over TLS verified with the CA the Secret holds."""
    kube_server.add(webhook_configuration())
    hook_port = free_port()
    err = tmp_path / "run.err"
    proc = spawn_run(kubeconfig, tmp_path / "data", hook_port, err)
    try:
        deadline = time.monotonic() + 60
        while "serving" not in err.read_text(errors="replace"):
            assert proc.poll() is None, f"`rheostat run` exited: {err.read_text()}"
            assert time.monotonic() < deadline, f"`rheostat run` did not serve: {err.read_text()}"
            await asyncio.sleep(0.1)
        kept = secret_bundle(kube_server)
        assert ca_bundles(kube_server) == [kept.ca_crt] * 2
        verify = ssl_context_for(kept.ca_crt)
        uid = str(uuid.uuid4())
        doc = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "operation": "CREATE",
                "namespace": "apps",
                "object": {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "c", "namespace": "apps"},
                },
            },
        }
        async with httpx.AsyncClient(verify=verify, timeout=10) as client:
            r = await client.post(f"https://127.0.0.1:{hook_port}/admission/validate", json=doc)
        assert r.status_code == 200
        assert r.json()["response"] == {"uid": uid, "allowed": True}
        assert "PRIVATE KEY" not in err.read_text()
    finally:
        await asyncio.to_thread(stop, proc)
    assert proc.returncode == 0, err.read_text()


def ssl_context_for(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())


def spawn_run(kubeconfig: Path, data: Path, hook_port: int, err: Path) -> subprocess.Popen[bytes]:
    assert RHEOSTAT is not None, f"the `rheostat` console script is not installed beside {sys.executable}"
    with open(err, "wb") as err_file:
        return subprocess.Popen(
            [RHEOSTAT, "run", "--kubeconfig", str(kubeconfig), "--data-dir", str(data), "--listen",
             f"127.0.0.1:{free_port()}", "--webhook", "--webhook-port", str(hook_port), "--webhook-namespace", NS],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file, env={**os.environ},
        )  # fmt: skip


async def test_a_taken_webhook_port_is_told_in_one_line(kubeconfig: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = tmp_path / "run.err"
        proc = spawn_run(kubeconfig, tmp_path / "data", port, err)
        try:
            code = await asyncio.to_thread(proc.wait, 60)
        finally:
            await asyncio.to_thread(stop, proc)
    assert code == 1
    lines = err.read_text().strip().splitlines()
    assert lines == [
        f"error: the admission webhook cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert "Traceback" not in err.read_text()
