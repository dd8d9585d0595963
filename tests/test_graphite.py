"""The Graphite provider: against a local server answering as Graphite's render API documents, against a real
Graphite (Debian's carbon-cache and graphite-web, tests/graphite_server.py) with data written by the test,
and end to end: a canary promoted and rolled back on numbers the test writes to carbon.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.model.canary import Canary
from rheostat.model.load import ManifestError, parse_text
from rheostat.model.metric_template import MetricProviderSpec, MetricTemplate
from rheostat.plugins.metrics import sources
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.graphite import Credentials, GraphiteProvider, interval, render_params
from rheostat.rollout.analysis import render_query
from rheostat.rollout.types import Phase
from tests.answering import Answer, AnswerServer, answering
from tests.graphite_server import Graphite, graphite
from tests.rig import KEY, NS, Rig, canary, workload
from tests.servers import free_port

# -- answers as Graphite's render API documents them (a real HTTP server on loopback) --------------------


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    yield from answering()


def series(name: str, *values: object) -> str:
    points = ",".join(f"[{'null' if v is None else v}, {1700000000 + i}]" for i, v in enumerate(values))
    return f'{{"target": "{name}", "tags": {{"name": "{name}"}}, "datapoints": [{points}]}}'


GRAPHITE_500 = """<body style="background-color: #666666; color: black;">
<center><h2><p>Graphite encountered an unexpected error while handling your request.</p></h2>
<div style="width: 70%; text-align: left;"><pre>
Traceback (most recent call last):
  File &quot;/usr/lib/python3/dist-packages/graphite/render/views.py&quot;, line 129, in renderView
