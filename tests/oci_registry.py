"""A real OCI registry for tests: Debian's `docker-registry` (CNCF Distribution 2.8) on 127.0.0.1.

Its config keeps the storage under the test's temporary directory; with `token=True` it asks for Bearer tokens
from a token service the test runs (tests/oci_token.py), signed by a key the config trusts. The test pushes
artifacts itself, in the `flux push artifact` format, over the registry's HTTP API with httpx.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import ssl
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests import processes
from tests.processes import Server
from tests.servers import free_port

FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tarball(files: dict[str, str | bytes]) -> bytes:
    """A gzip tarball of `files` (path -> content), as `flux push artifact` makes one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, content in sorted(files.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


@dataclass
class Registry(Server):
    host: str = ""
    auth: tuple[str, str] | None = None  # what the test itself pushes with
    token_url: str | None = None
    tls: ssl.SSLContext | None = None  # what the test itself connects with, for a registry on TLS

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, verify=self.tls or True)

    def _headers(self, client: httpx.Client, name: str, push: bool) -> dict[str, str]:
        if self.token_url is None:
            return {}
        scope = f"repository:{name}:pull,push" if push else f"repository:{name}:pull"
        r = client.get(self.token_url, params={"scope": scope, "service": "registry"}, auth=self.auth)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def push_blob(self, name: str, data: bytes) -> str:
        digest = digest_of(data)
        with self._client() as c:
            h = self._headers(c, name, True)
            r = c.post(f"/v2/{name}/blobs/uploads/", headers=h)
            assert r.status_code == 202, r.text
            location = r.headers["Location"]
            sep = "&" if "?" in location else "?"
            r = c.put(
                f"{location}{sep}digest={digest}",
                content=data,
                headers={**h, "Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 201, r.text
        return digest

    def push_manifest(self, name: str, reference: str, manifest: dict[str, Any] | bytes) -> str:
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        media_type = json.loads(body).get("mediaType") or OCI_MANIFEST
        with self._client() as c:
            h = self._headers(c, name, True)
            r = c.put(
                f"/v2/{name}/manifests/{reference}", content=body, headers={**h, "Content-Type": media_type}
            )
            assert r.status_code == 201, r.text
        return digest_of(body)

    def push_artifact(
        self,
        name: str,
        tag: str,
        files: dict[str, str | bytes] | None = None,
        *,
        layer: bytes | None = None,
        revision: str = "main@sha1:0123456789abcdef0123456789abcdef01234567",
        extra_layers: list[tuple[str, bytes]] = (),  # type: ignore[assignment]
    ) -> str:
        """A Flux artifact of `files` (or the given layer bytes) tagged `tag`; its manifest digest."""
        content = layer if layer is not None else tarball(files or {})
        config = b"{}"
        layers = []
        for media_type, data in [(FLUX_CONTENT, content), *extra_layers]:
            layers.append({"mediaType": media_type, "digest": self.push_blob(name, data), "size": len(data)})
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": FLUX_CONFIG,
            "config": {"mediaType": FLUX_CONFIG, "digest": self.push_blob(name, config), "size": len(config)},
            "layers": layers,
            "annotations": {
                "org.opencontainers.image.created": "2026-12-06T05:00:00Z",
                "org.opencontainers.image.source": "https://git.example/apps.git",
                "org.opencontainers.image.revision": revision,
            },
        }
        return self.push_manifest(name, tag, manifest)

    def blob_path(self, root: Path, digest: str) -> Path:
        hex_ = digest.removeprefix("sha256:")
        return root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _config(root: Path, port: int, token: dict[str, str] | None, tls: dict[str, str] | None) -> str:
    http = f"http:\n  addr: 127.0.0.1:{port}\n  secret: test-only-upload-secret\n"
    if tls is not None:
        http += (
            f"  tls:\n    certificate: {tls['certificate']}\n    key: {tls['key']}\n"
            f"    clientcas:\n      - {tls['clientca']}\n"
        )
    auth = ""
    if token is not None:
        auth = (
            "auth:\n  token:\n"
            f"    realm: {token['realm']}\n    service: registry\n    issuer: rheostat-test\n"
            f"    rootcertbundle: {token['bundle']}\n"
        )
    return (
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n{http}{auth}"
    )


@contextlib.contextmanager
def docker_registry(
    tmp: Path,
    *,
    token: dict[str, str] | None = None,
    tls: dict[str, str] | None = None,
    client_tls: ssl.SSLContext | None = None,
) -> Iterator[Registry]:
    """docker-registry serving on a free loopback port until the block ends; `token`: realm and bundle;
    `tls`: certificate, key and the CA of the client certificates it then requires (`client_tls` is what
    the test itself connects with)."""
    binary = processes.binary("docker-registry", "docker-registry")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "config.yml"
    config.write_text(_config(tmp / "storage", port, token, tls))
    url, log = f"{'https' if tls else 'http'}://127.0.0.1:{port}", tmp / "registry.log"

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"{url}/v2/", timeout=1, verify=client_tls or True).status_code in (200, 401)
        return False

    with processes.started([binary, "serve", str(config)], log, ready, name="docker-registry") as process:
        realm = token["realm"] if token else None
        yield Registry(url, process, log, host=f"127.0.0.1:{port}", token_url=realm, tls=client_tls)
