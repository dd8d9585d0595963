"""A Bucket fetched from an S3-compatible store: ListObjectsV2 and GetObject, signed with SigV4.

Requests are signed by botocore's S3 signer (AWS's own, the one SDK Rheostat already carries; it stays in this
module and plugins/metrics/cloudwatch.py) and sent with httpx; path-style addressing, which every
S3-compatible store serves. As Flux's source-controller: the keys under `prefix` are listed, the default
exclusions, a root `.sourceignore` and `spec.ignore` leave keys out before anything is downloaded, and the
revision is `sha256:` of the sorted key/ETag index, so an unchanged bucket costs the listing only. Objects
keep their full key as their path in the artifact, as in Flux. Each artifact goes into
`<workdir>/bucket/<ns>/<name>/artifacts/<hex>`; only the newest is kept, and a failed fetch leaves it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import ssl
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath
from urllib.parse import quote

import httpx
from botocore.auth import S3SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]
from pathspec import GitIgnoreSpec

from rheostat.gitops import git_ignore
from rheostat.gitops.oci_registry import client_tls, tls_context
from rheostat.gitops.sources import Fetched, FetchError, SecretLookup
from rheostat.model.sources import Bucket
from rheostat.util.durations import parse_duration

MAX_KEYS = 20_000
MAX_OBJECT = 50 * 1024 * 1024
MAX_TOTAL = 100 * 1024 * 1024
PARALLEL = 8
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class BucketError(Exception):
    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class S3Object:
    key: str
    etag: str
    size: int


class Signer:
    """SigV4 for S3; the keys never leave this object (repr hides them)."""

    def __init__(self, access_key: str, secret_key: str, region: str) -> None:
        self._creds = Credentials(access_key, secret_key)
        self._region = region

    def headers(self, method: str, url: str) -> dict[str, str]:
        req = AWSRequest(method=method, url=url, data=b"")
        S3SigV4Auth(self._creds, "s3", self._region).add_auth(req)
        return {k: v for k, v in req.headers.items()}

    def __repr__(self) -> str:
        return "Signer(...)"


class S3Client:
    def __init__(
        self,
        base: str,
        bucket: str,
        signer: Signer | None,
        timeout_s: float,
        transport: httpx.AsyncBaseTransport | None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.base = base.rstrip("/")
        self.bucket = bucket
        self.signer = signer
        self.requests = 0
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            transport=transport,
            verify=(tls or tls_context()) if base.startswith("https://") else False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, key: str = "", query: str = "") -> str:
        path = f"/{quote(self.bucket)}" + (f"/{quote(key, safe='/~')}" if key else "")
        return self.base + path + (f"?{query}" if query else "")

    async def _get(self, url: str, what: str, field: str) -> httpx.Response:
        headers = self.signer.headers("GET", url) if self.signer else {}
        self.requests += 1
        try:
            resp = await self._client.get(url, headers=headers)
        except httpx.TimeoutException:
            raise BucketError("BucketOperationFailed", "spec.endpoint", f"{self.base}: timed out") from None
        except (httpx.HTTPError, ssl.SSLError) as exc:  # a TLS alert after the handshake is not wrapped
            why = str(exc) or type(exc).__name__
            if "CERTIFICATE_VERIFY_FAILED" in why:
                why += " (an endpoint with a private CA needs its ca.crt in spec.certSecretRef)"
            raise BucketError(
                "BucketOperationFailed", "spec.endpoint", f"cannot reach {self.base}: {why}"
            ) from None
        if resp.status_code == 404:
            raise BucketError("BucketOperationFailed", field, f"{what} not found at {self.base}")
        if resp.status_code in (401, 403):
            code = _error_code(resp.content)
            raise BucketError(
                "AuthenticationFailed", "spec.secretRef", f"{what}: access denied ({resp.status_code} {code})"
            )
        if resp.status_code >= 300:
            raise BucketError(
                "BucketOperationFailed", field, f"{what}: HTTP {resp.status_code} {_error_code(resp.content)}"
            )
        return resp

    async def list(self, prefix: str | None) -> list[S3Object]:
        out: list[S3Object] = []
        token: str | None = None
        while True:
            query = "list-type=2"
            if token:
                query += f"&continuation-token={quote(token, safe='')}"
            if prefix:
                query += f"&prefix={quote(prefix, safe='')}"
            resp = await self._get(self._url(query=query), f"bucket {self.bucket!r}", "spec.bucketName")
            try:
                root = ET.fromstring(resp.content)
            except ET.ParseError:
                raise BucketError(
                    "BucketOperationFailed", "spec.endpoint", "the listing is not XML"
                ) from None
            for item in root.iter(f"{_NS}Contents"):
                out.append(
                    S3Object(
                        item.findtext(f"{_NS}Key") or "",
                        (item.findtext(f"{_NS}ETag") or "").strip('"'),
                        int(item.findtext(f"{_NS}Size") or 0),
                    )
                )
            if len(out) > MAX_KEYS:
                raise BucketError(
                    "BucketOperationFailed", "spec.prefix", f"more than {MAX_KEYS} keys; narrow the prefix"
                )
            if (root.findtext(f"{_NS}IsTruncated") or "false") != "true":
                return out
            token = root.findtext(f"{_NS}NextContinuationToken")
            if not token:
                return out

    async def get_to(self, obj: S3Object, dest: Path) -> None:
        resp = await self._get(self._url(obj.key), f"object {obj.key!r}", "spec.bucketName")
        if len(resp.content) > MAX_OBJECT:
            raise BucketError(
                "BucketOperationFailed", "spec.prefix", f"object {obj.key!r} is larger than 50 MiB"
            )
        await asyncio.to_thread(_write, dest, resp.content)


def _settle(scratch: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    scratch.rename(dest)
    return dest


def _write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)


def _error_code(body: bytes) -> str:
    try:
        return ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        return ""


def revision_of(objects: list[S3Object]) -> str:
    """Flux's form: sha256 over the sorted key -> ETag index."""
    index = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        index.update(f"{obj.key} {obj.etag}\n".encode())
    return "sha256:" + index.hexdigest()


