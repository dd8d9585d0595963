"""A loopback HTTP server that answers as a SaaS metrics API's reference documents it, for the Datadog, New
Relic and Dynatrace provider tests.

Its answers are recorded in tests/answers/<provider>/<case>.json, one file per documented case, each naming
the reference it was written from:

    {"reference": "https://...", "case": "what it shows",
     "request": {"method": "GET", "path": "/api/v1/query"},
     "response": {"status": 200, "body": {...}}}        (or "text": "..." for a body that is not JSON)

The server keeps every request it got (method, path, query parameters, headers), refuses a request whose
credentials are not the ones it was given with the provider's recorded "refused" answer, answers the
recorded answer set for the path, and can trickle its body to test a deadline over the whole exchange.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from rheostat.model.canary import Canary
from rheostat.model.load import parse_text
from rheostat.model.metric_template import MetricTemplate
from rheostat.plugins.metrics.base import MetricProvider, NoData, ProviderError
from rheostat.plugins.metrics.sources import SourceContext, SourceKind
from rheostat.rollout.analysis import Checker
from rheostat.rollout.judges import Sample
from tests.servers import serving

ANSWERS = Path(__file__).parent / "answers"


@dataclass(frozen=True)
class Recorded:
    """One documented answer."""

    reference: str
    case: str
    method: str
    path: str
    status: int
    body: bytes
    content_type: str = "application/json"

    def with_body(self, body: Any) -> Recorded:
        """The same answer with another JSON body (a case built from a recorded one)."""
        return Recorded(
            self.reference, self.case, self.method, self.path, self.status, json.dumps(body).encode()
        )

    def with_raw(self, body: bytes, status: int = 200) -> Recorded:
        """The same request answered with another body, as it is (a malformed answer)."""
        return Recorded(self.reference, self.case, self.method, self.path, status, body)

    def json(self) -> Any:
        return json.loads(self.body)


def recorded(provider: str, case: str) -> Recorded:
    doc = json.loads((ANSWERS / provider / f"{case}.json").read_text())
    response = doc["response"]
    if "text" in response:
        body, content_type = response["text"].encode(), response.get("content_type", "text/plain")
    else:
        body, content_type = json.dumps(response["body"]).encode(), "application/json"
    return Recorded(
        doc["reference"],
        doc["case"],
        doc["request"]["method"],
        doc["request"]["path"],
        response["status"],
        body,
        content_type,
    )


def cases(provider: str, prefix: str) -> list[str]:
    """The recorded cases of a provider whose names start with `prefix`, sorted."""
    return sorted(p.stem for p in (ANSWERS / provider).glob(f"{prefix}*.json"))


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case

    def param(self, name: str) -> str:
        (value,) = self.params[name]  # sent once
        return value


class SaaSServer(ThreadingHTTPServer):
    """`allowed(headers)` says whether the credentials are the right ones; else `refused` is the answer."""

    daemon_threads = True

    def __init__(self, allowed: Callable[[Mapping[str, str]], bool], refused: Recorded) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.allowed = allowed
        self.refused = refused
        self.answers: dict[str, Recorded] = {}  # by path
        self.requests: list[Seen] = []
        self.trickle_s = 0.0  # a pause after each byte of the body (headers are sent at once)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def answer(self, *answers: Recorded) -> None:
        for a in answers:
            self.answers[a.path] = a

    @property
    def last(self) -> Seen:
        return self.requests[-1]


class _Handler(BaseHTTPRequestHandler):
    server: SaaSServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.requests.append(Seen("GET", parts.path, parse_qs(parts.query), headers))
        answer = self.server.answers.get(parts.path)
        if not self.server.allowed(headers):
            answer = self.server.refused
        if answer is None or answer.method != "GET":
            self._send(404, b"no recorded answer for this request", "text/plain")
            return
        self._send(answer.status, answer.body, answer.content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self.server.trickle_s:
                self.wfile.write(body)
                return
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(self.server.trickle_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a deadline test)
        finally:
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


async def failure(query: Awaitable[float]) -> str:
    """The message of the ProviderError that `query` ends with."""
    with pytest.raises(ProviderError) as info:
        await query
    return str(info.value)


async def no_credential_shown(
    server: SaaSServer, answer: Recorded, query: Awaitable[float], secrets: Sequence[str]
) -> None:
    """`query` against `answer`: a value, or a message without any of the `secrets`."""
    server.answer(answer)
    said = ""
    try:
        await query
    except (NoData, ProviderError) as exc:
        said = str(exc)
    assert said or answer.status == 200  # no message only for a value
    assert not any(secret in said for secret in secrets)


def saas_server(allowed: Callable[[Mapping[str, str]], bool], refused: Recorded) -> Iterator[SaaSServer]:
    """For a fixture: the server in a thread for the test, shut down after it."""
    with serving(SaaSServer(allowed, refused), "saas-server") as server:
        yield server


# -- a documented MetricTemplate, run as a canary's analysis runs it ----------------------------------------


def documented(objects: str) -> tuple[Canary, list[MetricTemplate]]:
    """The Canary and MetricTemplates of a YAML text (as a user pastes them from Flagger's docs)."""
    parsed = parse_text(objects)
    canaries = [o for o in parsed if isinstance(o, Canary)]
    templates = [o for o in parsed if isinstance(o, MetricTemplate)]
    assert len(canaries) == 1 and templates, "the text needs one Canary and its MetricTemplates"
    return canaries[0], templates


async def measure(
    kind: SourceKind,
    canary: Canary,
    templates: Sequence[MetricTemplate],
    secrets: Mapping[str, Mapping[str, str]],
    client: Any,
    address: str,
) -> list[Sample]:
    """Every metric of the canary's analysis, each template's query rendered and sent to `address` (the
    local server standing in for the SaaS address the template names)."""
    by_key = {(t.metadata.namespace, t.metadata.name): t for t in templates}

    def provider(template: MetricTemplate) -> MetricProvider:
        spec = template.spec.provider.model_copy(update={"address": address})
        ref = spec.secretRef
        secret = secrets.get(ref.name) if ref is not None else None
        return kind.make(SourceContext(spec, template.metadata.namespace, secret, client))

    checker = Checker(
        hooks=None,  # type: ignore[arg-type]  # metrics only
        metrics={},
        templates=lambda ns, name: by_key.get((ns, name)),
        template_providers=provider,
    )
    return [await checker.measure(canary, m) for m in canary.spec.the_analysis.metrics]


def secret_data(manifest: str) -> dict[str, str]:
    """A Secret's `data`, as the docs write it (plain values under `data`, as Flagger's examples do)."""
    doc = yaml.safe_load(manifest)
    return {str(k): str(v) for k, v in doc["data"].items()}


def assert_findings(folder: Path, manifests: str, expected: Sequence[tuple[str, str]]) -> None:
    """`rheostat validate` finds just `expected`: (field, words of its message) each."""
    found = [f["message"].split(": ", 1) for f in validate(folder, manifests)]
    assert len(found) == len(expected), found
    for (field, message), (want_field, words) in zip(found, expected, strict=True):
        assert field == want_field and words in message


def validate(folder: Path, manifests: str) -> list[dict[str, str]]:
    """`rheostat validate <folder> -o json` on the manifests written there: its findings."""
    from click.testing import CliRunner

    from rheostat.cli.main import cli

    (folder / "objects.yaml").write_text(manifests)
    found: list[dict[str, str]] = json.loads(
        CliRunner().invoke(cli, ["validate", str(folder), "-o", "json"]).output
    )
    return found
