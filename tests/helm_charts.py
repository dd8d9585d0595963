"""Charts written by the tests, packaged by Helm's SDK, and an HTTP chart repository serving them with basic auth."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import ssl
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from tests.pki import cert, key, pem
from tests.servers import free_port, serving

HELPERS = """{{- define "app.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "app.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | quote }}
{{- end -}}
"""

CONFIG = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "app.fullname" . }}
  labels:
    {{- include "app.labels" . | nindent 4 }}
data:
  greeting: {{ .Values.greeting | upper | quote }}
  tier: {{ .Values.tier | default "web" | quote }}
  replicas: {{ .Values.replicas | quote }}
"""

SCHEMA = {
    "$schema": "https://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "replicas": {"type": "integer", "minimum": 1},
        "greeting": {"type": "string"},
        "tier": {"type": "string", "pattern": "^[a-z0-9-]+$"},
    },
    "required": ["replicas"],
}


def write_chart(
    root: Path,
    name: str = "app",
    version: str = "1.0.0",
    *,
    templates: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    dependency: bool = True,
    schema: bool = True,
) -> Path:
    """A chart with `_helpers.tpl`, Sprig functions, values.schema.json and a subchart dependency."""
    d = root / name
    (d / "templates").mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"apiVersion": "v2", "name": name, "version": version, "appVersion": version}
    if dependency:
        meta["dependencies"] = [{"name": "extras", "version": "0.1.0"}]
        sub = d / "charts" / "extras"
        (sub / "templates").mkdir(parents=True, exist_ok=True)
        (sub / "Chart.yaml").write_text("apiVersion: v2\nname: extras\nversion: 0.1.0\n")
        (sub / "values.yaml").write_text("note: from the subchart\n")
        (sub / "templates" / "cm.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extras\n"
            "data:\n  note: {{ .Values.note | quote }}\n  sha: {{ .Values.note | sha256sum | trunc 8 | quote }}\n"
        )
    (d / "Chart.yaml").write_text(yaml.safe_dump(meta))
    (d / "values.yaml").write_text(yaml.safe_dump(values or {"replicas": 1, "greeting": "hello"}))
    if schema:
        (d / "values.schema.json").write_text(json.dumps(SCHEMA))
    (d / "templates" / "_helpers.tpl").write_text(HELPERS)
    for file, text in (templates if templates is not None else {"config.yaml": CONFIG}).items():
        (d / "templates" / file).write_text(text)
    return d


def package(chart: Path, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    return Path(helm.package(str(chart), destination=str(into)))


class Tls:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all made here."""

    def __init__(self, root: Path) -> None:
        ca_key = key()
        self.ca = cert("test-ca", ca_key, None, ca=True)
        issuer = (self.ca.subject, ca_key)
        server_key, client_key = (
            key(),
            key(),
        )
        root.mkdir(parents=True, exist_ok=True)
        self.server_pem = root / "server.pem"
        self.server_pem.write_text(pem(cert("127.0.0.1", server_key, issuer, server=True)) + pem(server_key))
        self.ca_pem = root / "ca.pem"
        self.ca_pem.write_text(pem(self.ca))
        self.secret = {
            "ca.crt": pem(self.ca),
            "tls.crt": pem(cert("client", client_key, issuer)),
            "tls.key": pem(client_key),
        }

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_pem)
        ctx.load_verify_locations(self.ca_pem)
        ctx.verify_mode = ssl.CERT_REQUIRED  # the client must show a certificate of the test CA
        return ctx


class ChartRepo:
    """index.yaml and the .tgz files of a folder, behind basic auth; `down()` stops answering."""

    def __init__(
        self,
        root: Path,
        user: str = "helm",
        password: str = "s3cret-pw",
        port: int = 0,
        tls: Tls | None = None,
    ) -> None:
        self.tls = tls
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user, self.password = user, password
        self.requests: list[str] = []
        self._stack = contextlib.ExitStack()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/charts"

    def publish(self, chart: Path) -> None:
        package(chart, self.root)
        self.reindex()

    def reindex(self) -> None:
        entries: dict[str, list[dict[str, Any]]] = {}
        for tgz in sorted(self.root.glob("*.tgz")):
            meta = helm.Chart.load(str(tgz)).metadata
            entries.setdefault(meta["name"], []).append(
                {
                    "apiVersion": "v2",
                    "name": meta["name"],
                    "version": meta["version"],
                    "appVersion": meta.get("appVersion", ""),
                    "digest": hashlib.sha256(tgz.read_bytes()).hexdigest(),
                    "urls": [tgz.name],
                }
            )
        (self.root / "index.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "entries": entries}))

    def __enter__(self) -> ChartRepo:
        repo = self
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                repo.requests.append(self.path)
                if repo.user and self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="charts"')
                    self.end_headers()
                    return
                path = repo.root / self.path.removeprefix("/charts/")
                if not self.path.startswith("/charts/") or not path.is_file():
                    self.send_response(404)
                    self.end_headers()
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:
            server.socket = self.tls.server_context().wrap_socket(server.socket, server_side=True)
        self._stack.enter_context(serving(server, "chart-repo"))
        return self

    def down(self) -> None:
        self._stack.close()

    def __exit__(self, *_: object) -> None:
        self._stack.close()
