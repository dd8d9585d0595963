"""OCIRepository against a real registry (Debian's docker-registry): Flux artifacts pushed by the test are
reconciled like a Git revision, tags move, semver picks, digests pin, and bad input changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rheostat.gitops.fetch import source_fetchers
from rheostat.gitops.oci import OCIFetcher
from rheostat.gitops.reconciler import GitOps
from rheostat.model.load import parse_object
from rheostat.store import Store
from tests.oci_registry import FLUX_CONTENT, Registry, digest_of, docker_registry, tarball
from tests.servers import free_port

NAME = "apps/manifests"


def workload(version: str) -> str:
    return (
        "apiVersion: rheostat.dev/v1alpha1\nkind: Workload\nmetadata: {name: w, namespace: apps}\n"
        f"spec: {{template: {{command: [app, --port, '{{port}}', --version, '{version}']}}}}\n"
    )


class Clock:
    t = 1000.0

    def now(self) -> float:
        return self.t


class World:
    def __init__(
        self, tmp: Path, url: str, secrets: dict[tuple[str, str], dict[str, str]] | None = None, **spec: Any
    ):
        self.store = Store(":memory:")
        self.secrets = secrets or {}
        self.fetchers = source_fetchers(tmp / "work", lambda ns, n: self.secrets.get((ns, n)))
        boot = [
            parse_object(
                {
                    "apiVersion": "source.toolkit.fluxcd.io/v1",
                    "kind": "OCIRepository",
                    "metadata": {"name": "app", "namespace": "flux-system"},
                    "spec": {"url": url, "interval": "1h", "insecure": True, **spec},
                }
            ),
            parse_object(
                {
                    "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
                    "kind": "Kustomization",
                    "metadata": {"name": "app", "namespace": "flux-system"},
                    "spec": {
                        "sourceRef": {"kind": "OCIRepository", "name": "app"},
                        "path": "./",
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
        return self.store.get_state("OCIRepository", "flux-system/app") or {}

    def ks(self) -> dict[str, Any]:
        return self.store.get_state("Kustomization", "flux-system/app") or {}

    def version(self) -> str | None:
        w = self.store.get_object("Workload", "apps/w")
        return None if w is None else str(w.body["spec"]["template"]["command"][-1])

    def ready_message(self) -> str:
        return str(next(c["message"] for c in self.source()["conditions"] if c["type"] == "Ready"))

    def events(self) -> list[str]:
        return [f"{e.kind} {e.key} {e.reason}: {e.message}" for e in self.store.events(limit=1000)]


def found(root: Path, name: str) -> list[Path]:
    return list(root.rglob(name))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with docker_registry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


def oci(reg: Registry, name: str = NAME) -> str:
    return f"oci://{reg.host}/{name}"


async def test_a_flux_artifact_is_applied_like_a_git_revision(tmp_path: Path, registry: Registry) -> None:
    name = "apps/basic"
    digest = registry.push_artifact(name, "v1.0.0", {"apps/w.yaml": workload("1"), "README.md": "# notes"})
    w = World(tmp_path, oci(registry, name), ref={"tag": "v1.0.0"})
    await w.reconcile()
    revision = f"v1.0.0@{digest}"
    assert w.source()["artifact"]["revision"] == revision
    assert w.source()["artifact"]["message"].startswith("https://git.example/apps.git@main@sha1:")
    assert w.ks()["lastAppliedRevision"] == revision
    assert w.version() == "1"
    assert (
        f"OCIRepository flux-system/app NewArtifact: stored artifact for revision '{revision}'" in w.events()
    )
    # a new push of the same tag is the next revision
    digest2 = registry.push_artifact(name, "v1.0.0", {"apps/w.yaml": workload("2")})
    await w.reconcile()
    assert w.ks()["lastAppliedRevision"] == f"v1.0.0@{digest2}" and w.version() == "2"
    # only the newest artifact is kept on disk
    kept = list((tmp_path / "work/ocirepository/flux-system/app/artifacts").iterdir())
    assert sorted(p.name for p in kept) == sorted([digest2[7:], digest2[7:] + ".json"])


async def test_an_unchanged_digest_costs_one_manifest_request_and_no_blob(
    tmp_path: Path, registry: Registry
) -> None:
    name = "apps/nochange"
    registry.push_artifact(name, "latest", {"w.yaml": workload("1")})
    w = World(tmp_path, oci(registry, name))  # no ref: `latest`, as Flux
    await w.reconcile()
    oci_fetcher = w.fetchers.kinds["OCIRepository"]
    assert isinstance(oci_fetcher, OCIFetcher)
    first = oci_fetcher.last_requests
    await w.reconcile()
    assert oci_fetcher.last_requests == 1 < first
    assert w.version() == "1"


async def test_semver_picks_the_highest_matching_tag(tmp_path: Path, registry: Registry) -> None:
    name = "apps/semver"
    registry.push_artifact(name, "1.0.0", {"w.yaml": workload("1.0.0")})
    registry.push_artifact(name, "not-a-version", {"w.yaml": workload("junk")})
    w = World(tmp_path, oci(registry, name), ref={"semver": ">=1.0.0 <2.0.0"})
    await w.reconcile()
    assert w.version() == "1.0.0"
    d = registry.push_artifact(name, "1.1.0", {"w.yaml": workload("1.1.0")})
    registry.push_artifact(name, "2.0.0", {"w.yaml": workload("2.0.0")})
    registry.push_artifact(name, "1.2.0-rc.1", {"w.yaml": workload("rc")})
    await w.reconcile()
    assert w.version() == "1.1.0" and w.ks()["lastAppliedRevision"] == f"1.1.0@{d}"


async def test_semver_filter_narrows_the_tags_first(tmp_path: Path, registry: Registry) -> None:
    name = "apps/rc"
    registry.push_artifact(name, "1.0.0", {"w.yaml": workload("1.0.0")})
    rc = registry.push_artifact(name, "1.1.0-rc.2", {"w.yaml": workload("rc2")})
    registry.push_artifact(name, "1.1.0-rc.1", {"w.yaml": workload("rc1")})
    w = World(tmp_path, oci(registry, name), ref={"semver": ">=1.0.0-0", "semverFilter": ".*-rc.*"})
    await w.reconcile()
    assert w.version() == "rc2" and w.ks()["lastAppliedRevision"] == f"1.1.0-rc.2@{rc}"
    none = World(tmp_path / "none", oci(registry, name), ref={"semver": ">=2.0.0"})
    await none.reconcile()
    assert none.ready_message().startswith("spec.ref.semver: no tag matches the semver range '>=2.0.0'")


async def test_a_digest_pin_holds_while_the_tag_moves(tmp_path: Path, registry: Registry) -> None:
    name = "apps/pinned"
    pinned = registry.push_artifact(name, "latest", {"w.yaml": workload("1")})
    w = World(tmp_path, oci(registry, name), ref={"tag": "latest", "digest": pinned})
    await w.reconcile()
    registry.push_artifact(name, "latest", {"w.yaml": workload("2")})
    await w.reconcile()
    assert w.version() == "1" and w.ks()["lastAppliedRevision"] == pinned  # `sha256:<hex>`, as Flux


async def test_layer_selector_takes_the_layer_of_its_media_type(tmp_path: Path, registry: Registry) -> None:
    name = "apps/layers"
    notes = tarball({"w.yaml": workload("from-the-wrong-layer")})
    registry.push_artifact(
        name,
        "v1",
        layer=notes,
        extra_layers=[("application/vnd.example.other.v1.tar+gzip", tarball({"w.yaml": workload("picked")}))],
    )
    w = World(
        tmp_path,
        oci(registry, name),
        ref={"tag": "v1"},
        layerSelector={"mediaType": "application/vnd.example.other.v1.tar+gzip", "operation": "extract"},
    )
    await w.reconcile()
    assert w.version() == "picked"


async def test_extract_honours_ignore_rules_and_copy_keeps_the_layer_as_is(
    tmp_path: Path, registry: Registry
) -> None:
    name = "apps/ignore"
    files = {"w.yaml": workload("1"), "extra/x.yaml": workload("x").replace("name: w", "name: x")}
    registry.push_artifact(name, "v1", {**files, ".sourceignore": "extra/\n"})
    w = World(tmp_path / "a", oci(registry, name), ref={"tag": "v1"})
    await w.reconcile()
    assert [o.key for o in w.store.list_objects("Workload")] == ["apps/w"]
    c = World(
        tmp_path / "b",
        oci(registry, name),
        ref={"tag": "v1"},
        layerSelector={"mediaType": FLUX_CONTENT, "operation": "copy"},
    )
    await c.reconcile()
    assert sorted(o.key for o in c.store.list_objects("Workload")) == ["apps/w", "apps/x"]


# -- bad input: each names the object and the field, and nothing of the revision is applied ---------------


async def good_then(tmp_path: Path, registry: Registry, name: str, **spec: Any) -> World:
    registry.push_artifact(name, "v1", {"w.yaml": workload("1")})
    w = World(tmp_path, oci(registry, name), ref={"tag": "v1"}, **spec)
    await w.reconcile()
    assert w.version() == "1"
    return w


async def test_a_registry_that_is_down_keeps_the_last_good_revision(
    tmp_path: Path, registry: Registry
) -> None:
    w = World(tmp_path, f"oci://127.0.0.1:{free_port()}/apps/gone", ref={"tag": "v1"})
    await w.reconcile()
    assert w.source()["conditions"][0]["status"] == "False"
    assert w.ready_message().startswith("spec.url: cannot reach oci://127.0.0.1:")
    assert any(
        e.startswith("OCIRepository flux-system/app FetchFailed: OCIArtifactPullFailed: spec.url:")
        for e in w.events()
    )
    assert "has no artifact" in w.ks()["conditions"][0]["message"]
    assert w.version() is None


async def test_a_tampered_blob_is_refused_and_nothing_changes(tmp_path: Path, registry: Registry) -> None:
    name = "apps/tampered"
    w = await good_then(tmp_path, registry, name)
    before = w.ks()["lastAppliedRevision"]
    layer = tarball({"w.yaml": workload("2")})
    registry.push_artifact(name, "v1", layer=layer)
    root = Path(registry.log).parent / "storage"
    blob = registry.blob_path(root, digest_of(layer))
    data = bytearray(blob.read_bytes())
    data[-20] ^= 0xFF  # same length, other bytes
    blob.write_bytes(bytes(data))
    await w.reconcile()
    assert w.version() == "1" and w.ks()["lastAppliedRevision"] == before
    assert f"spec.url: blob {digest_of(layer)} does not match its digest" in w.ready_message()


async def test_an_unknown_tag_is_named(tmp_path: Path, registry: Registry) -> None:
    registry.push_artifact("apps/tags", "v1", {"w.yaml": workload("1")})
    w = World(tmp_path, oci(registry, "apps/tags"), ref={"tag": "v9"})
    await w.reconcile()
    assert w.ready_message() == f"spec.ref.tag: tag 'v9' not found in {oci(registry, 'apps/tags')}"
    assert w.version() is None


async def test_a_tarball_reaching_outside_is_refused_whole(tmp_path: Path, registry: Registry) -> None:
    name = "apps/escape"
    w = await good_then(tmp_path, registry, name)
    registry.push_artifact(name, "v1", {"w.yaml": workload("2"), "../evil.yaml": workload("evil")})
    await w.reconcile()
    message = w.ready_message()
    assert message.startswith("spec.layerSelector: layer sha256:")
    assert "member '../evil.yaml' points outside the artifact ('..'); nothing was extracted" in message
    assert w.version() == "1"
    assert not found(tmp_path, "evil.yaml")


async def test_an_index_or_a_layerless_artifact_is_named(tmp_path: Path, registry: Registry) -> None:
    name = "apps/index"
    registry.push_manifest(
        name,
        "v1",
        {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []},
    )
    w = World(tmp_path, oci(registry, name), ref={"tag": "v1"})
    await w.reconcile()
    assert "spec.ref: " in w.ready_message() and "image index" in w.ready_message()


def test_the_manifest_pushed_is_flux_format(registry: Registry) -> None:
    registry.push_artifact("apps/format", "v1", {"w.yaml": workload("1")})
    r = httpx.get(
        f"{registry.url}/v2/apps/format/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    doc = json.loads(r.content)
    assert doc["config"]["mediaType"] == "application/vnd.cncf.flux.config.v1+json"
    assert doc["layers"][0]["mediaType"] == FLUX_CONTENT