ValueError: Invalid offset unit &#x27;m&#x27;
</pre></div></center></body>"""


async def test_the_value_is_the_last_datapoint_that_is_not_null(server: AnswerServer) -> None:
    server.answer = Answer(200, f"[{series('app.ok', 97, 99.5, None, None)}]".encode())
    p = GraphiteProvider(server.url)
    assert await p.value("target=app.ok") == 99.5
    quoted = series("app.ok", 1, '"42.5"', "NaN")
    server.answer = Answer(200, f"[{quoted}]".encode())
    assert await p.value("target=app.ok") == 42.5  # a number in a string (Flagger reads those); NaN is null
    q = MetricQuery(KEY, "success", 60.0, "target=app.ok")
    assert await p.query(q) == 42.5
    with pytest.raises(ProviderError, match="no query; Graphite has no builtin checks"):
        await p.query(MetricQuery(KEY, "request-success-rate", 60.0))


async def test_no_series_or_only_nulls_is_no_data(server: AnswerServer) -> None:
    p = GraphiteProvider(server.url)
    server.answer = Answer(200, b"[]")
    with pytest.raises(NoData, match=r"no series; query: target=nothing\.like\.this"):
        await p.value("target=nothing.like.this")
    server.answer = Answer(200, f"[{series('app.ok', None, None, 'NaN')}]".encode())
    with pytest.raises(NoData, match=r"'app\.ok' has only null datapoints"):
        await p.value("target=app.ok")
    server.answer = Answer(200, f"[{series('app.ok')}]".encode())
    with pytest.raises(NoData):
        await p.value("target=app.ok")
    assert await p.is_online()  # Flagger's check: an answer without values is online


async def test_the_request_is_flaggers_render_call(server: AnswerServer) -> None:
    """GET <address>/render with the template's query string, whitespace runs made one space (a YAML block's
    newlines), `format=json` (replacing the query's own), parameters sorted by name as Go's Encode sorts them;
    basic auth from the secret, and the template's headers."""
    server.answer = Answer(200, f"[{series('x', 1)}]".encode())
    p = GraphiteProvider(
        f"{server.url}/graphite/",
        credentials=Credentials.from_secret({"username": "reader", "password": "s3cr3t"}),
        headers={"X-Org": ["team-a"]},
    )
    query = "target=summarize(\n  sumSeries(app.*.ok),\n  '60s',\n  'avg'\n)&format=png&from=-10min&target=b"
    assert await p.value(query.replace("&target=b", "")) == 1.0
    path, headers = server.served.requests[0]
    url = urlsplit(path)
    assert url.path == "/graphite/render"
    assert url.query == (
        "format=json&from=-10min&target=summarize%28+sumSeries%28app.%2A.ok%29%2C+%2760s%27%2C+%27avg%27+%29"
    )
    assert headers["authorization"] == "Basic " + base64.b64encode(b"reader:s3cr3t").decode()
    assert headers["x-org"] == "team-a"
    # two targets keep their order (and are two series: see the test of several series)
    assert [v for k, v in render_params("target=b&from=-1h&target=a") if k == "target"] == ["b", "a"]
    # no secret named: no Authorization header at all
    await GraphiteProvider(server.url).value("target=x")
    assert "authorization" not in server.served.requests[1][1]


async def test_a_query_without_target_is_an_error_before_any_request(server: AnswerServer) -> None:
    p = GraphiteProvider(server.url)
    with pytest.raises(ProviderError, match=r"no `target=` parameter.*query: sumSeries\(a.b\)"):
        await p.value("sumSeries(a.b)")
    assert not server.served.requests


async def test_bad_credentials_are_a_failed_check_that_never_shows_them(server: AnswerServer) -> None:
    server.answer = Answer(401, b"Authorization Required", content_type="text/plain")
    credentials = Credentials.from_secret({"username": "reader", "password": "hunter2-secret"})
    p = GraphiteProvider(server.url, credentials=credentials)
    with pytest.raises(ProviderError) as info:
        await p.value("target=app.ok")
    assert str(info.value) == "Graphite answered HTTP 401: Authorization Required; query: target=app.ok"
    for shown in (str(info.value), repr(p), repr(credentials)):
        assert "hunter2-secret" not in shown and "reader" not in shown
    assert not await p.is_online()


UNUSABLE = [
    # (status, body, what the failed check says)
    (500, GRAPHITE_500, "HTTP 500: ValueError: Invalid offset unit 'm'"),
    (
        400,
        'Invalid parameters (Received request for unknown function: nosuchfn); targets: "nosuchfn(a.b)"',
        "HTTP 400: Invalid parameters (Received request for unknown function: nosuchfn)",
    ),
    (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "HTTP 502: 502 Bad Gateway"),
    (503, "", "HTTP 503: an empty body"),
    (200, "", "HTTP 200 with an empty body"),
    (200, "<!doctype html><html><title>Graphite Browser</title>", "not JSON: '<!doctype html><html>"),
    (200, '{"target": "x", "datapoints": []}', "JSON that is not a list of series"),
    (200, '[{"target": "x"}]', "a series without `target` and `datapoints`"),
    (200, '[{"name": "x", "datapoints": [[1, 2]]}]', "a series without `target` and `datapoints`"),
    (200, '[{"target": "x", "datapoints": [[1, 2, 3]]}]', "a datapoint that is not [number, time] (a list)"),
    (200, '[{"target": "x", "datapoints": [["lots", 2]]}]', "not [number, time] ('lots')"),
    (200, '[{"target": "x", "datapoints": [[true, 2]]}]', "not [number, time]"),
    (200, '[{"target": "x", "datapoints": [7]}]', "not [number, time] (a int)"),
    (200, f"[{series('x', '1e9999')}]", "returned inf, not a number to judge"),
    (200, f"[{series('x', '-Infinity')}]", "returned -inf, not a number to judge"),
    (200, "[" * 100_000 + "]" * 100_000, "not JSON: '[[[["),
    (200, "[] trailing", "not JSON"),
    (
        200,
        f"[{series('app.a.ok', 1)}, {series('app.b.ok', 2)}]",
        "2 series ('app.a.ok', 'app.b.ok'), not one value; aggregate them",
    ),
]


@pytest.mark.parametrize(("status", "body", "reason"), UNUSABLE)
async def test_every_unusable_answer_is_a_failed_check_with_the_reason(
    server: AnswerServer, status: int, body: str, reason: str
) -> None:
    server.answer = Answer(status, body.encode())
    p = GraphiteProvider(server.url)
    with pytest.raises(ProviderError) as info:
        await p.value("target=app.*.ok")
    assert reason in str(info.value) and str(info.value).endswith("; query: target=app.*.ok")
    assert len(str(info.value)) < 600  # a short, bounded quote of what came back
    # Flagger's online check: the answer is a list of series (whatever their values)
    assert await p.is_online() == ("not a number to judge" in reason or "2 series" in reason)


async def test_a_trickling_answer_is_cut_at_the_timeout_for_the_whole_request(server: AnswerServer) -> None:
    server.answer = Answer(200, f"[{series('x', 1)}]".encode(), trickle=1, pause_s=0.1)
    p = GraphiteProvider(server.url, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(ProviderError, match=r"did not answer within 0.5s; query: target=x"):
        await p.value("target=x")
    assert time.monotonic() - started < 2
    assert server.served.requests and not server.served.done.is_set()  # still trickling when we gave up


async def test_graphite_down_is_a_reason_never_a_value() -> None:
    gone = f"http://127.0.0.1:{free_port()}"
    p = GraphiteProvider(gone, timeout_s=1)
    with pytest.raises(ProviderError, match=rf"Graphite at {gone} is unreachable \(cannot connect\)"):
        await p.value("target=x")
    assert not await p.is_online()


async def test_the_kind_needs_an_http_address_and_both_secret_keys() -> None:
    kind = sources.kind_of("graphite")
    assert kind.name == "graphite" and "graphite" in sources.supported()

    def problems(address: str | None) -> list[tuple[str, str]]:
        return kind.problems(MetricProviderSpec(type="graphite", address=address))

    assert problems("http://graphite.monitoring") == []
    assert problems("https://graphite.example:8443/graphite") == []
    assert problems(None) == [("address", "is required")]
    assert problems("graphite.monitoring:80") == [
        ("address", "must be an http(s) URL, got 'graphite.monitoring:80'")
    ]
    assert problems("ftp://graphite")[0][1].startswith("must be an http(s) URL")
    assert problems("http://g/render?target=x")[0][1].startswith("must be a base URL without a query")

    async with httpx.AsyncClient() as client:

        def make(secret: dict[str, str] | None, address: str | None = "http://g") -> object:
            spec = MetricProviderSpec(type="graphite", address=address)
            return kind.make(sources.SourceContext(spec=spec, namespace="t", secret=secret, client=client))

        with pytest.raises(ValueError, match="no `password`"):
            make({"username": "u"})
        with pytest.raises(ValueError, match=r"provider\.address is required"):
            make(None, None)
        made = make({"username": "u", "password": "p"})
        assert isinstance(made, GraphiteProvider) and made.credentials == Credentials("u", "p")
        assert made.client is client  # the controller's shared client (its insecureSkipVerify setting)
    assert Credentials.from_secret({"username": "", "password": ""}) is None  # Flagger: sent only when set


def test_validate_names_the_address_of_a_graphite_template(tmp_path: Path) -> None:
    """`rheostat validate` asks the kind: a template without an address is an error on that field."""
    template = DOCUMENTED.format(address="http://graphite.monitoring").replace(
        "name: graphite-request-success-rate", "name: graphite-request-success-rate\n  namespace: shop"
    )
    (tmp_path / "template.yaml").write_text(template)
    res = CliRunner().invoke(cli, ["validate", str(tmp_path), "-o", "json"])
    assert res.exit_code == 0 and json.loads(res.output) == []
    (tmp_path / "template.yaml").write_text(template.replace("    address: http://graphite.monitoring\n", ""))
    res = CliRunner().invoke(cli, ["validate", str(tmp_path), "-o", "json"])
    (finding,) = json.loads(res.output)
    assert res.exit_code == 1 and finding["object"] == "MetricTemplate shop/graphite-request-success-rate"
    assert finding["message"] == "spec.provider.address: is required"


# -- a real Graphite: data written over carbon's plaintext protocol --------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graphite]:
    with graphite(tmp_path_factory.mktemp("graphite")) as server:
        yield server


# Flagger's documented Graphite template (docs/gitbook/usage/metrics.md), as a user would paste it.
DOCUMENTED = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: graphite-request-success-rate
spec:
  provider:
    type: graphite
    address: {address}
  query: |
    target=summarize(
      asPercent(
        sumSeries(
          stats.timers.httpServerRequests.app.{{{{target}}}}.exception.*.method.*.outcome.{{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}}.status.*.uri.*.count
        ),
        sumSeries(
          stats.timers.httpServerRequests.app.{{{{target}}}}.exception.*.method.*.outcome.*.status.*.uri.*.count
        )
      ),
      {{{{interval}}}},
      'avg'
    )
"""
# ... and its analysis (the docs' `interval: 1min` is not a duration: Flagger passes it through, we refuse it)
DOCUMENTED_ANALYSIS = """
  analysis:
    metrics:
      - name: "success rate"
        templateRef:
          name: graphite-request-success-rate
        thresholdRange:
          min: 90
        interval: {interval}
"""
APP = "stats.timers.httpServerRequests.app.{app}.exception.None.method.GET.outcome.{outcome}.status.{status}.uri.root.count"


def requests(app: str, ok: float, failed: float, at: float) -> list[tuple[str, float, float]]:
    """One second of an app's request counters, in the metric names of the documented template."""
    return [
        (APP.format(app=app, outcome="SUCCESS", status=200), ok, at),
        (APP.format(app=app, outcome="SERVER_ERROR", status=500), failed, at),
    ]


def documented_canary(interval_text: str) -> Canary:
    text = f"""apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: podinfo, namespace: test}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: podinfo}}
  service: {{port: 9898}}
{DOCUMENTED_ANALYSIS.format(interval=interval_text)}    iterations: 10
"""
    (parsed,) = parse_text(text)
    assert isinstance(parsed, Canary)
    return parsed


async def test_the_documented_template_against_a_real_graphite(real: Graphite) -> None:
    now = time.time()
    real.send(p for i in range(30) for p in requests("podinfo", 9, 1, now - 29 + i))
    real.wait_for(APP.format(app="podinfo", outcome="SERVER_ERROR", status=500), 30)
    (template,) = parse_text(DOCUMENTED.format(address=real.url))
    assert isinstance(template, MetricTemplate)
    assert sources.kind_of("graphite").problems(template.spec.provider) == []
    with pytest.raises(ManifestError, match="interval"):
        documented_canary("1min")
    canary_ = documented_canary("1m")
    metric = canary_.spec.the_analysis.metrics[0]
    provider = GraphiteProvider(real.url)
    # As pasted, Graphite 1.1 refuses it: an unquoted interval is read as a metric path, not a string.
    pasted = render_query(template.spec.query, canary_, metric)
    assert "{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}" in pasted and "podinfo" in pasted
    with pytest.raises(ProviderError, match=r"Graphite answered HTTP 500: ZeroDivisionError"):
        await provider.value(pasted)
    # Quoted, Graphite refuses Go's "1m" (its minutes are "min"): written as Flagger does, the check fails.
    quoted = template.spec.query.replace("{{interval}}", "'{{interval}}'")
    with pytest.raises(ProviderError, match=r"HTTP 500: ValueError: Invalid offset unit 'm'"):
        await provider.value(render_query(quoted, canary_, metric))
    # Rheostat writes {{ interval }} for Graphite in seconds, at the metric's interval or a young run's window.
    graphite_interval = sources.interval_format("graphite")
    assert graphite_interval is not None
    text = render_query(quoted, canary_, metric, interval=graphite_interval)
    assert "'60s'" in text
    assert await provider.value(text) == pytest.approx(90.0)
    for window_s in (1.0, 2.5, 59.4, 90.0, 3600.0):
        young = render_query(quoted, canary_, metric, window_s, graphite_interval)
        assert f"'{interval(window_s)}'" in young
        assert await provider.value(young) == pytest.approx(90.0)
    assert await provider.is_online()


async def test_values_no_data_and_errors_from_a_real_graphite(real: Graphite) -> None:
    now = time.time()
    real.send([("checks.latest.p99", v, now - 3 + i) for i, v in enumerate((120, 80, 95))])
    real.send([("checks.two.a", 1, now), ("checks.two.b", 2, now)])
    real.wait_for("checks.latest.p99", 3)
    real.wait_for("checks.two.*", 2)
    p = GraphiteProvider(real.url)
    # the last second has no point yet (null): the last non-null one is the value
    assert await p.value("target=checks.latest.p99&from=-1min") == 95.0
    assert await p.value("target=maxSeries(checks.two.*)&from=-1min") == 2.0
    with pytest.raises(ProviderError, match=r"2 series \('checks.two.a', 'checks.two.b'\)"):
        await p.value("target=checks.two.*&from=-1min")
    with pytest.raises(NoData, match="no series"):
        await p.value("target=checks.nothing.like.this&from=-1min")
    with pytest.raises(NoData, match="only null datapoints"):  # a window before the first point
        await p.value("target=checks.latest.p99&from=-2h&until=-1h")
    with pytest.raises(ProviderError, match=r"HTTP 400: Invalid parameters \(Received request for unknown"):
        await p.value("target=nosuchfn(checks.latest.p99)")
    assert await p.is_online()


# -- end to end: a canary judged on Graphite ------------------------------------------------------------

# The documented template's metric names and ratio, as the last second's value: `{{ interval }}` is not used
# because Rheostat renders a young run's window in milliseconds, which Graphite refuses (see docs).
TEMPLATE = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {{name: graphite-request-success-rate, namespace: {ns}}}
spec:
  provider:
    type: graphite
    address: {address}
  query: |
    target=asPercent(
      sumSeries(stats.timers.httpServerRequests.app.{{{{ target }}}}.exception.*.method.*.outcome.{{CLIENT_ERROR,INFORMATIONAL,REDIRECTION,SUCCESS}}.status.*.uri.*.count),
      sumSeries(stats.timers.httpServerRequests.app.{{{{ target }}}}.exception.*.method.*.outcome.*.status.*.uri.*.count)
    )&from=-10s
"""
ANALYSIS = """
interval: 2s
threshold: 2
stepWeight: 25
maxWeight: 50
metrics:
- name: success-rate-by-graphite
  templateRef: {name: graphite-request-success-rate}
  thresholdRange: {min: 99}
  interval: 10s
"""


class Writer:
    """The app's request counters, written to carbon every half second: `failed` of every 100 fail."""

    def __init__(self, server: Graphite, app: str) -> None:
        self.server, self.app, self.failed = server, app, 0

    async def run(self) -> None:
        while True:
            points = requests(self.app, 100 - self.failed, self.failed, time.time())
            await asyncio.to_thread(self.server.send, points)
            await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def writing(writer: Writer) -> AsyncIterator[Writer]:
    task = asyncio.create_task(writer.run(), name="graphite-writer")
    try:
        yield writer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_canary_judged_on_graphite_is_promoted_on_good_numbers_and_rolled_back_on_bad(
    tmp_path: Path, real: Graphite
) -> None:
    template = TEMPLATE.format(ns=NS, address=real.url)
    rig = Rig(tmp_path)
    rig.commit(workload("6.0.0"), canary(rig.port, ANALYSIS), template, message="6.0.0")
    async with writing(Writer(real, "web")) as writer:
        await asyncio.to_thread(real.wait_for, APP.format(app="web", outcome="SERVER_ERROR", status=500))
        try:
            await rig.start()
            await rig.wait(Phase.INITIALIZED)
            assert rig.server is not None

            tick = rig.status().tick
            rig.commit(workload("6.0.1"), canary(rig.port, ANALYSIS), template, message="6.0.1")
            await rig.wait(Phase.SUCCEEDED, after_tick=tick, timeout=60)
            history = rig.server.controller.store.history(KEY)
            judged = [
                m for h in history for m in h.body["metrics"] if m["name"] == "success-rate-by-graphite"
            ]
            assert sum(m["ok"] for m in judged) >= 2
            assert all(m["value"] == 100.0 for m in judged if m["value"] is not None)

            writer.failed = 50
            tick = rig.status().tick
            rig.commit(workload("6.0.2"), canary(rig.port, ANALYSIS), template, message="6.0.2, half fail")
            st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=60)
            assert "success-rate-by-graphite" in st.message and "< 99" in st.message
            failed = [
                m
                for h in rig.server.controller.store.history(KEY)[len(history) :]
                for m in h.body["metrics"]
                if m["name"] == "success-rate-by-graphite" and not m["ok"]
            ]
            assert failed and all(m["value"] == 50.0 for m in failed)
        finally:
            await rig.stop()
