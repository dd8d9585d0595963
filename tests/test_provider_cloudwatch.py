"""The CloudWatch provider against a loopback server answering as CloudWatch's API reference documents
(tests/answers/cloudwatch/), which checks every request's SigV4 signature with its own implementation of AWS's
documented algorithm, from the test's key."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.cloudwatch import AwsCredentials, CloudWatchProvider, endpoint
from rheostat.rollout.types import Phase
from tests.answers.replay import Recorded, ReplayServer, Request, load, rendered, replaying
from tests.rig import NS, Rig, canary, workload

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLESESSIONTOKEN"
ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    "AWS_SESSION_TOKEN": SESSION_TOKEN,
}
NOW = 1764986430.0  # 2025-12-06T02:00:30Z

# Flagger's documented template (docs/gitbook/usage/metrics.md, "Amazon CloudWatch"), as a user pastes it;
# the docs say `flagger.app/v1alpha1`, a version Flagger's CRD no longer serves: v1beta1 here.
DOCUMENTED = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: cloudwatch-error-rate
spec:
  provider:
    type: cloudwatch
    region: ap-northeast-1 # specify the region of your metrics
  query: |
    [
        {
            "Id": "e1",
            "Expression": "m1 / m2",
            "Label": "ErrorRate"
        },
        {
            "Id": "m1",
            "MetricStat": {
                "Metric": {
                    "Namespace": "MyKubernetesCluster",
                    "MetricName": "ErrorCount",
                    "Dimensions": [
                        {
                            "Name": "appName",
                            "Value": "{{ name }}.{{ namespace }}"
                        }
                    ]
                },
                "Period": 60,
                "Stat": "Sum",
                "Unit": "Count"
            },
            "ReturnData": false
        },
        {
            "Id": "m2",
            "MetricStat": {
                "Metric": {
                    "Namespace": "MyKubernetesCluster",
                    "MetricName": "RequestCount",
                    "Dimensions": [
                        {
                            "Name": "appName",
                            "Value": "{{ name }}.{{ namespace }}"
                        }
                    ]
                },
                "Period": 60,
                "Stat": "Sum",
                "Unit": "Count"
            },
            "ReturnData": false
        }
    ]
"""
ONE = '[{"Id": "m1", "MetricStat": {"Metric": {"Namespace": "N", "MetricName": "RequestCount"}, "Period": 60, "Stat": "Sum"}}]'


