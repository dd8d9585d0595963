"""What every HTTP metric provider must say the same way (plugins/metrics/http_query.py): an answer that is
empty, not JSON, or JSON of another shape; an error status; a body past the cap; an answer that trickles
past the deadline; a server that is not there. Each is a failed check that names the provider, the status,
the start of what came back and the query, and never a credential.

A real HTTP server on loopback answers every request the same (tests/answering.py). What is the provider's
own (its answer's fields, its error envelope) is tested in its own file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import google.oauth2.credentials
import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.cloudwatch import AwsCredentials, CloudWatchProvider
from rheostat.plugins.metrics.datadog import DatadogProvider
from rheostat.plugins.metrics.dynatrace import DynatraceProvider
from rheostat.plugins.metrics.graphite import Credentials as GraphiteCredentials
from rheostat.plugins.metrics.graphite import GraphiteProvider
from rheostat.plugins.metrics.influxdb import Credentials as InfluxCredentials
from rheostat.plugins.metrics.influxdb import InfluxProvider
from rheostat.plugins.metrics.newrelic import NewRelicProvider
from rheostat.plugins.metrics.prometheus import Auth, PrometheusProvider
from rheostat.plugins.metrics.stackdriver import GoogleToken, StackdriverProvider
from tests.answering import Answer, AnswerServer, answering
from tests.servers import free_port

SECRET = "s3cr3t-credential-0123456789abcdef"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Kind:
    name: str  # as messages name it
    make: Callable[[str, float], MetricProvider]  # (address, timeout_s)
    text: str  # a query, as messages quote it
    error: Callable[[str], object]  # the provider's error answer saying a message (a str: a text body)
    sends_secret: bool = True  # the server gets a credential, which it might quote back

    def __str__(self) -> str:
        return self.name


def _stackdriver(url: str, timeout_s: float) -> MetricProvider:
    token = GoogleToken(google.oauth2.credentials.Credentials(token=SECRET))  # type: ignore[no-untyped-call]
    return StackdriverProvider("my-project", token, address=url, timeout_s=timeout_s)


KINDS = [
    Kind(
        "Prometheus",
        lambda url, t: PrometheusProvider(url, auth=Auth(token=SECRET), timeout_s=t),
        "up",
        lambda m: {"status": "error", "errorType": "bad_data", "error": m},
    ),
    Kind(
        "Graphite",
        lambda url, t: GraphiteProvider(url, credentials=GraphiteCredentials("reader", SECRET), timeout_s=t),
        "target=app.ok",
        lambda m: m,
    ),
    Kind(
        "InfluxDB",
        lambda url, t: InfluxProvider(url, credentials=InfluxCredentials(token=SECRET), timeout_s=t),
        "SELECT v FROM m",
        lambda m: {"error": m},
    ),
    Kind(
        "Datadog",
        lambda url, t: DatadogProvider(SECRET, SECRET[::-1], url, timeout_s=t),
        "sum:x{*}",
        lambda m: {"errors": [m]},
    ),
    Kind(
        "New Relic",
        lambda url, t: NewRelicProvider("2741658", SECRET, url, timeout_s=t),
        "SELECT count(*)",
        lambda m: {"error": m},
    ),
    Kind(
        "Dynatrace",
        lambda url, t: DynatraceProvider(SECRET, url, timeout_s=t),
        "builtin:service.response",
        lambda m: {"error": {"code": 400, "message": m}},
    ),
    Kind(
        "CloudWatch",
        lambda url, t: CloudWatchProvider(
            "eu-west-1", AwsCredentials("AKID", SECRET), address=url, timeout_s=t
        ),
        '[{"Id": "m1", "Expression": "SUM(METRICS())"}]',
        lambda m: {"__type": "com.amazon.coral.validate#ValidationError", "message": m},
        sends_secret=False,  # SigV4 signs with the secret key and never sends it
    ),
    Kind(
        "Cloud Monitoring",
        _stackdriver,
        "fetch k8s_container",
        lambda m: {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": m}},
        sends_secret=False,  # (its token comes from Google's token endpoint)
    ),
]


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    yield from answering()


async def said(kind: Kind, address: str, timeout_s: float = 5.0) -> str:
    """The failed check's message; its query quoted, no credential in it, and short."""
    provider = kind.make(address, timeout_s)
    with pytest.raises(ProviderError) as info:
        await provider.query(MetricQuery(ObjectKey("test/podinfo"), "check", 60.0, kind.text))
    message = str(info.value)
    assert f"query: {kind.text}" in message and SECRET not in message and len(message) < 600
    assert SECRET not in repr(provider)
    return message


