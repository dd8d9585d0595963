"""The Datadog provider against a local server answering as Datadog's API reference documents.

Reference: https://docs.datadoghq.com/api/latest/metrics/query-timeseries-points/ (GET /api/v1/query: `from`,
`to` in Unix seconds, `query`; DD-API-KEY and DD-APPLICATION-KEY headers; the series' `pointlist` of
[milliseconds, value]; 400/403/429 as `{"errors": [...]}`) and
https://docs.datadoghq.com/api/latest/authentication/ (GET /api/v1/validate). Each answer is recorded in
tests/answers/datadog/, naming the page it was written from. Flagger's behaviour: pkg/metrics/providers/datadog.go.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.model.metric_template import MetricProviderSpec, SecretRef
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData
from rheostat.plugins.metrics.datadog import KIND, DatadogProvider
from rheostat.plugins.metrics.sources import SourceContext
from rheostat.rollout.judges import JUDGES
from tests.saas_server import (
    SaaSServer,
    assert_findings,
    cases,
    documented,
    failure,
    measure,
    no_credential_shown,
    recorded,
    saas_server,
    secret_data,
    validate,
)

API_KEY = "dd-api-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
APP_KEY = "dd-app-0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3"
NOW = 1_765_000_800


def _allowed(headers: Mapping[str, str]) -> bool:
    return headers.get("dd-api-key") == API_KEY and headers.get("dd-application-key") == APP_KEY


@pytest.fixture
def server() -> Iterator[SaaSServer]:
    yield from saas_server(_allowed, recorded("datadog", "forbidden"))


def provider(server: SaaSServer, *, api_key: str = API_KEY, timeout_s: float = 5.0) -> DatadogProvider:
    return DatadogProvider(api_key, APP_KEY, server.url, timeout_s=timeout_s, clock=lambda: NOW + 0.7)


def q(text: str = "sum:istio.mesh.request.count{*}.as_count()", window_s: float = 60.0) -> MetricQuery:
    return MetricQuery(ObjectKey("test/podinfo"), "404s percentage", window_s, text)


# -- the documented template, as a user pastes it from Flagger's docs (docs/gitbook/usage/metrics.md) ------

DOCUMENTED = """
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: istio-system
spec:
  provider:
    type: datadog
    address: https://api.datadoghq.com
    secretRef:
      name: datadog
  query: |
    100 - (
      sum:istio.mesh.request.count{
        reporter:destination,
        destination_workload_namespace:{{ namespace }},
        destination_workload:{{ target }},
        !response_code:404
      }.as_count()
      /
      sum:istio.mesh.request.count{
        reporter:destination,
        destination_workload_namespace:{{ namespace }},
        destination_workload:{{ target }}
      }.as_count()
    ) * 100
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  service:
    port: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: "404s percentage"
        templateRef:
          name: not-found-percentage
          namespace: istio-system
        thresholdRange:
          max: 5
        interval: 1m
"""

SECRET = f"""
apiVersion: v1
kind: Secret
metadata:
  name: datadog
  namespace: istio-system
data:
  datadog_api_key: {API_KEY}
  datadog_application_key: {APP_KEY}
