"""A small client of the OCI distribution API: manifests, tags and blobs, with the registries' token auth.

Anonymous, basic, or the Bearer token dance (`WWW-Authenticate: Bearer realm=...,service=...,scope=...`),
with credentials taken from a docker-config Secret. Plain HTTP only when the OCIRepository says
`insecure: true`. Every manifest and blob is checked against its sha256 digest before it is used.
Credentials never appear in a message: errors name the repository and what was asked, nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import re
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST))
MAX_MANIFEST = 4 * 1024 * 1024  # as the distribution spec's recommended limit
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class RegistryError(Exception):
    """`reason` is Flux's condition reason; `field` the spec field the fault is about."""

    def __init__(self, reason: str, message: str, field: str = "spec.url") -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Reference:
    host: str  # host[:port]
    name: str  # repository path
    scheme: str  # "https", or "http" for insecure

    @property
    def url(self) -> str:
        return f"oci://{self.host}/{self.name}"


def parse_url(url: str, insecure: bool) -> Reference:
    host, _, name = url.removeprefix("oci://").partition("/")
    return Reference(host, name, "http" if insecure else "https")


def docker_config_auth(data: Mapping[str, str], host: str) -> tuple[str, str] | None:
    """(username, password) for `host` from a `.dockerconfigjson` (or `.dockercfg`) Secret; None if absent."""
    raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
    if raw is None:
        raise ValueError(
            "has no .dockerconfigjson key (make it with `kubectl create secret docker-registry`)"
        )
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ValueError(".dockerconfigjson is not JSON") from None
    auths = doc.get("auths", doc) if isinstance(doc, dict) else {}
    if not isinstance(auths, dict):
        raise ValueError(".dockerconfigjson has no auths mapping")
    for key, entry in auths.items():
        if _host_of(str(key)) != host or not isinstance(entry, dict):
            continue
        if entry.get("username") and entry.get("password"):
            return str(entry["username"]), str(entry["password"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(str(entry["auth"])).decode().partition(":")
            except ValueError:
                raise ValueError(f".dockerconfigjson auths entry for {host} is not base64") from None
            return user, password
    return None


def _host_of(key: str) -> str:
    return key.split("://", 1)[-1].split("/", 1)[0]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The system's trust store, loaded once (loading it costs ~0.2 s, more than a no-change check)."""
    return ssl.create_default_context()


def client_tls(data: Mapping[str, str]) -> ssl.SSLContext:
    """A TLS context from a certSecretRef: `ca.crt` trusted besides the system's roots, and the client
    certificate `tls.crt` with its key `tls.key`. The key is written to a 0600 file in a private temporary
    folder only for the moment `ssl` reads it (it takes no key from memory), then removed."""
    ctx = ssl.create_default_context()
    if data.get("ca.crt"):
        try:
            ctx.load_verify_locations(cadata=data["ca.crt"])
        except (ssl.SSLError, ValueError):
            raise ValueError("ca.crt is not a PEM certificate") from None
    cert, key = data.get("tls.crt"), data.get("tls.key")
    if bool(cert) != bool(key):
        raise ValueError("has tls.crt without tls.key (or the other way round); give both or neither")
    if cert and key:
        with tempfile.TemporaryDirectory(prefix="rheostat-tls-") as tmp:
            cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert_file.write_text(cert)
            key_file.touch(mode=0o600)
            key_file.write_text(key)
            try:
                ctx.load_cert_chain(cert_file, key_file)
            except ssl.SSLError:
                raise ValueError("tls.crt and tls.key are not a matching PEM certificate and key") from None
    if not data.get("ca.crt") and not cert:
        raise ValueError("has none of ca.crt, tls.crt and tls.key")
    return ctx


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Registry:
    """One repository of one registry, for the length of one fetch (a fresh token each time)."""

    def __init__(
        self,
        ref: Reference,
        credentials: tuple[str, str] | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.ref = ref
        self._credentials = credentials
        self._auth: str | None = None  # the Authorization header once a challenge was answered
        self._client = httpx.AsyncClient(
            base_url=f"{ref.scheme}://{ref.host}",
            timeout=timeout_s,
            follow_redirects=False,
            transport=transport,
            verify=(tls or tls_context()) if ref.scheme == "https" else False,
        )
        self.requests = 0  # for the benchmark and the tests: how many round trips a fetch made

    async def __aenter__(self) -> Registry:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    # -- the API ----------------------------------------------------------------------------------------

    async def manifest_digest(self, reference: str) -> str | None:
        """The digest a tag points at, by HEAD; None when the registry does not say (then GET it)."""
        resp = await self._send("HEAD", f"/v2/{self.ref.name}/manifests/{reference}", {"Accept": ACCEPT})
        self._check(resp, f"tag {reference!r}", "spec.ref.tag")
        digest = resp.headers.get("Docker-Content-Digest")
        return digest if digest and DIGEST.match(digest) else None

    async def manifest(self, reference: str, field: str = "spec.ref.tag") -> tuple[dict[str, Any], str]:
        """The manifest and its digest; a digest reference must match the bytes served."""
        resp = await self._send("GET", f"/v2/{self.ref.name}/manifests/{reference}", {"Accept": ACCEPT})
        what = f"manifest {reference}" if reference.startswith("sha256:") else f"tag {reference!r}"
        self._check(resp, what, field)
        body = resp.content
        if len(body) > MAX_MANIFEST:
            raise RegistryError("OCIArtifactPullFailed", f"{what}: manifest larger than {MAX_MANIFEST} bytes")
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise RegistryError(
                "OCIArtifactPullFailed",
                f"manifest {reference} does not match its digest (got {digest})",
                field,
            )
        try:
            doc = json.loads(body)
        except ValueError:
            raise RegistryError("OCIArtifactPullFailed", f"{what}: the manifest is not JSON", field) from None
        if not isinstance(doc, dict):
            raise RegistryError("OCIArtifactPullFailed", f"{what}: the manifest is not a JSON object", field)
        return doc, digest

    async def tags(self) -> list[str]:
        out: list[str] = []
        path: str | None = f"/v2/{self.ref.name}/tags/list?n=1000"
        while path is not None and len(out) < 100_000:
            resp = await self._send("GET", path, {})
            self._check(resp, "the tag list", "spec.ref.semver")
            try:
                out += [str(t) for t in resp.json().get("tags") or []]
            except (ValueError, AttributeError):
                raise RegistryError(
                    "OCIArtifactPullFailed", "the tag list is not JSON", "spec.ref.semver"
                ) from None
            link = re.search(r"<([^>]+)>", resp.headers.get("Link", ""))
            path = link.group(1) if link else None
        return out

    async def blob_to(self, digest: str, dest: Path, limit: int) -> int:
        """Stream a blob into `dest`, checking its size and digest; the size."""
        if not DIGEST.match(digest):
            raise RegistryError("OCIArtifactPullFailed", f"layer digest {digest!r} is not a sha256 digest")
        path = f"/v2/{self.ref.name}/blobs/{digest}"
        resp = await self._send("GET", path, {}, stream=True)
        for _ in range(3):  # registries hand blobs to a storage URL
            if resp.status_code not in (301, 302, 303, 307, 308):
                break
            location = resp.headers.get("Location", "")
            await resp.aclose()
            req = self._client.build_request("GET", httpx.URL(location) if "://" in location else location)
            resp = await self._client.send(req, stream=True)
            self.requests += 1
        try:
            self._check(resp, f"blob {digest}", "spec.url")
            hasher = hashlib.sha256()
            size = 0
            with await asyncio.to_thread(dest.open, "wb") as out:
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise RegistryError(
                            "OCIArtifactPullFailed",
                            f"blob {digest} is larger than {limit // (1024 * 1024)} MiB",
                        )
                    hasher.update(chunk)
                    out.write(chunk)
        finally:
            await resp.aclose()
        got = "sha256:" + hasher.hexdigest()
        if got != digest:
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            raise RegistryError(
                "OCIArtifactPullFailed", f"blob {digest} does not match its digest (got {got}); refused"
            )
        return size

    async def blob(self, digest: str, limit: int) -> bytes:
        if not DIGEST.match(digest):
            raise RegistryError("OCIArtifactPullFailed", f"digest {digest!r} is not a sha256 digest")
        resp = await self._send("GET", f"/v2/{self.ref.name}/blobs/{digest}", {})
        if resp.status_code in (301, 302, 303, 307, 308):
            location = resp.headers.get("Location", "")
            resp = await self._client.get(httpx.URL(location) if "://" in location else location)
        self._check(resp, f"blob {digest}", "spec.url")
        if len(resp.content) > limit or sha256_digest(resp.content) != digest:
            raise RegistryError("OCIArtifactPullFailed", f"blob {digest} does not match its digest; refused")
        return resp.content

    # -- transport and auth -----------------------------------------------------------------------------

    async def _send(
        self, method: str, path: str, headers: dict[str, str], *, stream: bool = False
    ) -> httpx.Response:
        resp = await self._once(method, path, headers, stream)
        if resp.status_code == 401 and self._auth is None:
            challenge = resp.headers.get("WWW-Authenticate", "")
            await resp.aclose()
            await self._answer(challenge)
            resp = await self._once(method, path, headers, stream)
        return resp

    async def _once(self, method: str, path: str, headers: dict[str, str], stream: bool) -> httpx.Response:
        if self._auth is not None:
            headers = {**headers, "Authorization": self._auth}
        self.requests += 1
        try:
            req = self._client.build_request(method, path, headers=headers)
            return await self._client.send(req, stream=stream)
        except httpx.TimeoutException:
            raise RegistryError("OCIArtifactPullFailed", f"{self.ref.url}: timed out") from None
        except (httpx.HTTPError, ssl.SSLError) as exc:  # a TLS alert after the handshake is not wrapped
            why = str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in why:
                why += " (a registry with a private CA needs its ca.crt in spec.certSecretRef)"
            elif self.ref.scheme == "https" and "SSL" in why.upper():
                why += " (a registry served over plain HTTP needs spec.insecure: true)"
            raise RegistryError("OCIArtifactPullFailed", f"cannot reach {self.ref.url}: {why}") from None

    async def _answer(self, header: str) -> None:
        scheme, params = _challenge(header)
        if scheme == "basic":
            if self._credentials is None:
                raise RegistryError(
                    "AuthenticationFailed", f"{self.ref.url} asks for credentials", "spec.secretRef"
                )
            user, password = self._credentials
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError("AuthenticationFailed", f"{self.ref.url}: unknown auth challenge {scheme!r}")
        query = {"scope": params.get("scope") or f"repository:{self.ref.name}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        try:
            resp = await self._client.get(params["realm"], params=query, auth=auth)
        except httpx.HTTPError as exc:
            raise RegistryError("AuthenticationFailed", f"{self.ref.url}: token service: {exc}") from None
        self.requests += 1
        if resp.status_code != 200:
            raise RegistryError(
                "AuthenticationFailed",
                f"{self.ref.url}: the token service refused ({resp.status_code})",
                "spec.secretRef",
            )
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError("AuthenticationFailed", f"{self.ref.url}: the token service gave no token")
        self._auth = f"Bearer {token}"

    def _check(self, resp: httpx.Response, what: str, field: str) -> None:
        if resp.status_code < 300:
            return
        if resp.status_code == 404:
            raise RegistryError("OCIArtifactPullFailed", f"{what} not found in {self.ref.url}", field)
        if resp.status_code in (401, 403):
            raise RegistryError(
                "AuthenticationFailed",
                f"{self.ref.url}: access to {what} denied ({resp.status_code})",
                "spec.secretRef",
            )
        raise RegistryError(
            "OCIArtifactPullFailed", f"{self.ref.url}: {what}: HTTP {resp.status_code}", field
        )
