"""The Splunk Observability provider against a loopback server answering as SignalFlow's API reference documents
(tests/answers/splunk/): `POST /v2/signalflow/execute` answering a server-sent-event stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rheostat.model.base import ObjectKey
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.splunk import EventStream, SplunkProvider, endpoints
from rheostat.rollout.types import Phase
from tests.answers.replay import Recorded, ReplayServer, Request, load, rendered, replaying
from tests.rig import NS, Rig, canary, workload

TOKEN = "sfx-test-token-0123456789"
NOW = 1764986430.0
PROGRAM = "data('cpu.utilization').mean().publish()"

# Flagger's documented template (docs/gitbook/usage/metrics.md, "Splunk"), as a user pastes it.
DOCUMENTED = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: success-rate
  namespace: istio-system
spec:
  provider:
    type: splunk
    address: https://api.<REALM>.signalfx.com
    secretRef:
      name: splunk
  query: |
    total = data('traces.count', filter=filter('sf_service', '{{target}}')).sum().publish(enable=False)
    success = data('traces.count', filter=filter('sf_service', '{{target}}') and filter('sf_error', 'false')).sum().publish(enable=False)
    ((success/total) * 100).publish()
"""


@pytest.fixture
def server() -> Iterator[ReplayServer]:
    for s in replaying():

        def check_token(req: Request) -> Recorded | None:
            return None if req.headers.get("x-sf-token") == TOKEN else load("splunk", "unauthorized")

        s.respond = check_token
        yield s


def provider(server: ReplayServer, token: str = TOKEN, **kw: object) -> SplunkProvider:
    return SplunkProvider(server.url, token, clock=lambda: NOW, **kw)  # type: ignore[arg-type]


async def test_the_documented_template_runs_signalflow_and_takes_the_last_value(server: ReplayServer) -> None:
    template, program, window = rendered(DOCUMENTED, name="podinfo", namespace="test")
    assert "filter('sf_service', 'podinfo')" in program
    kind = sources.kind_of("splunk")
    assert kind.problems(template.spec.provider) == []
    server.answer = load("splunk", "good")
    spec = template.spec.provider.model_copy(update={"address": server.url})
    async with httpx.AsyncClient() as client:
        made = kind.make(sources.SourceContext(spec, "istio-system", {"sf_token_key": TOKEN}, client))
        value = await made.query(MetricQuery(ObjectKey("test/podinfo"), "success rate", window, program))
    assert value == 99.5  # the last data message's value

    (req,) = server.requests
    # the execute endpoint as documented: the program as text/plain, the token in X-SF-Token, times in ms
    assert (req.method, req.path) == ("POST", "/v2/signalflow/execute")
    assert req.headers["content-type"] == "text/plain" and req.headers["x-sf-token"] == TOKEN
    assert req.body.decode() == program
    assert req.query["immediate"] == "true"
    assert int(req.query["stop"]) - int(req.query["start"]) == 10 * 60 * 1000  # Flagger's: 10 intervals


def test_a_realms_api_address_becomes_its_stream_address_as_flagger_does() -> None:
    assert endpoints("https://api.us1.signalfx.com") == (
        "https://stream.us1.signalfx.com",
        "https://api.us1.signalfx.com",
    )
    assert endpoints("wss://stream.eu0.signalfx.com/") == (
        "https://stream.eu0.signalfx.com",
        "https://api.eu0.signalfx.com",
    )
    assert endpoints("http://127.0.0.1:8080") == ("http://127.0.0.1:8080", "http://127.0.0.1:8080")


@pytest.mark.parametrize("case", ["no-data", "null-values"])
async def test_a_program_that_publishes_no_value_is_no_data(server: ReplayServer, case: str) -> None:
    server.answer = load("splunk", case)
    with pytest.raises(NoData, match="published no values"):
        await provider(server).value(PROGRAM, 60)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("program-error", "SignalFlow refused the program: ANALYTICS_PROGRAM_NAME_ERROR at line 1, column 9"),
        ("aborted", "aborted the computation: Computation exceeded the limit of 5000 input time series"),
        ("bad-request", "HTTP 400: INVALID_PARAMETER: Invalid value for 'start'"),
        ("two-series", "published 2 time series, not one"),
    ],
)
async def test_error_answers_are_provider_errors_with_the_reason(
    server: ReplayServer, case: str, reason: str
) -> None:
    server.answer = load("splunk", case)
    with pytest.raises(ProviderError) as info:
        await provider(server).value(PROGRAM, 60)
    assert reason in str(info.value) and f"query: {PROGRAM}" in str(info.value)


async def test_a_bad_token_is_refused_and_never_shown(server: ReplayServer) -> None:
    server.answer = load("splunk", "good")
    wrong = "not-the-token-9876543210"
    p = provider(server, wrong)
    with pytest.raises(ProviderError) as info:
        await p.value(PROGRAM, 60)
    assert "HTTP 401: Unauthorized" in str(info.value)
    assert wrong not in str(info.value) and wrong not in repr(p)
    assert not await p.is_online()


async def test_is_online_as_flagger_lists_one_metric_on_the_api_endpoint(server: ReplayServer) -> None:
    server.answer = load("splunk", "metric-list")
    assert await provider(server).is_online()
    req = server.requests[-1]
    assert (req.method, req.path, req.query) == ("GET", "/v2/metric", {"limit": "1"})
    assert req.headers["x-sf-token"] == TOKEN


