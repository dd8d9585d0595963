"""HTTP chart repositories: the index fetched, a version chosen by semver range, the archive downloaded.

Basic auth from the HelmRepository's `secretRef` (`username`, `password`), TLS from its `certSecretRef`
(`ca.crt`, and `tls.crt` + `tls.key` for a client certificate). Archives are kept by their digest, so a chart
already fetched is never downloaded again."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import ssl
import tempfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import nodesemver  # type: ignore[import-untyped]
import yaml

from rheostat.gitops.sources import SecretLookup
from rheostat.model.helm import HelmRepository
from rheostat.model.yaml_limits import YamlLimitError, safe_load_all
from rheostat.util.durations import parse_duration
from rheostat.util.errors import describe_error

MAX_INDEX = 64 * 1024 * 1024
MAX_CHART = 32 * 1024 * 1024


class RepoError(Exception):
    """The repository or chart could not be had; `field` names the HelmRepository/HelmChart field at fault."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Index:
    revision: str  # sha256 of the index as served
    entries: dict[str, list[dict[str, Any]]]


def pick_version(spec: str, versions: list[str], chart: str) -> str:
    """The highest version in a Masterminds-style range (`*`, `1.2.x`, `>=1.0 <2`, `^1.2`, `1.2.3`)."""
    rng = " ".join(spec.replace(",", " ").split()) or "*"
    if nodesemver.valid_range(rng, True) is None:
        raise RepoError("InvalidSpec", "version", f"{spec!r} is not a semver version or range")
    valid = [v for v in versions if nodesemver.valid(v, True) is not None]
    best: object = nodesemver.max_satisfying(valid, rng, loose=True)
    if not isinstance(best, str):
        newest = sorted(valid, key=functools.cmp_to_key(lambda a, b: nodesemver.compare(a, b, True)))
        shown = ", ".join(reversed(newest[-5:]))
        raise RepoError(
            "ChartNotFound",
            "version",
            f"no version of chart {chart!r} matches {spec!r} (the repository has {shown or 'none'})",
        )
    return best


