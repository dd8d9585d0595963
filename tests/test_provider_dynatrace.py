"""The Dynatrace provider against a local server answering as the Metrics API v2 reference documents.

Reference: https://docs.dynatrace.com/docs/dynatrace-api/environment-api/metric-v2/get-data-points (GET
/api/v2/metrics/query: `metricSelector`, `resolution`, `from` and `to` in Unix milliseconds; the answer's
`result[].data[]` series with `values`, `totalCount` and `nextPageKey`; ErrorEnvelope `{"error": {"code",
"message", "constraintViolations"}}`), .../metric-v2/get-all-metrics (GET /api/v2/metrics?pageSize=) and
https://docs.dynatrace.com/docs/dynatrace-api/basics/dynatrace-api-authentication (`Authorization: Api-Token
<token>`; 401, and 403 for a token without the scope). Each answer is recorded in tests/answers/dynatrace/,
naming the page it was written from. Flagger's behaviour: pkg/metrics/providers/dynatrace.go.
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
from rheostat.plugins.metrics.dynatrace import KIND, DynatraceProvider
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

TOKEN = "dt0c01.ST2EY72KQINMH574WMNVI7YN.G3DFPBEJYMODIDAEX454M7YWBUVEFOWKPRVMWFASS64NFH52PX6BNDVFFM572RZM"
NOW = 1_765_000_800
SELECTOR = (
    "builtin:service.response.time:filter(eq(dt.entity.service,SERVICE-ABCDEFG0123456789)):percentile(95)"
)


def _allowed(headers: Mapping[str, str]) -> bool:
    return headers.get("authorization") == f"Api-Token {TOKEN}"


@pytest.fixture
def server() -> Iterator[SaaSServer]:
    yield from saas_server(_allowed, recorded("dynatrace", "unauthorized"))


def provider(server: SaaSServer, *, token: str = TOKEN, timeout_s: float = 5.0) -> DynatraceProvider:
    return DynatraceProvider(token, server.url, timeout_s=timeout_s, clock=lambda: NOW + 0.9)


def q(text: str = SELECTOR, window_s: float = 60.0) -> MetricQuery:
    return MetricQuery(ObjectKey("test/podinfo"), "response-time-95pct", window_s, text)


# -- the documented template, as a user pastes it from Flagger's docs (docs/gitbook/usage/metrics.md) ------

DOCUMENTED = """
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: response-time-95pct
  namespace: istio-system
spec:
  provider:
    type: dynatrace
    address: https://xxxxxxxx.live.dynatrace.com
    secretRef:
      name: dynatrace
  query: |
    builtin:service.response.time:filter(eq(dt.entity.service,SERVICE-ABCDEFG0123456789)):percentile(95)
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
      - name: "response-time-95pct"
        templateRef:
          name: response-time-95pct
          namespace: istio-system
        thresholdRange:
          max: 1000
        interval: 1m
"""

SECRET = f"""
apiVersion: v1
kind: Secret
metadata:
  name: dynatrace
  namespace: istio-system
data:
  dynatrace_token: {TOKEN}