async def test_the_timeout_covers_the_whole_stream(server: ReplayServer) -> None:
    server.answer = load("splunk", "good", pause_s=2.0)
    with pytest.raises(ProviderError, match=r"did not finish within 0.3s"):
        await provider(server, timeout_s=0.3).value(PROGRAM, 60)
    server.answer = load("splunk", "good", trickle=20, pause_s=0.05)  # a stream that never gets to its end
    with pytest.raises(ProviderError, match=r"did not finish within 0.5s"):
        await provider(server, timeout_s=0.5).value(PROGRAM, 60)


def _data(value: object) -> str:
    return f'event: data\ndata: {{"data": [{{"tsId": "A", "value": {json.dumps(value)}}}], "logicalTimestampMs": 1}}\n\n'


END = 'event: control-message\ndata: {"event": "END_OF_CHANNEL", "timestampMs": 2}\n\n'


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("event: data\ndata: {oops\n\n" + END, "a data message that is not JSON: '{oops'"),
        ("event: data\ndata: [1]\n\n" + END, "a data message that is not an object"),
        ('event: data\ndata: {"data": {"A": 1}}\n\n' + END, "a data message without a data list"),
        ('event: data\ndata: {"data": [{"value": 1}]}\n\n' + END, "a data point without a tsId"),
        (_data("12") + END, "a value that is not a number"),
        (_data(1.0), "ended the stream before END_OF_CHANNEL"),
        ("<html>gateway</html>", "ended the stream before END_OF_CHANNEL"),
    ],
)
async def test_a_malformed_stream_says_what_is_wrong(server: ReplayServer, body: str, reason: str) -> None:
    server.answer = Recorded(200, body.encode(), "text/event-stream")
    with pytest.raises(ProviderError) as info:
        await provider(server).value(PROGRAM, 60)
    assert reason in str(info.value)


def test_the_event_stream_parser_follows_the_format() -> None:
    """Events split anywhere, CRLF or CR line ends, comments, multi-line data, a space after the colon."""
    stream = (
        b': keep-alive\r\nevent: data\r\ndata: {"a":\r\ndata:1}\r\n\r\n'
        b"event:control-message\rdata:{}\r\r"
        b"data: no event name\n\n"
        b"event: half"
    )
    parser = EventStream()
    got = [e for i in range(len(stream)) for e in parser.feed(stream[i : i + 1])]
    assert got == [("data", '{"a":\n1}'), ("control-message", "{}"), ("message", "no event name")]


def test_the_kind_names_what_a_template_lacks() -> None:
    kind = sources.kind_of("splunk")
    (template, *_) = rendered(DOCUMENTED)
    spec = template.spec.provider
    assert [f for f, _ in kind.problems(spec.model_copy(update={"address": None, "secretRef": None}))] == [
        "address",
        "secretRef",
    ]
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="no `sf_token_key`"):
        kind.make(sources.SourceContext(spec, "istio-system", {"token": TOKEN}, client))
    made = kind.make(sources.SourceContext(spec, "istio-system", {"splunk_token": TOKEN}, client))
    assert isinstance(made, SplunkProvider) and TOKEN not in repr(made)
    assert made.api.address == "https://stream.<REALM>.signalfx.com"


# -- a canary judged by a Splunk template, end to end ------------------------------------------------------


def _stream(value: float) -> bytes:
    """The good answer's stream with another last value."""
    return load("splunk", "good").body.replace(b'"value": 99.5', f'"value": {value}'.encode())


@pytest.mark.e2e
async def test_a_canary_is_promoted_then_rolled_back_on_a_splunk_template(
    server: ReplayServer, tmp_path: Path
) -> None:
    rig = Rig(tmp_path)
    secret = rig.data / "secrets" / NS / "splunk.yaml"
    secret.parent.mkdir(parents=True)
    secret.write_text(f"sf_token_key: {TOKEN}\n")
    template = DOCUMENTED.replace("https://api.<REALM>.signalfx.com", server.url).replace(
        "namespace: istio-system", f"namespace: {NS}"
    )
    analysis = """
interval: 1s
threshold: 2
stepWeight: 25
maxWeight: 50
metrics:
- name: success rate
  templateRef: {name: success-rate}
  thresholdRange: {min: 99}
  interval: 1m
"""
    server.answer = Recorded(200, _stream(99.5), "text/event-stream")
    rig.commit(workload("6.0.0"), canary(rig.port, analysis), template, message="6.0.0")
    try:
        await rig.start()
        await rig.wait(Phase.INITIALIZED)
        tick = rig.status().tick
        rig.commit(workload("6.0.1"), canary(rig.port, analysis), template, message="6.0.1")
        await rig.wait(Phase.SUCCEEDED, after_tick=tick, timeout=60)
        executed = [r for r in server.requests if r.path == "/v2/signalflow/execute"]
        assert executed and all("filter('sf_service', 'web')" in r.body.decode() for r in executed)

        server.answer = Recorded(200, _stream(87.5), "text/event-stream")
        tick = rig.status().tick
        rig.commit(workload("6.0.2"), canary(rig.port, analysis), template, message="6.0.2")
        st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=60)
        assert "success rate" in st.message and "87.5" in st.message
        assert TOKEN not in " ".join(rig.events())
    finally:
        await rig.stop()
