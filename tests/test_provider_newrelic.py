"""The New Relic provider against a local server answering as the Insights query API's reference documents.

Reference: https://docs.newrelic.com/docs/apis/insights-apis/query-insights-event-data-api/ (GET
/v1/accounts/<account id>/query?nrql=<URL-encoded NRQL>, the X-Query-Key header, Accept: application/json,
NRQL under 4000 bytes, JSON `results` shaped by the SELECT, 429 and 503 when rate limited). Each answer is
recorded in tests/answers/newrelic/, naming the page it was written from. The reference shows no error
body; the API's `{"error": "..."}` is what the recorded errors carry. Flagger's behaviour:
pkg/metrics/providers/newrelic.go.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.model.metric_template import MetricProviderSpec, SecretRef
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.newrelic import KIND, NewRelicProvider
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

ACCOUNT = "2741658"  # longer than any port: never part of the server's URL
QUERY_KEY = "NRIQ-3f6b1c9e2d7a4b8c0e5f1a2b3c4d5e6f"
PATH = f"/v1/accounts/{ACCOUNT}/query"


def _allowed(headers: Mapping[str, str]) -> bool:
    return headers.get("x-query-key") == QUERY_KEY


@pytest.fixture
def server() -> Iterator[SaaSServer]:
    yield from saas_server(_allowed, recorded("newrelic", "forbidden"))


def provider(server: SaaSServer, *, key: str = QUERY_KEY, timeout_s: float = 5.0) -> NewRelicProvider:
    return NewRelicProvider(ACCOUNT, key, server.url, timeout_s=timeout_s)


SELECT = "SELECT count(*) FROM Transaction WHERE appName = 'podinfo'"


def q(text: str = SELECT, window_s: float = 60.0) -> MetricQuery:
    return MetricQuery(ObjectKey("ingress-nginx/podinfo"), "error rate", window_s, text)


# -- the documented template, as a user pastes it from Flagger's docs (docs/gitbook/usage/metrics.md) ------

DOCUMENTED = """
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: newrelic-error-rate
  namespace: ingress-nginx
spec:
  provider:
    type: newrelic
    secretRef:
      name: newrelic
  query: |
    SELECT
        filter(sum(nginx_ingress_controller_requests), WHERE status >= '500') /
        sum(nginx_ingress_controller_requests) * 100
    FROM Metric
    WHERE metricName = 'nginx_ingress_controller_requests'
    AND ingress = '{{ ingress }}' AND  namespace = '{{ namespace }}'
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: ingress-nginx
spec:
  provider: nginx
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  ingressRef:
    apiVersion: networking.k8s.io/v1
    kind: Ingress
    name: podinfo
  service:
    port: 80
    targetPort: 9898
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
      - name: "error rate"
        templateRef:
          name: newrelic-error-rate
          namespace: ingress-nginx
        thresholdRange:
          max: 5
        interval: 1m
"""

SECRET = f"""
apiVersion: v1
kind: Secret
metadata:
  name: newrelic
  namespace: istio-system
data:
  newrelic_account_id: "{ACCOUNT}"
  newrelic_query_key: {QUERY_KEY}