# -- SigV4 as AWS documents it, written apart from the provider's library ---------------------------------


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def expected_signature(req: Request, secret_key: str) -> str:
    """Recompute the signature of a received request from its Authorization header's scope and signed
    headers (AWS's "Create a signed AWS API request": canonical request, string to sign, derived key)."""
    auth = req.headers["authorization"]
    m = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
        r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})",
        auth,
    )
    assert m, auth
    _, date, region, service, signed, _ = m.groups()
    query = "&".join(f"{k}={v}" for k, v in sorted(req.query.items()))
    headers = "".join(f"{h}:{' '.join(req.headers[h].split())}\n" for h in signed.split(";"))
    canonical = "\n".join(
        [req.method, req.path, query, headers, signed, hashlib.sha256(req.body).hexdigest()]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", req.headers["x-amz-date"], scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_the_tests_signature_check_matches_aws_documented_example() -> None:
    """AWS's worked example (IAM ListUsers, 2015-08-30): the test's checker is right before it judges."""
    req = Request(
        "GET",
        "/",
        {"Action": "ListUsers", "Version": "2010-05-08"},
        {
            "content-type": "application/x-www-form-urlencoded; charset=utf-8",
            "host": "iam.amazonaws.com",
            "x-amz-date": "20150830T123600Z",
            "authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
            "SignedHeaders=content-type;host;x-amz-date, Signature=" + "0" * 64,
        },
        b"",
    )
    assert (
        expected_signature(req, SECRET_KEY)
        == "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    )


# -- the server --------------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    for s in replaying():

        def verify(req: Request) -> Recorded | None:
            """CloudWatch's own check: a signature that does not verify answers as documented."""
            sent = req.headers.get("authorization", "").rpartition("Signature=")[2]
            if sent != expected_signature(req, SECRET_KEY):
                return load("cloudwatch", "bad-signature")
            return None

        s.respond = verify
        yield s


def provider(server: ReplayServer, **kw: object) -> CloudWatchProvider:
    creds = AwsCredentials(ACCESS_KEY, str(kw.pop("secret", SECRET_KEY)), SESSION_TOKEN)
    return CloudWatchProvider("ap-northeast-1", creds, address=server.url, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


async def test_the_documented_template_is_a_signed_get_metric_data_and_its_newest_point(
    server: ReplayServer,
) -> None:
    template, query, window = rendered(DOCUMENTED, name="podinfo", namespace="test")
    server.answer = load("cloudwatch", "good")
    kind = sources.kind_of("cloudwatch")
    assert kind.problems(template.spec.provider) == []
    spec = template.spec.provider.model_copy(update={"address": server.url})
    async with httpx.AsyncClient() as client:
        made = kind.make(sources.SourceContext(spec, "test", None, client, environ=ENV))
        value = await made.query(MetricQuery(ObjectKey("test/podinfo"), "app error rate", window, query))
    assert value == 0.0123  # the newest point (ScanBy TimestampDescending: first)

    (req,) = server.requests
    # The request as the API reference documents it: POST / in AWS JSON 1.0, the operation in X-Amz-Target.
    assert (req.method, req.path, req.query) == ("POST", "/", {})
    assert req.headers["content-type"] == "application/x-amz-json-1.0"
    assert req.headers["x-amz-target"] == "GraniteServiceVersion20100801.GetMetricData"
    body = req.json()
    assert body["MetricDataQueries"] == json.loads(query)
    assert body["MetricDataQueries"][1]["MetricStat"]["Metric"]["Dimensions"] == [
        {"Name": "appName", "Value": "podinfo.test"}
    ]
    assert body["EndTime"] - body["StartTime"] == 10 * 60  # Flagger's: the last 10 intervals
    assert body["MaxDatapoints"] == 20 and body["ScanBy"] == "TimestampDescending"
    # SigV4: the scope names the key, the day, the region and CloudWatch's signing name; it verifies.
    auth = req.headers["authorization"]
    day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    assert auth.startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{day}/ap-northeast-1/monitoring/aws4_request, "
    )
    signed = re.search(r"SignedHeaders=([^,]+)", auth)
    assert signed and {"content-type", "host", "x-amz-date", "x-amz-security-token", "x-amz-target"} <= set(
        signed.group(1).split(";")
    )
    assert req.headers["x-amz-security-token"] == SESSION_TOKEN
    assert auth.rpartition("Signature=")[2] == expected_signature(req, SECRET_KEY)


async def test_no_points_is_no_data(server: ReplayServer) -> None:
    server.answer = load("cloudwatch", "no-data")
    with pytest.raises(NoData, match="no data points"):
        await provider(server).value(ONE, 60)
    server.answer = Recorded(200, b'{"MetricDataResults": [], "Messages": []}')
    with pytest.raises(NoData, match="no result"):
        await provider(server).value(ONE, 60)


async def test_partial_data_is_paged_with_next_token(server: ReplayServer) -> None:
    server.routes = {}
    pages = iter([load("cloudwatch", "partial-first-page"), load("cloudwatch", "partial-second-page")])
    verify = server.respond
    assert verify is not None
    server.respond = lambda req: verify(req) or next(pages)
    assert await provider(server).value(ONE, 60) == 42.0
    first, second = server.requests
    assert "NextToken" not in first.json() and second.json()["NextToken"] == "page-2-token"
    assert second.json()["MetricDataQueries"] == first.json()["MetricDataQueries"]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("invalid-parameter", "HTTP 400: InvalidParameterValueException: The value m3 for parameter"),
        ("throttled", "HTTP 400: ThrottlingException: Rate exceeded"),
        ("internal-failure", "HTTP 500: InternalFailure: The request processing has failed"),
        ("result-forbidden", "returned Forbidden for m1 (Forbidden: Insufficient permissions"),
    ],
)
async def test_error_answers_are_provider_errors_with_aws_reason(
    server: ReplayServer, case: str, reason: str
) -> None:
    server.answer = load("cloudwatch", case)
    with pytest.raises(ProviderError) as info:
        await provider(server).value(ONE, 60)
    assert reason in str(info.value) and "query: [{" in str(info.value)


async def test_bad_credentials_are_refused_and_never_shown(server: ReplayServer) -> None:
    wrong = "not-the-secret-key-0123456789"
    p = provider(server, secret=wrong)
    with pytest.raises(ProviderError) as info:
        await p.value(ONE, 60)  # the server's check of the signature fails: 403 as documented
    text = str(info.value)
    assert "HTTP 403: InvalidSignatureException: The request signature we calculated" in text
    assert wrong not in text and SECRET_KEY not in text and SESSION_TOKEN not in text
    assert wrong not in repr(p) and SESSION_TOKEN not in repr(p.credentials)
    assert not await p.is_online()  # 403: not allowed to call GetMetricData
    server.respond = None
    server.answer = load("cloudwatch", "unknown-key")
    with pytest.raises(ProviderError, match="HTTP 403: UnrecognizedClientException"):
        await provider(server).value(ONE, 60)


async def test_is_online_as_flagger_an_empty_query_answers_400() -> None:
    for s in replaying():
        s.answer = load("cloudwatch", "invalid-parameter")
        assert await provider(s).is_online()
        s.answer = load("cloudwatch", "unknown-key")
        assert not await provider(s).is_online()


