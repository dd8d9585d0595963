"""The Cloud Monitoring (Stackdriver) provider against a loopback server answering as Google's API references
document (tests/answers/stackdriver/): the OAuth 2 token endpoint, which checks the service account's signed
JWT with the public half of a key the test generates, and `projects.timeSeries.query`, which wants the token
it granted."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import google.auth.jwt
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.stackdriver import GoogleToken, StackdriverProvider
from tests.answers.replay import Recorded, ReplayServer, Request, load, rendered, replaying

PROJECT = "my-project"
TOKEN = "ya29.c.test-access-token"  # what tests/answers/stackdriver/token.json grants
QUERY_PATH = f"/v3/projects/{PROJECT}/timeSeries:query"
AUDIENCE = (
    "https://oauth2.googleapis.com/token"  # the JWT's `aud`, as Google documents, wherever it is posted
)

# Flagger's documented template (docs/gitbook/usage/metrics.md, "Google Cloud Monitoring"), as a user pastes it.
DOCUMENTED = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: bytes-sent
  namespace: test
spec:
  provider:
    type: stackdriver
    secretRef:
      name: gcloud-sa
  query: |
    fetch k8s_container
    | metric 'istio.io/service/server/response_latencies'
    | filter
        (metric.destination_service_name == '{{ service }}-canary'
        && metric.destination_service_namespace == '{{ namespace }}')
    | align delta(1m)
    | every 1m
    | group_by [],
        [value_response_latencies_percentile:
          percentile(value.response_latencies, 99)]
"""
MQL = "fetch k8s_container | metric 'kubernetes.io/container/cpu/core_usage_time' | every 1m | group_by []"


def private_key() -> tuple[str, str]:
    """A fresh RSA key: (private PEM for the service account's JSON key, public PEM for the server)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def service_account_key(private_pem: str, token_uri: str) -> str:
    """The JSON key Google's console hands out, with its token_uri on the test's server."""
    return json.dumps(
        {
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": private_pem,
            "client_email": f"flagger@{PROJECT}.iam.gserviceaccount.com",
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
    )


def claims(assertion: str, public_pem: str) -> dict[str, Any]:
    """The JWT's claims when its RS256 signature verifies with the key and its audience is Google's."""
    found: dict[str, Any] = google.auth.jwt.decode(assertion, certs=public_pem, audience=AUDIENCE)  # type: ignore[no-untyped-call]
    return found


class Google:
    """The server's side: the token endpoint checks the JWT; the API wants the granted token."""

    def __init__(self, server: ReplayServer, public_pem: str) -> None:
        self.server = server
        self.public_pem = public_pem
        self.api = load("stackdriver", "good")
        server.respond = self.respond

    def respond(self, req: Request) -> Recorded | None:
        if req.path == "/token":
            form = dict(parse_qsl(req.body.decode()))
            try:
                claims(form["assertion"], self.public_pem)
            except (ValueError, KeyError):
                return load("stackdriver", "token-invalid-grant")
            return load("stackdriver", "token")
        if req.headers.get("authorization") != f"Bearer {TOKEN}":
            return load("stackdriver", "unauthenticated")
        return self.api


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return private_key()


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    yield from replaying()


@pytest.fixture
def gcp(server: ReplayServer, keypair: tuple[str, str]) -> Google:
    return Google(server, keypair[1])


def provider(server: ReplayServer, private_pem: str, **kw: object) -> StackdriverProvider:
    token = GoogleToken.from_key(service_account_key(private_pem, f"{server.url}/token"))
    return StackdriverProvider(PROJECT, token, address=server.url, **kw)  # type: ignore[arg-type]


