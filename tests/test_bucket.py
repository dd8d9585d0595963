"""Bucket sources against an S3 API over HTTP (moto's server, a mock: see tests/s3_server.py): listed and
fetched with SigV4, ignore rules applied before download, Flux's revision, and bad input changing nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rheostat.gitops.bucket import BucketFetcher
from rheostat.gitops.fetch import source_fetchers
from rheostat.gitops.reconciler import GitOps
from rheostat.model.load import ManifestError, parse_object
from rheostat.store import Store
from tests.s3_server import REGION, S3, s3_server
from tests.servers import free_port
from tests.test_oci import Clock, found, workload
from tests.test_oci_tls import Pki, pki


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


class World:
    def __init__(
        self,
        tmp: Path,
        s3: S3,
        bucket: str,
        *,
        secret: dict[str, str] | None = None,
        path: str = "./",
        **spec: Any,
    ):
        self.store = Store(":memory:")
        creds = {"accesskey": s3.access_key, "secretkey": s3.secret_key} if secret is None else secret
        self.secrets = {("flux-system", "s3-creds"): creds}
        self.fetchers = source_fetchers(tmp / "work", lambda ns, n: self.secrets.get((ns, n)))
        endpoint = s3.url.removeprefix("http://")  # host:port, as Flux users write it
        boot = [
            parse_object(
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "Bucket",
                    "metadata": {"name": "app", "namespace": "flux-system"},
                    "spec": {
                        "bucketName": bucket,
                        "endpoint": endpoint,
                        "region": REGION,
                        "insecure": True,
                        "interval": "1h",
                        "secretRef": {"name": "s3-creds"},
                        **spec,
                    },
                }
            ),
            parse_object(
                {
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                    "kind": "Kustomization",
                    "metadata": {"name": "app", "namespace": "flux-system"},
                    "spec": {
                        "sourceRef": {"kind": "Bucket", "name": "app"},
                        "path": path,
                        "prune": True,
                        "interval": "1h",
                    },
                }
            ),
        ]
        self.g = GitOps(self.store, self.fetchers, bootstrap=boot, clock=Clock().now)

    async def reconcile(self) -> None:
        await self.g.reconcile_once(force=True)

    def source(self) -> dict[str, Any]:
        return self.store.get_state("Bucket", "flux-system/app") or {}

    def ks(self) -> dict[str, Any]:
        return self.store.get_state("Kustomization", "flux-system/app") or {}

    def ready_message(self) -> str:
        return str(next(c["message"] for c in self.source()["conditions"] if c["type"] == "Ready"))

    def workloads(self) -> dict[str, str]:
        return {
            o.key: str(o.body["spec"]["template"]["command"][-1]) for o in self.store.list_objects("Workload")
        }

    def requests(self) -> int:
        fetcher = self.fetchers.kinds["Bucket"]
        assert isinstance(fetcher, BucketFetcher)
        return fetcher.last_requests

    def said(self) -> str:
        events = [f"{e.reason}: {e.message}" for e in self.store.events(limit=1000)]
        return json.dumps([events, self.store.list_states("Bucket"), self.store.list_states("Kustomization")])


def named(name: str, version: str) -> str:
    return workload(version).replace("name: w", f"name: {name}")


async def test_a_bucket_is_applied_and_an_unchanged_one_costs_the_listing_only(
    tmp_path: Path, s3: S3
) -> None:
    s3.create("manifests")
    s3.put("manifests", "apps/w.yaml", named("w", "1"))
    s3.put("manifests", "apps/extra/x.yaml", named("x", "1"))
    s3.put("manifests", "other/y.yaml", named("y", "1"))
    w = World(tmp_path, s3, "manifests", prefix="apps/", path="./apps")
    await w.reconcile()
    revision = w.source()["artifact"]["revision"]
    assert revision.startswith("sha256:") and len(revision) == 7 + 64
    assert w.ks()["lastAppliedRevision"] == revision
    assert w.workloads() == {"apps/w": "1", "apps/x": "1"}  # other/ is outside the prefix
    assert w.requests() == 3  # one listing, two objects
    await w.reconcile()
    assert w.requests() == 1 and w.source()["artifact"]["revision"] == revision
    s3.put("manifests", "apps/w.yaml", named("w", "2"))
    s3.delete("manifests", "apps/extra/x.yaml")
    await w.reconcile()
    assert w.source()["artifact"]["revision"] != revision
    assert w.workloads() == {"apps/w": "2"}  # x pruned
    assert s3.secret_key not in w.said()


async def test_ignore_rules_leave_keys_out_before_download(tmp_path: Path, s3: S3) -> None:
    s3.create("ignored")
    s3.put("ignored", "w.yaml", named("w", "1"))
    s3.put("ignored", "drafts/d.yaml", named("d", "1"))
    s3.put("ignored", "tests/t.yaml", named("t", "1"))
    s3.put("ignored", "logo.png", b"\x89PNG")
    s3.put("ignored", ".sourceignore", "drafts/\n")
    w = World(tmp_path, s3, "ignored", ignore="tests/\n")
    await w.reconcile()
    assert w.workloads() == {"apps/w": "1"}
    assert w.requests() == 3  # the listing, .sourceignore, w.yaml: nothing ignored was fetched


async def test_wrong_credentials_a_missing_bucket_and_a_dead_endpoint_are_named(
    tmp_path: Path, s3: S3
) -> None:
    s3.create("guarded")
    s3.put("guarded", "w.yaml", named("w", "1"))
    wrong = World(
        tmp_path / "a", s3, "guarded", secret={"accesskey": s3.access_key, "secretkey": "not-the-key"}
    )
    await wrong.reconcile()
    assert (
        wrong.ready_message() == "spec.secretRef: bucket 'guarded': access denied (403 SignatureDoesNotMatch)"
    )
    assert wrong.source()["conditions"][0]["reason"] == "AuthenticationFailed"
    assert "not-the-key" not in wrong.said()
    half = World(tmp_path / "b", s3, "guarded", secret={"accesskey": s3.access_key})
    await half.reconcile()
    assert half.ready_message() == "spec.secretRef: secret flux-system/s3-creds has no secretkey"
    missing = World(tmp_path / "c", s3, "no-such-bucket")
    await missing.reconcile()
    assert missing.ready_message() == f"spec.bucketName: bucket 'no-such-bucket' not found at {s3.url}"
    dead = World(tmp_path / "d", s3, "guarded", endpoint=f"127.0.0.1:{free_port()}")
    await dead.reconcile()
    assert dead.ready_message().startswith("spec.endpoint: cannot reach http://127.0.0.1:")
    for w in (wrong, half, missing, dead):
        assert w.workloads() == {} and "has no artifact" in w.ks()["conditions"][0]["message"]


async def test_a_key_leading_outside_refuses_the_revision_and_keeps_the_last(tmp_path: Path, s3: S3) -> None:
    s3.create("escape")
    s3.put("escape", "w.yaml", named("w", "1"))
    w = World(tmp_path, s3, "escape")
    await w.reconcile()
    before = w.ks()["lastAppliedRevision"]
    s3.put("escape", "w.yaml", named("w", "2"))
    s3.put("escape", "a/../../evil.yaml", named("evil", "1"))
    await w.reconcile()
    assert w.ready_message() == "spec.bucketName: key 'a/../../evil.yaml' points outside the artifact"
    assert w.workloads() == {"apps/w": "1"} and w.ks()["lastAppliedRevision"] == before
    assert not found(tmp_path, "evil.yaml")


@pytest.mark.parametrize(
    ("spec", "field", "words"),
    [
        ({"provider": "gcp"}, "spec.provider", "provider 'gcp' is not supported by Rheostat yet"),
        ({"provider": "azure"}, "spec.provider", "provider 'azure' is not supported by Rheostat yet"),
        (
            {"sts": {"provider": "aws", "endpoint": "https://sts.amazonaws.com"}},
            "spec.sts",
            "not supported by Rheostat yet",
        ),
        ({"endpoint": "ftp://host"}, "spec.endpoint", "an endpoint is host[:port], or an http(s):// URL"),
    ],
)
def test_what_rheostat_does_not_do_is_refused_by_field(spec: dict[str, Any], field: str, words: str) -> None:
    doc = {
        "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
        "kind": "Bucket",
        "metadata": {"name": "app", "namespace": "flux-system"},
        "spec": {"bucketName": "manifests", "endpoint": "s3.example", "interval": "5m", **spec},
    }
    with pytest.raises(ManifestError) as err:
        parse_object(doc, "sources.yaml")
    assert str(err.value).startswith(f"sources.yaml: Bucket flux-system/app: {field}")
    assert words in str(err.value)


@pytest.fixture(scope="module")
def s3_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3, Pki]]:
    tmp = tmp_path_factory.mktemp("s3-tls")
    keys = pki(tmp)
    tls = {
        "certificate": keys.files["server.crt"],
        "key": keys.files["server.key"],
        "ca": keys.files["ca.crt"],
    }
    with s3_server(tmp, tls=tls) as server:
        yield server, keys


async def test_an_endpoint_with_a_private_ca_is_trusted_through_cert_secret_ref(
    tmp_path: Path, s3_tls: tuple[S3, Pki]
) -> None:
    s3, keys = s3_tls
    s3.create("private")
    s3.put("private", "w.yaml", named("w", "1"))
    endpoint = s3.url  # https://127.0.0.1:<port>
    untrusted = World(tmp_path / "a", s3, "private", endpoint=endpoint, insecure=False)
    await untrusted.reconcile()
    assert untrusted.ready_message().startswith(f"spec.endpoint: cannot reach {endpoint}: ")
    assert "needs its ca.crt in spec.certSecretRef" in untrusted.ready_message()
    assert untrusted.workloads() == {}
    trusted = World(
        tmp_path / "b", s3, "private", endpoint=endpoint, insecure=False, certSecretRef={"name": "s3-ca"}
    )
    trusted.secrets[("flux-system", "s3-ca")] = {"ca.crt": keys.ca}
    await trusted.reconcile()
    assert trusted.workloads() == {"apps/w": "1"}