"""


async def test_the_documented_template_is_rendered_sent_as_documented_and_judged(server: SaaSServer) -> None:
    server.answer(recorded("datadog", "query_one_series"))
    canary, templates = documented(DOCUMENTED)
    async with httpx.AsyncClient() as client:
        (sample,) = await measure(
            KIND, canary, templates, {"datadog": secret_data(SECRET)}, client, server.url
        )
    assert sample.value == 2.5 and not sample.error  # the first (oldest) point of the series
    assert JUDGES.create("threshold").verdict([sample]).ok  # 2.5 <= max 5
    seen = server.last
    assert seen.method == "GET" and seen.path == "/api/v1/query"
    assert seen.headers["dd-api-key"] == API_KEY and seen.headers["dd-application-key"] == APP_KEY
    query = seen.param("query")
    assert "destination_workload_namespace:test," in query and "destination_workload:podinfo," in query
    assert "{{" not in query and query.startswith("100 - (")
    to, since = int(seen.param("to")), int(seen.param("from"))
    assert to - since == 600  # Flagger: ten intervals of 1m back, in Unix seconds
    assert set(seen.params) == {"query", "from", "to"}


async def test_the_request_is_what_the_reference_documents(server: SaaSServer) -> None:
    server.answer(recorded("datadog", "query_one_series"))
    assert await provider(server).query(q(window_s=30.0)) == 2.5
    seen = server.last
    assert (seen.method, seen.path) == ("GET", "/api/v1/query")
    assert seen.params == {
        "from": [str(NOW - 300)],
        "to": [str(NOW)],
        "query": ["sum:istio.mesh.request.count{*}.as_count()"],
    }
    assert seen.headers["dd-api-key"] == API_KEY and seen.headers["dd-application-key"] == APP_KEY
    assert seen.headers["accept"] == "application/json"


async def test_a_leading_empty_bucket_is_skipped_not_read_as_zero(server: SaaSServer) -> None:
    server.answer(recorded("datadog", "query_leading_null"))
    assert await provider(server).query(q()) == 1.25


@pytest.mark.parametrize("case", cases("datadog", "nodata_"))
async def test_no_series_or_no_points_is_no_data(server: SaaSServer, case: str) -> None:
    server.answer(recorded("datadog", case))
    with pytest.raises(NoData, match="query: sum:istio"):
        await provider(server).query(q())


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("error_bad_request", "HTTP 400: Error parsing query: unable to parse"),
        ("error_status_error", "Datadog answered an error: Invalid metric name"),
        ("error_rate_limited", "HTTP 429: Too many requests"),
        ("error_server", "HTTP 502: '<html><body><h1>502 Bad Gateway"),
        ("query_several_series", "returned 2 series (host:a, host:b), not one value; aggregate it"),
    ],
)
async def test_an_error_answer_is_a_provider_error_with_datadogs_words(
    server: SaaSServer, case: str, says: str
) -> None:
    server.answer(recorded("datadog", case))
    message = await failure(provider(server).query(q()))
    assert says in message and message.endswith("query: sum:istio.mesh.request.count{*}.as_count()")


async def test_a_long_error_message_is_cut_short(server: SaaSServer) -> None:
    answer = recorded("datadog", "error_bad_request")
    server.answer(answer.with_body({"errors": ["x" * 5000, "y" * 5000, "z", "w"]}))
    message = await failure(provider(server).query(q()))
    assert len(message) < 700 and "xxx..." in message


async def test_refused_credentials_say_so_and_never_show_them(server: SaaSServer) -> None:
    server.answer(recorded("datadog", "query_one_series"))
    wrong = "dd-api-wrong-0000000000000000000000"
    p = provider(server, api_key=wrong)
    message = await failure(p.query(q()))
    assert "Datadog refused the credentials (HTTP 403: Forbidden)" in message
    assert "`datadog_api_key` and `datadog_application_key`" in message
    assert wrong not in message and APP_KEY not in message and wrong not in repr(p)
    assert not await p.is_online()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"status": "ok"}', "without a `series` list"),
        (b'{"series": {"a": 1}}', "without a `series` list"),
        (b'{"series": ["x"]}', "without a `pointlist` list"),
        (b'{"series": [{"pointlist": [[1, 2, 3]]}]}', "not [time, value]"),
        (b'{"series": [{"pointlist": [[1, "2.5"]]}]}', "not a number ('2.5')"),
        (b'{"series": [{"pointlist": [[1, true]]}]}', "not a number (a bool)"),
        (b'{"series": [{"pointlist": [[1, 1e999]]}]}', "returned +Inf, not a number"),
    ],
)
async def test_a_malformed_body_is_a_provider_error_saying_what_is_wrong(
    server: SaaSServer, body: bytes, says: str
) -> None:
    server.answer(recorded("datadog", "query_one_series").with_raw(body))
    message = await failure(provider(server).query(q()))
    assert says in message


async def test_online_as_flagger_checks_it_the_keys_validate(server: SaaSServer) -> None:
    server.answer(recorded("datadog", "validate_ok"))
    assert await provider(server).is_online()
    seen = server.last
    assert (seen.path, seen.params) == ("/api/v1/validate", {})
    assert seen.headers["dd-api-key"] == API_KEY and seen.headers["dd-application-key"] == APP_KEY
    server.answer(recorded("datadog", "validate_forbidden"))
    assert not await provider(server).is_online()
    gone = DatadogProvider(API_KEY, APP_KEY, "http://127.0.0.1:9", timeout_s=1)
    assert not await gone.is_online()


# -- what a template needs ---------------------------------------------------------------------------------


def test_the_kind_is_registered_and_says_what_a_template_lacks() -> None:
    kind = sources.kind_of("datadog")
    assert kind.problems(MetricProviderSpec(type="datadog", secretRef=SecretRef(name="datadog"))) == []
    assert kind.problems(MetricProviderSpec(type="datadog")) == [
        (
            "secretRef",
            "must name a Secret with `datadog_api_key` and `datadog_application_key`: "
            "the credentials are read from it only",
        )
    ]
    for address, says in (
        ("api.datadoghq.com", "must be an http(s) URL"),
        ("https://api.datadoghq.eu/?site=eu", "must be a base URL without a query"),
        ("https://user:pw@api.datadoghq.com", "must not carry credentials"),
    ):
        spec = MetricProviderSpec(type="datadog", address=address, secretRef=SecretRef(name="d"))
        ((field, message),) = kind.problems(spec)
        assert field == "address" and says in message


def test_make_uses_the_secrets_keys_and_the_default_address() -> None:
    spec = MetricProviderSpec(type="datadog", secretRef=SecretRef(name="datadog"))
    client = httpx.AsyncClient()
    keys = {"datadog_api_key": API_KEY + "\n", "datadog_application_key": APP_KEY}
    made = KIND.make(SourceContext(spec, "istio-system", keys, client))
    assert isinstance(made, DatadogProvider) and made.api.address == "https://api.datadoghq.com"
    assert made.api.client is client and API_KEY not in repr(made)
    with pytest.raises(ValueError, match="no `datadog_application_key`"):
        KIND.make(SourceContext(spec, "istio-system", {"datadog_api_key": API_KEY}, client))
    with pytest.raises(ValueError, match=r"needs provider\.secretRef"):
        KIND.make(SourceContext(spec.model_copy(update={"secretRef": None}), "istio-system", None, client))


def test_validate_passes_the_documented_template_and_names_what_a_template_lacks(tmp_path: Path) -> None:
    template = DOCUMENTED.split("---")[0]
    assert validate(tmp_path, template) == []
    lacking = template.replace("    secretRef:\n      name: datadog\n", "")
    assert_findings(
        tmp_path,
        lacking,
        [
            (
                "spec.provider.secretRef",
                "must name a Secret with `datadog_api_key` and `datadog_application_key`",
            )
        ],
    )


@pytest.mark.parametrize("case", cases("datadog", ""))
async def test_no_recorded_answer_gets_a_credential_into_a_message(server: SaaSServer, case: str) -> None:
    await no_credential_shown(
        server, recorded("datadog", case), provider(server).query(q()), (API_KEY, APP_KEY)
    )