async def test_the_documented_template_is_an_mql_query_with_a_service_account_token(
    server: ReplayServer, gcp: Google, keypair: tuple[str, str]
) -> None:
    template, query, window = rendered(DOCUMENTED, name="podinfo", namespace="test")
    assert "destination_service_name == 'podinfo-canary'" in query
    kind = sources.kind_of("stackdriver")
    assert kind.problems(template.spec.provider) == []
    secret = {"project": PROJECT, "serviceAccountKey": service_account_key(keypair[0], f"{server.url}/token")}
    spec = template.spec.provider.model_copy(update={"address": server.url})
    async with httpx.AsyncClient() as client:
        made = kind.make(sources.SourceContext(spec, "test", secret, client))
        q = MetricQuery(ObjectKey("test/podinfo"), "latency", window, query)
        assert await made.query(q) == 187.5  # the first point: the newest
        assert await made.query(q) == 187.5

    token_req, first, second = server.requests  # one token for both queries
    form = dict(parse_qsl(token_req.body.decode()))
    assert (token_req.method, form["grant_type"]) == ("POST", "urn:ietf:params:oauth:grant-type:jwt-bearer")
    signed = claims(form["assertion"], keypair[1])
    assert signed["iss"] == f"flagger@{PROJECT}.iam.gserviceaccount.com"
    assert signed["scope"] == "https://www.googleapis.com/auth/monitoring.read"
    # projects.timeSeries.query as documented: POST, the project in the path, {"query": ...} in JSON
    assert (first.method, first.path) == ("POST", QUERY_PATH)
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["content-type"] == "application/json"
    assert first.json() == {"query": query}
    assert second.json() == first.json()


async def test_an_int64_value_is_read_from_its_json_string(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str]
) -> None:
    gcp.api = load("stackdriver", "good-int64")
    assert await provider(server, keypair[0]).value(MQL) == 1234.0


async def test_no_time_series_is_no_data_after_the_pages(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str]
) -> None:
    gcp.api = load("stackdriver", "no-data")
    with pytest.raises(NoData, match="no time series"):
        await provider(server, keypair[0]).value(MQL)
    pages = iter([load("stackdriver", "first-page"), load("stackdriver", "good")])
    server.requests.clear()
    respond = gcp.respond
    server.respond = lambda req: (respond(req) if req.path == "/token" else None) or next(pages)
    assert await provider(server, keypair[0]).value(MQL) == 187.5
    api = [r for r in server.requests if r.path == QUERY_PATH]
    assert [r.json().get("pageToken") for r in api] == [None, "CAE-next"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("invalid-argument", "HTTP 400: INVALID_ARGUMENT: Line 2, column 10: unknown metric"),
        ("permission-denied", "HTTP 403: PERMISSION_DENIED: Permission monitoring.timeSeries.list denied"),
    ],
)
async def test_error_answers_are_provider_errors_with_googles_reason(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str], case: str, reason: str
) -> None:
    gcp.api = load("stackdriver", case)
    with pytest.raises(ProviderError) as info:
        await provider(server, keypair[0]).value(MQL)
    assert reason in str(info.value) and "query: fetch k8s_container" in str(info.value)


async def test_bad_credentials_are_refused_and_never_shown(gcp: Google, server: ReplayServer) -> None:
    other, _ = private_key()  # a key the token endpoint does not know
    p = provider(server, other)
    with pytest.raises(ProviderError) as info:
        await p.value(MQL)
    text = str(info.value)
    assert "no Google access token: invalid_grant: Invalid JWT Signature." in text
    assert "PRIVATE KEY" not in text and other[40:80] not in text and other[40:80] not in repr(p)
    assert not await p.is_online()
    # a token the API does not take (revoked, or for another audience)
    server.respond = lambda req: load("stackdriver", "token") if req.path == "/token" else None
    server.answer = load("stackdriver", "unauthenticated")
    with pytest.raises(ProviderError) as info:
        await provider(server, other).value(MQL)
    assert "HTTP 401: UNAUTHENTICATED: Request had invalid authentication credentials" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_is_online_as_flagger_an_empty_query_is_invalid(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str]
) -> None:
    gcp.api = load("stackdriver", "invalid-argument")
    assert await provider(server, keypair[0]).is_online()
    assert server.requests[-1].json() == {"query": ""}
    gcp.api = load("stackdriver", "permission-denied")
    assert not await provider(server, keypair[0]).is_online()


async def test_the_timeout_covers_the_token_and_the_query(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str]
) -> None:
    gcp.api = load("stackdriver", "good", pause_s=2.0)
    with pytest.raises(ProviderError, match=r"Cloud Monitoring at .* did not answer within 0.3s"):
        await provider(server, keypair[0], timeout_s=0.3).value(MQL)
    gcp.api = load("stackdriver", "good", trickle=3, pause_s=0.05)
    with pytest.raises(ProviderError, match=r"did not answer within 0.5s"):
        await provider(server, keypair[0], timeout_s=0.5).value(MQL)
    server.respond = None
    server.answer = load("stackdriver", "token", pause_s=2.0)  # the token endpoint hangs
    other, _ = private_key()
    with pytest.raises(ProviderError, match=r"no Google access token within 0.3s"):
        await provider(server, other, timeout_s=0.3).value(MQL)
    # a slow token and then a slow query: one deadline for both, not one each
    server.respond = lambda req: load(
        "stackdriver", "token" if req.path == "/token" else "good", pause_s=0.35
    )
    slow = provider(server, private_key()[0], timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"Cloud Monitoring at .* did not answer within 0.5s"):
        await slow.value(MQL)
    assert time.monotonic() - started < 0.65


