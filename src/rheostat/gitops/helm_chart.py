"""The chart a HelmChart or a HelmRelease's chart template names: from an HTTP chart repository (helm_repo.py)
or a folder of a GitRepository (packaged by Helm), with its valuesFiles merged."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from rheostat.gitops import helm_render
from rheostat.gitops.helm_repo import ChartRepos, RepoError
from rheostat.gitops.reconciler import SOURCE
from rheostat.model.helm import ChartSpecFields, HelmRepository
from rheostat.model.load import parse_object
from rheostat.model.yaml_limits import YamlLimitError, safe_load

if TYPE_CHECKING:
    from rheostat.gitops.reconciler import GitOps

HELMREPOSITORY = "HelmRepository"


class Failure(Exception):
    """A release that cannot be made; `field` is the HelmRelease field at fault, `reason` Flux's reason."""

    def __init__(self, reason: str, field: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class Chart:
    name: str
    version: str
    app_version: str
    digest: str
    archive: bytes
    values: dict[str, Any]  # valuesFiles, merged


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's values merge: maps deep, everything else replaced."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class ChartSources:
    """Resolves chart specs; a chart folder from Git is packaged once per content digest."""

    def __init__(self, gitops: GitOps, repos: ChartRepos) -> None:
        self.gitops = gitops
        self.store = gitops.store
        self.repos = repos
        self._git_charts: dict[str, Chart] = {}

    async def resolve(self, spec: ChartSpecFields, namespace: str, now: float, *, field: str) -> Chart:
        """The chart a HelmChart (or a HelmRelease's chart template) names, with its valuesFiles merged."""
        ref = spec.sourceRef
        src = f"{ref.namespace or namespace}/{ref.name}"
        if ref.kind == "GitRepository":
            return await self._git_chart(spec, src, field)
        stored = self.store.get_object(HELMREPOSITORY, src)
        if stored is None:
            raise Failure("ArtifactFailed", f"{field}.sourceRef", f"HelmRepository {src} not found")
        repo = parse_object(stored.body, stored.source)
        assert isinstance(repo, HelmRepository)
        try:
            entry, archive = await self.repos.chart(repo, spec.chart, spec.version, now)
        except RepoError as exc:
            where = (
                f"{field}.{exc.field}"
                if exc.field in ("chart", "version")
                else f"HelmRepository {src} spec.{exc.field}"
            )
            raise Failure("ArtifactFailed", where, str(exc)) from None
        digest = str(entry.get("digest") or "sha256:" + hashlib.sha256(archive).hexdigest())
        if not digest.startswith("sha256:"):
            digest = "sha256:" + digest
        values = self._archive_values(archive, spec, field)
        version = str(entry.get("version"))
        return Chart(spec.chart, version, str(entry.get("appVersion", "")), digest, archive, values)

    def _archive_values(self, archive: bytes, spec: ChartSpecFields, field: str) -> dict[str, Any]:
        if not spec.values_files:
            return {}
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            names = {m.name.split("/", 1)[-1]: m for m in tar.getmembers() if m.isfile()}
            texts = {}
            for path in spec.values_files:
                member = names.get(path.lstrip("./"))
                f = tar.extractfile(member) if member is not None else None
                texts[path] = f.read().decode() if f is not None else None
        return self._merge_files(texts, spec, field)

    def _merge_files(self, texts: dict[str, str | None], spec: ChartSpecFields, field: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, text in texts.items():
            if text is None:
                if spec.ignoreMissingValuesFiles:
                    continue
                raise Failure(
                    "ArtifactFailed", f"{field}.valuesFiles", f"values file {path!r} not found in the chart"
                )
            try:
                data = safe_load(text) or {}
            except (yaml.YAMLError, YamlLimitError) as exc:
                raise Failure("ArtifactFailed", f"{field}.valuesFiles", f"{path}: not YAML: {exc}") from None
            if not isinstance(data, dict):
                raise Failure("ArtifactFailed", f"{field}.valuesFiles", f"{path}: expected a mapping")
            out = merge(out, data)
        return out

    async def _git_chart(self, spec: ChartSpecFields, src: str, field: str) -> Chart:
        artifact = self.gitops.state(SOURCE, src).get("artifact")
        if artifact is None:
            raise Failure(
                "ArtifactFailed", f"{field}.sourceRef", f"source GitRepository {src} has no artifact"
            )
        found = await asyncio.to_thread(_git_files, Path(artifact["path"]), spec)
        if found is None:
            raise Failure(
                "ArtifactFailed",
                f"{field}.chart",
                f"no chart (Chart.yaml) at {spec.chart!r} in GitRepository {src}",
            )
        directory, files, texts = found
        chart = self._git_charts.get(files)
        if chart is None:
            try:
                archive = await asyncio.to_thread(_package, directory)
                info = helm_render.chart_info(archive)
            except helm_render.RenderError as exc:
                raise Failure("ArtifactFailed", f"{field}.chart", f"{spec.chart}: {exc}") from None
            chart = Chart(info.name, info.version, info.app_version, files, archive, {})
            self._git_charts[files] = chart
        version = chart.version
        if spec.reconcileStrategy == "Revision":
            version = f"{version}+{artifact['revision'].rsplit(':', 1)[-1][:12]}"
        values = self._merge_files(texts, spec, field)
        return Chart(chart.name, version, chart.app_version, chart.digest, chart.archive, values)

    # -- releases ---------------------------------------------------------------------------------------


def _tree_digest(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(directory)).encode() + b"\0" + f.read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def _git_files(root: Path, spec: ChartSpecFields) -> tuple[Path, str, dict[str, str | None]] | None:
    """The chart folder in a Git checkout, a digest of its files, and the valuesFiles (relative to the root)."""
    directory = (root / spec.chart).resolve()
    if not directory.is_relative_to(root.resolve()) or not (directory / "Chart.yaml").is_file():
        return None
    texts: dict[str, str | None] = {}
    for path in spec.values_files:
        f = (root / path).resolve()
        texts[path] = f.read_text() if f.is_relative_to(root.resolve()) and f.is_file() else None
    return directory, _tree_digest(directory), texts


def _package(directory: Path) -> bytes:
    with tempfile.TemporaryDirectory(prefix="rheostat-chart-") as scratch:
        return Path(helm_render.package(str(directory), scratch)).read_bytes()