UNUSABLE = [
    # (answer, what the failed check says after "<provider> answered ")
    (Answer(200, b""), "HTTP 200 with an empty body"),
    (Answer(200, b"   \n"), "HTTP 200 with an empty body"),
    (Answer(200, b"<html>maintenance</html>", "text/html"), "HTTP 200 with a body that is not JSON: '<html>"),
    (Answer(200, b"[" * 100_000 + b"]" * 100_000), "HTTP 200 with a body that is not JSON: '[[[["),
    (Answer(200, b'"x"'), "HTTP 200 with JSON that is not"),
    (Answer(503, b"upstream connect error", "text/plain"), "HTTP 503: "),
    (Answer(502, b""), "HTTP 502"),
]


@pytest.mark.parametrize("kind", KINDS, ids=str)
@pytest.mark.parametrize(("answer", "says"), UNUSABLE)
async def test_an_unusable_answer_is_a_failed_check_that_says_what_came_back(
    server: AnswerServer, kind: Kind, answer: Answer, says: str
) -> None:
    server.answer = answer
    message = await said(kind, server.url)
    assert f"{kind.name} answered {says}" in message
    if answer.status >= 400 and answer.body:
        assert "upstream connect error" in message  # the server's own words


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_an_error_answer_says_the_providers_own_words_cut_short_and_never_a_credential(
    server: AnswerServer, kind: Kind
) -> None:
    quoted = SECRET if kind.sends_secret else "'up'"
    error = kind.error(f"bad query near {quoted}: " + "x" * 5000)
    body = error.encode() if isinstance(error, str) else json.dumps(error).encode()
    server.answer = Answer(400, body, "text/plain" if isinstance(error, str) else "application/json")
    message = await said(kind, server.url)  # short, with the query, without the credential
    assert f"{kind.name} answered HTTP 400: " in message and "xxxxxxxxxx" in message
    assert "bad query near " + ("***" if kind.sends_secret else quoted) in message


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_trickling_answer_is_cut_at_the_deadline_for_the_whole_exchange(
    server: AnswerServer, kind: Kind
) -> None:
    """Headers at once, then a byte at a time: httpx's read timeout alone would wait for all of it."""
    server.answer = Answer(200, b'{"status": "success"}' * 100, trickle=1, pause_s=0.1)
    message = await said(kind, server.url, timeout_s=0.5)
    assert f"{kind.name} at {server.url} did not answer within 0.5s" in message


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_huge_answer_is_cut_at_the_cap(server: AnswerServer, kind: Kind) -> None:
    server.answer = Answer(200, b"[" + b" " * (MiB - 1), repeat=20, chunked=True)
    message = await said(kind, server.url, timeout_s=30)
    assert f"{kind.name} at {server.url}: the answer's body is larger than 10 MiB; stopped reading" in message


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_a_server_that_is_not_there_is_unreachable_and_not_online(kind: Kind) -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    assert f"{kind.name} at {gone} is unreachable (cannot connect)" in await said(kind, gone, timeout_s=2)
    assert not await kind.make(gone, 2).is_online()


@pytest.mark.parametrize("kind", KINDS, ids=str)
async def test_credentials_in_the_address_are_never_shown(kind: Kind) -> None:
    port = free_port()
    with pytest.raises((ProviderError, NoData)) as info:
        await kind.make(f"http://user:{SECRET}@127.0.0.1:{port}", 2).query(
            MetricQuery(ObjectKey("test/podinfo"), "check", 60.0, kind.text)
        )
    assert SECRET not in str(info.value) and f"at http://127.0.0.1:{port} is unreachable" in str(info.value)
