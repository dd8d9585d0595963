"""Rendering a chart through Helm's own Go SDK (helm-python-sdk); the one module that imports helm_python.

Helm's template engine (text/template with Sprig, `include`, `tpl`, subcharts, values.schema.json) is Go
code: rendering through Helm itself gives what `helm template` gives, with no binary to install.
docs/helm.md says why this binding and not the alternatives."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import helm_python as helm


class RenderError(Exception):
    """The chart could not be loaded or rendered, or the values fail its schema; `field` says which input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class ChartInfo:
    name: str
    version: str
    app_version: str


_lock = (
    threading.Lock()
)  # the binding's calls are made one at a time (an alpha binding: no shared state risked)


def chart_info(archive: bytes) -> ChartInfo:
    with _lock:
        try:
            with helm.Chart.load_archive(archive) as chart:
                meta = chart.metadata
        except helm.HelmError as exc:
            raise RenderError("chart", f"not a chart archive: {_text(exc)}") from None
    return ChartInfo(str(meta.get("name", "")), str(meta.get("version", "")), str(meta.get("appVersion", "")))


def render(
    archive: bytes,
    values: dict[str, Any],
    *,
    name: str,
    namespace: str,
    revision: int,
    install: bool,
) -> dict[str, str]:
    """{template path: text} as `helm template` renders it; RenderError naming values or the template."""
    with _lock:
        try:
            chart = helm.Chart.load_archive(archive)
        except helm.HelmError as exc:
            raise RenderError("chart", f"the chart does not load: {_text(exc)}") from None
        with chart:  # Helm checks the values against values.schema.json before it renders
            try:
                return chart.render(
                    values,
                    name=name,
                    namespace=namespace,
                    revision=revision,
                    is_install=install,
                    is_upgrade=not install,
                )
            except helm.HelmValuesError as exc:
                raise RenderError("values", f"the values fail the chart's schema: {_text(exc)}") from None
            except helm.HelmError as exc:
                raise RenderError("chart", f"the chart does not render: {_text(exc)}") from None


def package(directory: str, destination: str) -> str:
    """A chart folder packaged as `helm package` does (charts kept in a GitRepository); the .tgz path."""
    with _lock:
        try:
            return helm.package(directory, destination=destination)
        except helm.HelmError as exc:
            raise RenderError("chart", f"the chart does not load: {_text(exc)}") from None


def sdk_version() -> str:
    return helm.helm_sdk_version()


def _text(exc: Exception) -> str:
    return " ".join(str(exc).split())