class ChartRepos:
    """Indexes by repository, archives by digest; both in memory, the archives bounded."""

    def __init__(
        self, secrets: SecretLookup | None = None, *, max_archives: int = 256, cache_dir: Path | None = None
    ) -> None:
        self.secrets = secrets
        self.cache_dir = cache_dir  # archives by digest on disk too: a restart downloads no chart again
        self._indexes: dict[str, tuple[float, Index]] = {}
        self._archives: OrderedDict[str, bytes] = OrderedDict()
        self.max_archives = max_archives
        self.downloads = 0  # archives fetched over the network (the benchmark and tests read it)

    # -- index ------------------------------------------------------------------------------------------

    async def index(self, repo: HelmRepository, now: float, *, refresh: bool = False) -> Index:
        key = repo.metadata.key
        cached = self._indexes.get(key)
        if cached is not None and not refresh and now < cached[0]:
            return cached[1]
        url = repo.spec.url.rstrip("/") + "/index.yaml"
        async with self._client(repo) as client:
            body = await self._get(client, url, MAX_INDEX, repo, "url")
        try:
            docs = safe_load_all(body.decode("utf-8", errors="replace"))
        except (yaml.YAMLError, YamlLimitError) as exc:
            raise RepoError("IndexationFailed", "url", f"{url}: index.yaml is not YAML: {exc}") from None
        doc = docs[0] if docs else None
        if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
            raise RepoError("IndexationFailed", "url", f"{url}: not a chart repository index (no entries)")
        entries = {str(k): [e for e in v if isinstance(e, dict)] for k, v in doc["entries"].items() if v}
        index = Index("sha256:" + hashlib.sha256(body).hexdigest(), entries)
        self._indexes[key] = (now + parse_duration(repo.spec.interval), index)
        return index

    # -- charts -----------------------------------------------------------------------------------------

    async def chart(
        self, repo: HelmRepository, name: str, version: str, now: float
    ) -> tuple[dict[str, Any], bytes]:
        """The index entry of the chart version in `version` (a range) and its archive, digest checked."""
        index = await self.index(repo, now)
        entries = index.entries.get(name)
        if not entries:
            raise RepoError(
                "ChartNotFound", "chart", f"chart {name!r} is not in the index of {repo.spec.url}"
            )
        chosen = pick_version(version, [str(e.get("version", "")) for e in entries], name)
        entry = next(e for e in entries if str(e.get("version")) == chosen)
        want = str(entry.get("digest") or "")
        if want and (hit := self._archives.get(want)) is not None:
            self._archives.move_to_end(want)
            return entry, hit
        if want and (hit := await asyncio.to_thread(self._from_disk, want)) is not None:
            self._keep(want, hit)
            return entry, hit
        urls = entry.get("urls") or []
        if not urls:
            raise RepoError("ChartPullFailed", "chart", f"chart {name} {chosen}: the index lists no URL")
        url = urljoin(repo.spec.url.rstrip("/") + "/", str(urls[0]))
        same_host = urlsplit(url).netloc == urlsplit(repo.spec.url).netloc
        async with self._client(repo, credentials=same_host or repo.spec.passCredentials) as client:
            data = await self._get(client, url, MAX_CHART, repo, "chart")
        self.downloads += 1
        got = hashlib.sha256(data).hexdigest()
        if want and want.removeprefix("sha256:") != got:
            raise RepoError(
                "ChartPullFailed",
                "chart",
                f"chart {name} {chosen}: digest {got} does not match the index's {want}",
            )
        key = want or f"sha256:{got}"
        self._keep(key, data)
        if self.cache_dir is not None:
            await asyncio.to_thread(self._to_disk, key, data)
        return entry, data

    def _keep(self, key: str, data: bytes) -> None:
        self._archives[key] = data
        if len(self._archives) > self.max_archives:
            self._archives.popitem(last=False)

    def _path(self, digest: str) -> Path | None:
        hexdigest = digest.removeprefix("sha256:")
        if self.cache_dir is None or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            return None
        return self.cache_dir / f"{hexdigest}.tgz"

    def _from_disk(self, digest: str) -> bytes | None:
        path = self._path(digest)
        if path is None or not path.is_file():
            return None
        data = path.read_bytes()
        return data if hashlib.sha256(data).hexdigest() == digest.removeprefix("sha256:") else None

    def _to_disk(self, digest: str, data: bytes) -> None:
        path = self._path(digest)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    # -- http -------------------------------------------------------------------------------------------

    def _secret(self, repo: HelmRepository, name: str, field: str) -> Mapping[str, str]:
        found = self.secrets(repo.metadata.namespace, name) if self.secrets is not None else None
        if found is None:
            raise RepoError(
                "AuthenticationFailed", field, f"secret {repo.metadata.namespace}/{name} not found"
            )
        return found

    def _client(self, repo: HelmRepository, *, credentials: bool = True) -> httpx.AsyncClient:
        auth = None
        if repo.spec.secretRef is not None and credentials:
            data = self._secret(repo, repo.spec.secretRef.name, "secretRef")
            if "username" not in data or "password" not in data:
                raise RepoError(
                    "AuthenticationFailed",
                    "secretRef",
                    f"secret {repo.metadata.namespace}/{repo.spec.secretRef.name} needs username and password",
                )
            auth = httpx.BasicAuth(data["username"], data["password"])
        verify: ssl.SSLContext | bool = True
        if repo.spec.certSecretRef is not None:
            verify = self._tls(repo, self._secret(repo, repo.spec.certSecretRef.name, "certSecretRef"))
        timeout = parse_duration(repo.spec.timeout)
        return httpx.AsyncClient(auth=auth, verify=verify, timeout=timeout, follow_redirects=True)

    @staticmethod
    def _tls(repo: HelmRepository, data: Mapping[str, str]) -> ssl.SSLContext:
        ctx = (
            ssl.create_default_context(cadata=data["ca.crt"])
            if "ca.crt" in data
            else ssl.create_default_context()
        )
        if "tls.crt" in data and "tls.key" in data:
            # ssl reads a client key from a file only: a private 0600 file, removed as soon as it is read
            fd, path = tempfile.mkstemp(prefix="rheostat-tls-")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(data["tls.crt"] + "\n" + data["tls.key"])
                ctx.load_cert_chain(path)
            finally:
                os.unlink(path)
        return ctx

    @staticmethod
    async def _get(
        client: httpx.AsyncClient, url: str, limit: int, repo: HelmRepository, field: str
    ) -> bytes:
        try:
            async with client.stream("GET", url) as r:
                if r.status_code in (401, 403):
                    raise RepoError(
                        "AuthenticationFailed", "secretRef", f"{url}: {r.status_code} (check spec.secretRef)"
                    )
                if r.status_code != 200:
                    raise RepoError("FetchFailed", field, f"{url}: HTTP {r.status_code}")
                data = bytearray()
                async for chunk in r.aiter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise RepoError("FetchFailed", field, f"{url}: larger than {limit // 2**20} MiB")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise RepoError("FetchFailed", field, f"{url}: {describe_error(exc) or 'no answer'}") from None