async def test_the_timeout_covers_the_whole_request(server: ReplayServer) -> None:
    server.answer = load("cloudwatch", "good", pause_s=2.0)
    with pytest.raises(ProviderError, match=r"did not answer within 0.3s"):
        await provider(server, timeout_s=0.3).value(ONE, 60)
    server.answer = load("cloudwatch", "good", trickle=2, pause_s=0.05)  # headers at once, then a trickle
    with pytest.raises(ProviderError, match=r"did not answer within 0.5s"):
        await provider(server, timeout_s=0.5).value(ONE, 60)
    # two pages, each in time, together not: one deadline covers every page (wide margins: CI is loaded)
    pages = iter(
        [load("cloudwatch", "partial-first-page", pause_s=0.7), load("cloudwatch", "good", pause_s=0.7)]
    )
    server.respond = lambda req: next(pages)
    with pytest.raises(ProviderError, match=r"did not answer within 1.2s"):
        await provider(server, timeout_s=1.2).value(ONE, 60)
    assert len(server.requests) == 4


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"MetricDataResults": {"Id": "e1"}}', "without a MetricDataResults list"),
        (b'{"MetricDataResults": [{"Id": "e1", "Values": ["1"]}]}', "Values that are not numbers"),
        (
            b'{"MetricDataResults": [{"Id": "e1", "Values": [1]}, {"Id": "e2", "Values": [2]}]}',
            '2 results (e1, e2), not one; set "ReturnData": false',
        ),
    ],
)
async def test_a_malformed_answer_says_what_is_wrong(server: ReplayServer, body: bytes, reason: str) -> None:
    server.respond = None
    server.answer = Recorded(200, body)
    with pytest.raises(ProviderError) as info:
        await provider(server).value(ONE, 60)
    assert reason in str(info.value)


async def test_a_query_that_is_not_metric_data_queries_is_refused_before_any_request(
    server: ReplayServer,
) -> None:
    for text, reason in [
        ("up", "not JSON"),
        ('{"Id": "m1"}', "non-empty JSON array"),
        ('[{"Expression": "1"}]', "`Id`"),
    ]:
        with pytest.raises(ProviderError, match=reason):
            await provider(server).value(text, 60)
    assert server.requests == []


def test_the_kind_names_what_a_template_lacks_and_credentials_come_from_the_environment() -> None:
    kind = sources.kind_of("cloudwatch")
    (template, *_) = rendered(DOCUMENTED)
    spec = template.spec.provider
    assert kind.problems(spec.model_copy(update={"region": None})) == [
        ("region", "CloudWatch needs the region of the metrics (e.g. eu-west-1)")
    ]
    assert [f for f, _ in kind.problems(spec.model_copy(update={"address": "vpce-1"}))] == ["address"]
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        kind.make(sources.SourceContext(spec, "test", None, client, environ={}))
    made = kind.make(sources.SourceContext(spec, "test", None, client, environ=ENV))
    assert isinstance(made, CloudWatchProvider)
    assert made.api.address == "https://monitoring.ap-northeast-1.amazonaws.com"
    assert SECRET_KEY not in repr(made) and ACCESS_KEY not in repr(made.credentials)
    assert endpoint("cn-north-1") == "https://monitoring.cn-north-1.amazonaws.com.cn"


# -- a canary judged by a CloudWatch template, end to end --------------------------------------------------


@pytest.mark.e2e
async def test_a_canary_is_promoted_then_rolled_back_on_a_cloudwatch_template(
    server: ReplayServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():  # the controller's environment, where the SDKs read credentials
        monkeypatch.setenv(name, value)
    rig = Rig(tmp_path)
    template = DOCUMENTED.replace(
        "region: ap-northeast-1 # specify the region of your metrics",
        f'region: ap-northeast-1\n    address: "{server.url}"',
    ).replace("name: cloudwatch-error-rate\n", f"name: cloudwatch-error-rate\n  namespace: {NS}\n")
    analysis = """
interval: 1s
threshold: 2
stepWeight: 25
maxWeight: 50
metrics:
- name: app error rate
  templateRef: {name: cloudwatch-error-rate}
  thresholdRange: {max: 0.1}
  interval: 1m
"""
    rig.commit(workload("6.0.0"), canary(rig.port, analysis), template, message="6.0.0")
    try:
        server.answer = load("cloudwatch", "good")
        await rig.start()
        await rig.wait(Phase.INITIALIZED)
        tick = rig.status().tick
        rig.commit(workload("6.0.1"), canary(rig.port, analysis), template, message="6.0.1")
        await rig.wait(Phase.SUCCEEDED, after_tick=tick, timeout=60)
        assert server.requests
        sent = server.requests[-1].json()["MetricDataQueries"][1]["MetricStat"]["Metric"]["Dimensions"]
        assert sent == [{"Name": "appName", "Value": f"web.{NS}"}]

        bad = load("cloudwatch", "good")
        bad.body = bad.body.replace(b"0.0123", b"0.25")
        server.answer = bad
        tick = rig.status().tick
        rig.commit(workload("6.0.2"), canary(rig.port, analysis), template, message="6.0.2")
        st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=60)
        assert "app error rate" in st.message and "0.25" in st.message
        assert SECRET_KEY not in " ".join(rig.events())
    finally:
        await rig.stop()