"""


async def test_the_documented_template_is_rendered_sent_as_documented_and_judged(server: SaaSServer) -> None:
    server.answer(recorded("newrelic", "query_arithmetic"))
    canary, templates = documented(DOCUMENTED)
    async with httpx.AsyncClient() as client:
        (sample,) = await measure(
            KIND, canary, templates, {"newrelic": secret_data(SECRET)}, client, server.url
        )
    assert sample.value == pytest.approx(1.8404907975460123) and not sample.error
    assert JUDGES.create("threshold").verdict([sample]).ok  # 1.84 <= max 5
    seen = server.last
    assert (seen.method, seen.path) == ("GET", PATH)
    assert seen.headers["x-query-key"] == QUERY_KEY
    nrql = seen.param("nrql")
    assert "AND ingress = 'podinfo' AND  namespace = 'ingress-nginx'" in nrql
    assert nrql.startswith(
        "SELECT\n    filter(sum(nginx_ingress_controller_requests), WHERE status >= '500')"
    )
    assert nrql.endswith("namespace = 'ingress-nginx' SINCE 60 seconds ago")  # Flagger: the interval
    assert set(seen.params) == {"nrql"}


async def test_the_request_is_what_the_reference_documents(server: SaaSServer) -> None:
    server.answer(recorded("newrelic", "query_count"))
    assert await provider(server).query(q(window_s=90.5)) == 80275388
    seen = server.last
    assert (seen.method, seen.path) == ("GET", PATH)
    assert seen.params == {"nrql": [f"{SELECT} SINCE 90 seconds ago"]}
    assert seen.headers["x-query-key"] == QUERY_KEY and seen.headers["accept"] == "application/json"


async def test_a_percentile_is_its_one_value(server: SaaSServer) -> None:
    server.answer(recorded("newrelic", "query_percentile"))
    assert await provider(server).query(q("SELECT percentile(duration, 95) FROM Transaction")) == 0.4213


@pytest.mark.parametrize("case", cases("newrelic", "nodata_"))
async def test_no_result_or_a_null_result_is_no_data(server: SaaSServer, case: str) -> None:
    server.answer(recorded("newrelic", case))
    with pytest.raises(NoData) as info:
        await provider(server).query(q())
    assert str(info.value).endswith(f"query: {SELECT} SINCE 60 seconds ago")


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("error_syntax", "New Relic answered HTTP 400: NRQL Syntax Error: Error at line 1 position 8"),
        ("error_rate_limited", "HTTP 429: Rate limit exceeded"),
        ("error_records_inspected", "HTTP 503: Records inspected limit exceeded"),
        ("query_two_functions", "returned 2 results, not one value"),
        ("query_facets", "the query has FACET: one value per facet"),
    ],
)
async def test_an_error_answer_is_a_provider_error_with_new_relics_words(
    server: SaaSServer, case: str, says: str
) -> None:
    server.answer(recorded("newrelic", case))
    message = await failure(provider(server).query(q()))
    assert says in message and message.endswith(f"query: {SELECT} SINCE 60 seconds ago")


async def test_nrql_past_the_documented_size_is_refused_before_sending(server: SaaSServer) -> None:
    long = "SELECT count(*) FROM Transaction WHERE " + " OR ".join(f"appName = 'app-{i}'" for i in range(300))
    with pytest.raises(ProviderError, match=r"the NRQL is \d+ bytes; the Insights API takes less than 4000"):
        await provider(server).query(q(long))
    assert server.requests == []


async def test_refused_credentials_say_so_and_never_show_them(server: SaaSServer) -> None:
    server.answer(recorded("newrelic", "query_count"))
    wrong = "NRIQ-wrong-000000000000000000000000"
    p = provider(server, key=wrong)
    message = await failure(p.query(q()))
    assert "New Relic refused the credentials (HTTP 403: Invalid query key)" in message
    assert "`newrelic_account_id` and `newrelic_query_key`" in message
    assert wrong not in message and wrong not in repr(p) and ACCOUNT not in repr(p)
    assert not await p.is_online()


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"null", "JSON that is not an object"),
        (b'{"metadata": {}}', "without a `results` list"),
        (b'{"results": ["x"]}', "a result that is not an object of values"),
        (b'{"results": [{}]}', "a result that is not an object of values"),
        (b'{"results": [{"min": 1, "max": 2}]}', "several values (min, max), not one"),
        (b'{"results": [{"result": "1.5"}]}', "a result that is not a number ('1.5')"),
        (
            b'{"results": [{"percentiles": {"95": 1, "99": 2}}]}',
            "a percentiles that is not a number (a dict)",
        ),
        (b'{"timeSeries": []}', "the query has TIMESERIES"),
    ],
)
async def test_a_malformed_body_is_a_provider_error_saying_what_is_wrong(
    server: SaaSServer, body: bytes, says: str
) -> None:
    server.answer(recorded("newrelic", "query_count").with_raw(body))
    message = await failure(provider(server).query(q()))
    assert says in message


async def test_online_as_flagger_checks_it_a_query_runs(server: SaaSServer) -> None:
    server.answer(recorded("newrelic", "online"))
    assert await provider(server).is_online()
    assert server.last.params == {"nrql": ["SELECT * FROM Metric SINCE 60 seconds ago"]}
    assert server.last.headers["x-query-key"] == QUERY_KEY
    server.answer(recorded("newrelic", "error_rate_limited"))
    assert not await provider(server).is_online()


# -- what a template needs ---------------------------------------------------------------------------------


def test_the_kind_is_registered_and_says_what_a_template_lacks() -> None:
    kind = sources.kind_of("newrelic")
    assert kind.problems(MetricProviderSpec(type="newrelic", secretRef=SecretRef(name="newrelic"))) == []
    ((field, message),) = kind.problems(MetricProviderSpec(type="newrelic"))
    assert field == "secretRef" and "`newrelic_account_id` and `newrelic_query_key`" in message
    spec = MetricProviderSpec(
        type="newrelic", address="insights-api.eu.newrelic.com", secretRef=SecretRef(name="n")
    )
    ((field, message),) = kind.problems(spec)
    assert field == "address" and "http(s) URL" in message


def test_make_uses_the_secrets_keys_and_the_default_address() -> None:
    spec = MetricProviderSpec(type="newrelic", secretRef=SecretRef(name="newrelic"))
    client = httpx.AsyncClient()
    keys = {"newrelic_account_id": ACCOUNT + "\n", "newrelic_query_key": QUERY_KEY}
    made = KIND.make(SourceContext(spec, "ingress-nginx", keys, client))
    assert isinstance(made, NewRelicProvider) and made.api.address == "https://insights-api.newrelic.com"
    assert made.api.client is client and QUERY_KEY not in repr(made)
    with pytest.raises(ValueError, match="no `newrelic_query_key`"):
        KIND.make(SourceContext(spec, "ingress-nginx", {"newrelic_account_id": ACCOUNT}, client))
    with pytest.raises(ValueError, match="`newrelic_account_id` is not a number") as info:
        KIND.make(SourceContext(spec, "ingress-nginx", {**keys, "newrelic_account_id": "acct-7"}, client))
    assert "acct-7" not in str(info.value)


def test_validate_passes_the_documented_template_and_names_what_a_template_lacks(tmp_path: Path) -> None:
    template = DOCUMENTED.split("---")[0]
    assert validate(tmp_path, template) == []
    lacking = template.replace("    secretRef:\n      name: newrelic\n", "")
    assert_findings(
        tmp_path,
        lacking,
        [
            (
                "spec.provider.secretRef",
                "must name a Secret with `newrelic_account_id` and `newrelic_query_key`",
            )
        ],
    )


@pytest.mark.parametrize("case", cases("newrelic", ""))
async def test_no_recorded_answer_gets_a_credential_into_a_message(server: SaaSServer, case: str) -> None:
    await no_credential_shown(
        server, recorded("newrelic", case), provider(server).query(q()), (QUERY_KEY, ACCOUNT)
    )