def _series(*values: object) -> bytes:
    data = [{"labelValues": [], "pointData": [{"values": [v]}]} for v in values]
    return json.dumps({"timeSeriesData": data}).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"timeSeriesData": {"a": 1}}', "timeSeriesData that is not a list"),
        (b'{"timeSeriesData": [{"labelValues": []}]}', "a series without pointData"),
        (_series({"doubleValue": 1}, {"doubleValue": 2}), "2 time series, not one; aggregate them"),
        (_series({"stringValue": "x"}), "returned a stringValue, not a number"),
        (_series({"doubleValue": "lots"}), "a value that is not a number"),
        (_series({"doubleValue": True}), "a value that is not a number"),
        (_series({"doubleValue": "NaN"}), "returned NaN, not a number to judge"),
        (_series({"int64Value": "9" * 400}), "returned +Inf, not a number to judge"),
    ],
)
async def test_a_malformed_answer_says_what_is_wrong(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str], body: bytes, reason: str
) -> None:
    gcp.api = Recorded(200, body)
    with pytest.raises(ProviderError) as info:
        await provider(server, keypair[0]).value(MQL)
    assert reason in str(info.value)


async def test_a_series_without_points_is_no_data(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str]
) -> None:
    gcp.api = Recorded(200, b'{"timeSeriesData": [{"labelValues": [], "pointData": []}]}')
    with pytest.raises(NoData, match="without points"):
        await provider(server, keypair[0]).value(MQL)


async def test_promql_through_cloud_monitorings_prometheus_api(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str]
) -> None:
    """MQL is deprecated: an address ending in /prometheus runs PromQL with the same token."""
    gcp.api = load("stackdriver", "promql-good")
    token = GoogleToken.from_key(service_account_key(keypair[0], f"{server.url}/token"))
    prom = f"{server.url}/v1/projects/{PROJECT}/location/global/prometheus"
    p = StackdriverProvider(PROJECT, token, address=prom)
    assert await p.value('sum(rate(istio_requests_total{destination_workload="podinfo"}[1m]))') == 99.5
    req = server.requests[-1]
    assert (req.method, req.path) == (
        "GET",
        f"/v1/projects/{PROJECT}/location/global/prometheus/api/v1/query",
    )
    assert req.query == {"query": 'sum(rate(istio_requests_total{destination_workload="podinfo"}[1m]))'}
    assert req.headers["authorization"] == f"Bearer {TOKEN}"


async def test_application_default_credentials_from_the_environment(
    gcp: Google, server: ReplayServer, keypair: tuple[str, str], tmp_path: Path
) -> None:
    key_file = tmp_path / "key.json"
    key_file.write_text(service_account_key(keypair[0], f"{server.url}/token"))
    kind = sources.kind_of("stackdriver")
    (template, *_) = rendered(DOCUMENTED)
    spec = template.spec.provider.model_copy(update={"address": server.url})
    async with httpx.AsyncClient() as client:
        ctx = sources.SourceContext(
            spec,
            "test",
            {"project": PROJECT},
            client,
            environ={"GOOGLE_APPLICATION_CREDENTIALS": str(key_file)},
        )
        assert await kind.make(ctx).query(MetricQuery(ObjectKey("test/podinfo"), "m", 60, MQL)) == 187.5
        assert server.requests[0].path == "/token"


def test_the_kind_names_what_a_template_lacks() -> None:
    kind = sources.kind_of("stackdriver")
    (template, *_) = rendered(DOCUMENTED)
    spec = template.spec.provider
    assert [f for f, _ in kind.problems(spec.model_copy(update={"secretRef": None}))] == ["secretRef"]
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="no `project`"):
        kind.make(sources.SourceContext(spec, "test", {"serviceAccountKey": "{}"}, client))
    with pytest.raises(ValueError, match="not a service account's JSON key") as info:
        kind.make(
            sources.SourceContext(spec, "test", {"project": PROJECT, "serviceAccountKey": "{secret"}, client)
        )
    assert "{secret" not in str(info.value)