"""


async def test_the_documented_template_is_rendered_sent_as_documented_and_judged(server: SaaSServer) -> None:
    server.answer(recorded("dynatrace", "query_one_series"))
    canary, templates = documented(DOCUMENTED)
    async with httpx.AsyncClient() as client:
        (sample,) = await measure(
            KIND, canary, templates, {"dynatrace": secret_data(SECRET)}, client, server.url
        )
    assert sample.value == 412.5 and not sample.error
    assert JUDGES.create("threshold").verdict([sample]).ok  # 412.5 ms <= max 1000
    seen = server.last
    assert (seen.method, seen.path) == ("GET", "/api/v2/metrics/query")
    assert seen.headers["authorization"] == f"Api-Token {TOKEN}"
    assert seen.param("metricSelector") == SELECTOR  # the YAML block's trailing newline dropped
    assert seen.param("resolution") == "Inf"
    assert int(seen.param("to")) - int(seen.param("from")) == 600_000  # Flagger: ten intervals, in ms
    assert set(seen.params) == {"metricSelector", "resolution", "from", "to"}


async def test_the_request_is_what_the_reference_documents(server: SaaSServer) -> None:
    server.answer(recorded("dynatrace", "query_one_series"))
    assert await provider(server).query(q(window_s=30.0)) == 412.5
    seen = server.last
    assert (seen.method, seen.path) == ("GET", "/api/v2/metrics/query")
    assert seen.params == {
        "metricSelector": [SELECTOR],
        "resolution": ["Inf"],
        "from": [str(NOW * 1000 - 300_000)],
        "to": [str(NOW * 1000)],
    }
    assert seen.headers["authorization"] == f"Api-Token {TOKEN}"
    assert seen.headers["accept"] == "application/json"


@pytest.mark.parametrize("case", cases("dynatrace", "nodata_"))
async def test_no_metric_no_series_or_a_null_value_is_no_data(server: SaaSServer, case: str) -> None:
    server.answer(recorded("dynatrace", case))
    with pytest.raises(NoData) as info:
        await provider(server).query(q())
    assert str(info.value).endswith(f"query: {SELECTOR}")


@pytest.mark.parametrize(
    ("case", "says"),
    [
        (
            "error_bad_selector",
            "Dynatrace answered HTTP 400: Constraints violated.; The metric selector is malformed: unexpected",
        ),
        (
            "error_not_found",
            "HTTP 404: Metric selector: metric key 'builtin:service.respones.time' not found.",
        ),
        ("error_server", "HTTP 500: Internal server error."),
        (
            "query_several_series",
            "returned 2 series ({dt.entity.service=SERVICE-ABCDEFG0123456789}, "
            "{dt.entity.service=SERVICE-0000000000000001}), not one value; aggregate it",
        ),
        ("query_next_page", "returned 150 series ({dt.entity.service=SERVICE-0000000000000001}, ...)"),
        ("query_two_metrics", "selected 2 metrics, not one value"),
    ],
)
async def test_an_error_answer_is_a_provider_error_with_dynatraces_words(
    server: SaaSServer, case: str, says: str
) -> None:
    server.answer(recorded("dynatrace", case))
    message = await failure(provider(server).query(q()))
    assert says in message and message.endswith(f"query: {SELECTOR}")


async def test_a_long_error_message_is_cut_short(server: SaaSServer) -> None:
    long = {
        "error": {"code": 400, "message": "m" * 5000, "constraintViolations": [{"message": "v" * 5000}] * 9}
    }
    server.answer(recorded("dynatrace", "error_bad_selector").with_body(long))
    message = await failure(provider(server).query(q()))
    assert len(message) < 700 and "mmm..." in message


@pytest.mark.parametrize(
    ("token", "case", "says"),
    [
        (
            "dt0c01.WRONG.TOKEN0000000000000000000000",
            "query_one_series",
            "HTTP 401: Token Authentication failed",
        ),
        (
            TOKEN,
            "forbidden_scope",
            "HTTP 403: Token is missing required scope. Use one of: metrics.read (Read metrics)",
        ),
    ],
)
async def test_refused_credentials_say_so_and_never_show_them(
    server: SaaSServer, token: str, case: str, says: str
) -> None:
    server.answer(recorded("dynatrace", case))
    p = provider(server, token=token)
    message = await failure(p.query(q()))
    assert f"Dynatrace refused the credentials ({says})" in message and "check `dynatrace_token`" in message
    assert token not in message and token not in repr(p)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"totalCount": 1}', "without a `result` list"),
        (b'{"result": [{"metricId": "m"}]}', "a metric without a `data` list"),
        (b'{"result": [{"data": [{"values": 412.5}]}]}', "a series without a `values` list"),
        (b'{"result": [{"data": [{"values": ["412.5"]}]}]}', "not a number ('412.5')"),
        (b'{"result": [{"data": [{"values": [1e999]}]}]}', "returned +Inf, not a number"),
    ],
)
async def test_a_malformed_body_is_a_provider_error_saying_what_is_wrong(
    server: SaaSServer, body: bytes, says: str
) -> None:
    server.answer(recorded("dynatrace", "query_one_series").with_raw(body))
    message = await failure(provider(server).query(q()))
    assert says in message


async def test_online_as_flagger_checks_it_one_metric_is_listed(server: SaaSServer) -> None:
    server.answer(recorded("dynatrace", "list_one"))
    assert await provider(server).is_online()
    seen = server.last
    assert (seen.path, seen.params) == ("/api/v2/metrics", {"pageSize": ["1"]})
    assert seen.headers["authorization"] == f"Api-Token {TOKEN}"
    assert not await provider(server, token="dt0c01.NOT.THIS").is_online()


# -- what a template needs ---------------------------------------------------------------------------------


def test_the_kind_is_registered_and_says_what_a_template_lacks() -> None:
    kind = sources.kind_of("dynatrace")
    ok = MetricProviderSpec(
        type="dynatrace", address="https://abc123.live.dynatrace.com", secretRef=SecretRef(name="d")
    )
    assert kind.problems(ok) == []
    managed = ok.model_copy(
        update={"address": "https://dynatrace.example.com/e/0f3a9c7e-1111-2222-3333-444455556666"}
    )
    assert kind.problems(managed) == []
    problems = dict(kind.problems(MetricProviderSpec(type="dynatrace")))
    assert set(problems) == {"address", "secretRef"}
    assert "environment's URL" in problems["address"] and "`dynatrace_token`" in problems["secretRef"]


def test_make_needs_the_address_and_the_secrets_token() -> None:
    spec = MetricProviderSpec(
        type="dynatrace", address="https://abc123.live.dynatrace.com/", secretRef=SecretRef(name="d")
    )
    client = httpx.AsyncClient()
    made = KIND.make(SourceContext(spec, "istio-system", {"dynatrace_token": TOKEN}, client))
    assert isinstance(made, DynatraceProvider) and made.api.address == "https://abc123.live.dynatrace.com"
    assert made.api.client is client and TOKEN not in repr(made)
    with pytest.raises(ValueError, match="no `dynatrace_token`"):
        KIND.make(SourceContext(spec, "istio-system", {"token": TOKEN}, client))
    with pytest.raises(ValueError, match=r"provider\.address is not set"):
        KIND.make(SourceContext(spec.model_copy(update={"address": None}), "istio-system", {}, client))


def test_validate_passes_the_documented_template_and_names_what_a_template_lacks(tmp_path: Path) -> None:
    template = DOCUMENTED.split("---")[0]
    assert validate(tmp_path, template) == []
    lacking = template.replace(
        "    address: https://xxxxxxxx.live.dynatrace.com\n    secretRef:\n      name: dynatrace\n", ""
    )
    assert_findings(
        tmp_path,
        lacking,
        [
            ("spec.provider.address", "must be set to the environment's URL"),
            ("spec.provider.secretRef", "must name a Secret with `dynatrace_token`"),
        ],
    )


@pytest.mark.parametrize("case", cases("dynatrace", ""))
async def test_no_recorded_answer_gets_a_credential_into_a_message(server: SaaSServer, case: str) -> None:
    await no_credential_shown(server, recorded("dynatrace", case), provider(server).query(q()), (TOKEN,))