def safe_key(key: str) -> bool:
    path = PurePosixPath(key)
    return bool(key) and not key.startswith("/") and ".." not in path.parts and "\\" not in key


class BucketFetcher:
    def __init__(
        self, workdir: Path, secrets: SecretLookup, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.workdir = workdir
        self.secrets = secrets
        self.transport = transport
        self.last_requests = 0

    async def preview(self, repo: Bucket) -> Fetched:
        return await self.fetch(repo, None, workdir=self.workdir / ".preview")

    async def fetch(self, repo: Bucket, last: Fetched | None, *, workdir: Path | None = None) -> Fetched:
        del last  # the stamp on disk is the record
        where = (
            (workdir or self.workdir) / "bucket" / repo.metadata.namespace / repo.metadata.name
        ).resolve()
        try:
            return await self._fetch(repo, where)
        except BucketError as exc:
            raise FetchError(exc.reason, str(exc)) from None

    def _tls(self, repo: Bucket) -> ssl.SSLContext | None:
        if repo.spec.certSecretRef is None:
            return None
        name = repo.spec.certSecretRef.name
        try:
            data = self.secrets(repo.metadata.namespace, name)
            if data is None:
                raise ValueError("not found")
            return client_tls(data)
        except (ValueError, OSError) as exc:
            raise BucketError(
                "AuthenticationFailed", "spec.certSecretRef", f"secret {repo.metadata.namespace}/{name} {exc}"
            ) from None

    def _signer(self, repo: Bucket) -> Signer | None:
        spec = repo.spec
        if spec.secretRef is None:
            if spec.provider == "aws":
                raise BucketError(
                    "AuthenticationFailed",
                    "spec.secretRef",
                    "provider aws without a secretRef signs in with the node's IAM role, which Rheostat does "
                    "not have; put accesskey and secretkey in a Secret",
                )
            return None  # anonymous: a public bucket
        name = spec.secretRef.name
        try:
            data = self.secrets(repo.metadata.namespace, name)
        except (ValueError, OSError) as exc:
            raise BucketError("AuthenticationFailed", "spec.secretRef", f"secret {name}: {exc}") from None
        if data is None:
            raise BucketError(
                "AuthenticationFailed", "spec.secretRef", f"secret {repo.metadata.namespace}/{name} not found"
            )
        missing = [k for k in ("accesskey", "secretkey") if not data.get(k)]
        if missing:
            raise BucketError(
                "AuthenticationFailed",
                "spec.secretRef",
                f"secret {repo.metadata.namespace}/{name} has no {' or '.join(missing)}",
            )
        return Signer(data["accesskey"], data["secretkey"], spec.region or "us-east-1")

    async def _fetch(self, repo: Bucket, where: Path) -> Fetched:
        spec = repo.spec
        base = (
            spec.endpoint
            if "://" in spec.endpoint
            else f"{'http' if spec.insecure else 'https'}://{spec.endpoint}"
        )
        if base.startswith("http://") and not spec.insecure:
            raise BucketError(
                "BucketOperationFailed", "spec.endpoint", f"{base} is plain HTTP; set spec.insecure: true"
            )
        client = S3Client(
            base,
            spec.bucketName,
            self._signer(repo),
            parse_duration(spec.timeout),
            self.transport,
            self._tls(repo),
        )
        try:
            objects = await client.list(spec.prefix)
            rules, wanted, root_ignore = await self._select(client, objects, spec.ignore)
            revision = revision_of(wanted)
            stamp = _read_stamp(where, revision)
            if stamp == rules:
                return Fetched(
                    revision, where / "artifacts" / revision.removeprefix("sha256:"), _message(repo, wanted)
                )
            path = await self._download(client, wanted, where, revision, spec.ignore, root_ignore)
        finally:
            self.last_requests = client.requests
            await client.aclose()
        _write_stamp(where, revision, rules)
        for entry in (where / "artifacts").iterdir():
            if entry.name not in (path.name, f"{path.name}.json"):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
        return Fetched(revision, path, _message(repo, wanted))

    async def _select(
        self, client: S3Client, objects: list[S3Object], ignore: str | None
    ) -> tuple[str, list[S3Object], str | None]:
        """A digest of the rules (root .sourceignore included), the keys they keep, the root .sourceignore."""
        rules = git_ignore.Rules(ignore)
        root_ignore = next((o for o in objects if o.key == git_ignore.SOURCEIGNORE), None)
        text = ""
        if root_ignore is not None:
            with tempfile.TemporaryDirectory() as tmp:
                dest = Path(tmp) / "x"
                await client.get_to(root_ignore, dest)
                text = await asyncio.to_thread(dest.read_text, errors="replace")
            rules.local[""] = GitIgnoreSpec.from_lines(text.splitlines())
        wanted = []
        for obj in objects:
            if obj.key.endswith("/"):
                continue  # a folder marker
            if not safe_key(obj.key):
                raise BucketError(
                    "BucketOperationFailed", "spec.bucketName", f"key {obj.key!r} points outside the artifact"
                )
            parts = obj.key.split("/")
            if any(
                rules.ignored("/".join(parts[: d + 1]), is_dir=d < len(parts) - 1) for d in range(len(parts))
            ):
                continue
            wanted.append(obj)
        total = sum(o.size for o in wanted)
        if total > MAX_TOTAL:
            raise BucketError(
                "BucketOperationFailed", "spec.prefix", f"{total} bytes to fetch, more than 100 MiB"
            )
        digest = hashlib.sha256(json.dumps([ignore, text]).encode()).hexdigest()[:16]
        return digest, wanted, text if root_ignore is not None else None

    async def _download(
        self,
        client: S3Client,
        wanted: list[S3Object],
        where: Path,
        revision: str,
        ignore: str | None,
        root_ignore: str | None,
    ) -> Path:
        store = where / "artifacts"
        store.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".fetch.", dir=store))
        try:
            gate = asyncio.Semaphore(PARALLEL)

            async def one(obj: S3Object) -> None:
                async with gate:
                    await client.get_to(obj, scratch / obj.key)

            if root_ignore is not None:  # fetched already for the rules: written, not fetched again
                await asyncio.to_thread(_write, scratch / git_ignore.SOURCEIGNORE, root_ignore.encode())
            await asyncio.gather(
                *(one(o) for o in wanted if o.key != git_ignore.SOURCEIGNORE or root_ignore is None)
            )
            await asyncio.to_thread(git_ignore.apply, scratch, ignore)  # .sourceignore files below the root
            return await asyncio.to_thread(_settle, scratch, store / revision.removeprefix("sha256:"))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _message(repo: Bucket, wanted: list[S3Object]) -> str:
    prefix = f"/{repo.spec.prefix}" if repo.spec.prefix else ""
    return f"{len(wanted)} objects of bucket {repo.spec.bucketName}{prefix}"


def _read_stamp(where: Path, revision: str) -> str | None:
    hex_ = revision.removeprefix("sha256:")
    try:
        rules = json.loads((where / "artifacts" / f"{hex_}.json").read_text())["rules"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(rules) if (where / "artifacts" / hex_).is_dir() else None


def _write_stamp(where: Path, revision: str, rules: str) -> None:
    file = where / "artifacts" / f"{revision.removeprefix('sha256:')}.json"
    tmp = file.with_name(f".{file.name}.tmp")
    tmp.write_text(json.dumps({"revision": revision, "rules": rules}))
    tmp.replace(file)
