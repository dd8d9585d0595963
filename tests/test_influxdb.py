"""The InfluxDB provider: InfluxQL against a real InfluxDB 1.x (Debian's `influxd`, one for the module, data
written by the tests over `/write`), Flux against a local server answering InfluxDB 2's documented annotated
CSV, and a canary promoted then rolled back by a MetricTemplate on InfluxDB, end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from click.testing import CliRunner

from rheostat.cli.main import cli
from rheostat.model.base import ObjectKey
from rheostat.model.canary import Canary, Metric
from rheostat.model.metric_template import MetricProviderSpec, MetricTemplate
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.influxdb import Credentials, InfluxProvider, is_influxql
from rheostat.plugins.metrics.sources import SourceContext, kind_of
from rheostat.rollout.analysis import render_query
from rheostat.rollout.types import Phase
from tests.answering import Answer, AnswerServer, answering
from tests.influx_server import DATABASE, PASSWORD, USER, Influx, influxdb
from tests.rig import KEY, NS, Rig, canary, workload
from tests.servers import free_port

pytestmark = pytest.mark.e2e

BASIC = Credentials(username=USER, password=PASSWORD)


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx]:
    with influxdb(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture
def server() -> Iterator[AnswerServer]:
    yield from answering()


def now_ms() -> int:
    return int(time.time() * 1000)


# -- which language a query is in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "influxql"),
    [
        ("SELECT mean(v) FROM m", True),
        ("  select count(v) from m", True),
        ("-- errors of the canary\nSELECT sum(v) FROM m", True),
        ("/* p99 */ SELECT percentile(v, 99) FROM m", True),
        ("SHOW SERIES CARDINALITY", True),
        ('from(bucket: "default") |> range(start: -2h)', False),
        ('// select the canary\nfrom(bucket: "b") |> range(start: -1m)', False),
        ('select = from(bucket: "b")\nselect |> range(start: -1m)', False),
        ('import "math"\nfrom(bucket: "b")', False),
        ("selector = 1", False),
    ],
)
def test_influxql_is_told_from_flux_by_its_first_word(text: str, influxql: bool) -> None:
    assert is_influxql(text) is influxql


# -- InfluxQL against a real InfluxDB -----------------------------------------------------------------------


async def test_influxql_values_no_data_and_errors_from_a_real_influxdb(influx: Influx) -> None:
    t = now_ms()
    influx.write(
        "\n".join(
            [
                f"requests,namespace=test,target=podinfo,group=canary ok=97i,errors=3i,p99=212.5 {t - 4000}",
                f"requests,namespace=test,target=podinfo,group=canary ok=99i,errors=1i,p99=180.5 {t - 2000}",
                f"requests,namespace=test,target=podinfo,group=primary ok=100i,errors=0i,p99=150 {t - 2000}",
            ]
        )
    )
    p = InfluxProvider(f"{influx.url}/?db={DATABASE}", credentials=BASIC)
    assert await p.is_online()
    where = "WHERE \"namespace\" = 'test' AND time > now() - 1m"
    canary_only = f"{where} AND \"group\" = 'canary'"
    assert await p.value(f"SELECT sum(errors) FROM requests {canary_only}") == 4.0
    assert await p.value(f"SELECT max(p99) FROM requests {canary_only}") == 212.5
    rate = f"SELECT 100 * sum(ok) / (sum(ok) + sum(errors)) FROM requests {canary_only}"
    assert await p.value(rate) == pytest.approx(98.0)
    # the database named in the query itself: no `?db=` needed
    plain = InfluxProvider(influx.url, credentials=BASIC)
    qualified = f'SELECT sum(ok) FROM "{DATABASE}"."autogen"."requests" {where}'
    assert await plain.value(qualified) == 296.0
    with pytest.raises(ProviderError, match="the statement failed: database name required"):
        await plain.value(f"SELECT sum(ok) FROM requests {where}")
    wrong_db = InfluxProvider(f"{influx.url}?db=nothing", credentials=BASIC)
    with pytest.raises(ProviderError, match="the statement failed: database not found: nothing"):
        await wrong_db.value(f"SELECT sum(ok) FROM requests {where}")

    with pytest.raises(NoData, match="no series"):
        await p.value("SELECT sum(ok) FROM requests WHERE \"namespace\" = 'elsewhere' AND time > now() - 1m")
    with pytest.raises(NoData, match="no series"):
        await p.value(f"SELECT sum(ok) FROM never_written {where}")
    with pytest.raises(ProviderError, match=r'2 series \({group="canary"}, {group="primary"}\).*GROUP BY'):
        await p.value(f'SELECT sum(ok) FROM requests {where} GROUP BY "group"')
    with pytest.raises(ProviderError, match=r"2 fields \(sum, sum_1\), not one"):
        await p.value(f"SELECT sum(ok), sum(errors) FROM requests {where}")
    with pytest.raises(ProviderError, match=r"rows, not one value; aggregate"):
        await p.value(f"SELECT ok FROM requests {canary_only}")
    with pytest.raises(ProviderError, match="2 statements"):
        await p.value(f"SELECT sum(ok) FROM requests {where}; SELECT sum(errors) FROM requests {where}")
    with pytest.raises(ProviderError, match=r"HTTP 400: error parsing query: .*query: SELECT sum\(\("):
        await p.value("SELECT sum(( FROM requests")

    # templated as a MetricTemplate's provider, with Flagger's username/password secret keys
    spec = MetricProviderSpec(type="influxdb", address=f"{influx.url}?db={DATABASE}", secretRef={"name": "x"})
    async with httpx.AsyncClient() as client:
        made = kind_of("influxdb").make(
            SourceContext(spec, "test", {"username": USER, "password": PASSWORD}, client)
        )
        q = MetricQuery(
            ObjectKey("test/podinfo"), "errors", 60.0, f"SELECT sum(errors) FROM requests {where}"
        )
        assert await made.query(q) == 4.0


async def test_bad_or_missing_credentials_are_refused_and_never_echoed(influx: Influx) -> None:
    address = f"{influx.url}/?db={DATABASE}"
    wrong = InfluxProvider(address, credentials=Credentials(username=USER, password="not-the-password"))
    with pytest.raises(ProviderError) as info:
        await wrong.value("SELECT count(ok) FROM requests")
    assert "HTTP 401: authorization failed" in str(info.value)
    assert "not-the-password" not in str(info.value) and "not-the-password" not in repr(wrong)
    assert "not-the-password" not in repr(wrong.credentials)
    anonymous = InfluxProvider(address)
    with pytest.raises(ProviderError, match="HTTP 401: unable to parse authentication credentials"):
        await anonymous.value("SELECT count(ok) FROM requests")
    # credentials in the address itself stay out of messages too
    inline = InfluxProvider(f"http://{USER}:hunter2@127.0.0.1:{free_port()}/?db=x&p=hunter2", timeout_s=1)
    with pytest.raises(ProviderError) as info:
        await inline.value("SELECT 1")
    assert "unreachable" in str(info.value) and "hunter2" not in str(info.value) + repr(inline)
    assert not await inline.is_online()


async def test_the_influxql_request_is_influxdbs_query_api(server: AnswerServer) -> None:
    server.answer = Answer(
        200,
        b'{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","sum"],"values":[["1970-01-01T00:00:00Z",42]]}]}]}',
    )
    token = "v1-compat-token"
    p = InfluxProvider(
        f"{server.url}/influx/?db=telegraf&rp=autogen",
        credentials=Credentials(token=token),
        headers={"X-Team": ["a"]},
    )
    assert await p.value("SELECT sum(v) FROM m WHERE t = 'a b'") == 42.0
    path, headers = server.served.requests[0]
    url = httpx.URL(path)
    assert url.path == "/influx/query"
    assert dict(url.params) == {
        "db": "telegraf",
        "rp": "autogen",
        "q": "SELECT sum(v) FROM m WHERE t = 'a b'",
    }
    assert headers["authorization"] == f"Token {token}" and headers["x-team"] == "a"
    basic = InfluxProvider(server.url, credentials=BASIC)
    await basic.value("SELECT sum(v) FROM m")
    assert server.served.requests[1][1]["authorization"].startswith("Basic ")


def _influxql(series: object) -> bytes:
    return json.dumps({"results": [{"statement_id": 0, "series": series}]}).encode()


INFLUXQL_UNUSABLE = [
    (400, b'{"error":"error parsing query: found EOF"}', "HTTP 400: error parsing query: found EOF"),
    (200, b'{"error":"timeout"}', "HTTP 200: timeout"),
    (401, b'{"error":"authorization failed"}', "HTTP 401: authorization failed"),
    (403, b'{"code":"forbidden","message":"insufficient permissions"}', "HTTP 403: forbidden: insufficient"),
    (502, b"<html>Bad Gateway</html>", "HTTP 502: '<html>Bad Gateway"),
    (200, b'{"results":{}}', "without a list of `results`"),
    (200, b'{"results":[]}', "without a list of `results`"),
    (200, b'{"results":[{"statement_id":0,"error":"database not found: x"}]}', "statement failed: database"),
    (200, _influxql({"a": 1}), "`series` that is not a list"),
    (200, _influxql([{"name": "m", "values": [[0, 1]]}]), "without its `columns`"),
    (200, _influxql([{"name": "m", "columns": ["time", "v"], "values": [[0]]}]), "do not match its columns"),
    (200, _influxql([{"name": "m", "columns": ["time", "v"], "values": [[0, "x"]]}]), "not a number ('x')"),
    (
        200,
        _influxql([{"name": "m", "columns": ["time", "v"], "values": [[0, True]]}]),
        "not a number (a bool)",
    ),
    (
        200,
        _influxql([{"name": "m", "columns": ["time", "v"], "values": [[0, [1]]]}]),
        "not a number (a list)",
    ),
    (
        200,
        b'{"results":[{"series":[{"columns":["time","v"],"values":[[0,NaN]]}]}]}',
        "returned NaN, not a number",
    ),
    (200, b'{"results":[{"series":[{"columns":["time","v"],"values":[[0,1e999]]}]}]}', "returned +Inf"),
    (200, _influxql([{"name": "m", "columns": ["time"], "values": [[0]]}]), "0 fields (none)"),
]


@pytest.mark.parametrize(("status", "body", "reason"), INFLUXQL_UNUSABLE)
async def test_every_unusable_influxql_answer_is_a_failed_check_with_the_reason(
    server: AnswerServer, status: int, body: bytes, reason: str
) -> None:
    server.answer = Answer(status, body)
    token = "tok-influxql-secret"
    p = InfluxProvider(server.url, credentials=Credentials(token=token))
    with pytest.raises(ProviderError) as info:
        await p.value("SELECT v FROM m")
    assert reason in str(info.value) and "query: SELECT v FROM m" in str(info.value)
    assert token not in str(info.value) and len(str(info.value)) < 600


@pytest.mark.parametrize(
    "body",
    [
        b'{"results":[{"statement_id":0}]}',
        _influxql([]),
        _influxql([{"name": "m", "columns": ["time", "v"], "values": []}]),
        _influxql([{"name": "m", "columns": ["time", "v"], "values": [["1970-01-01T00:00:00Z", None]]}]),
    ],
)
async def test_no_series_no_rows_or_a_null_is_no_data(server: AnswerServer, body: bytes) -> None:
    server.answer = Answer(200, body)
    with pytest.raises(NoData):
        await InfluxProvider(server.url).value("SELECT mean(v) FROM m")


# -- Flux: InfluxDB 2's /api/v2/query and its annotated CSV -------------------------------------------------


def annotated(*tables: str) -> bytes:
    """InfluxDB 2's answer: tables separated by a blank line, CRLF line ends (as its API sends them)."""
    return "\r\n\r\n".join(t.strip().replace("\n", "\r\n") for t in tables).encode() + b"\r\n\r\n"


COUNT_TABLE = """
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,long,string,string,string,string
#group,false,false,true,true,false,true,true,true,true
#default,count,,,,,,,,
,result,table,_start,_stop,_value,_field,_measurement,destination_workload,response_code
,,0,2026-12-06T00:00:00Z,2026-12-06T02:00:00Z,17,value,istio_requests_total,podinfo,500
"""
DOUBLE_TABLE = """
#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,double
#group,false,false,true,true,false
#default,_result,,,,
,result,table,_start,_stop,_value
,,0,2026-12-06T00:00:00Z,2026-12-06T00:01:00Z,99.25
"""


def double(value: str, table: int = 0) -> str:
    return DOUBLE_TABLE.replace(",,0,", f",,{table},").replace("99.25", value)


ERROR_TABLE = """
#datatype,string,string
#group,true,true
#default,,
,error,reference
,"failed to execute query: bucket ""default"" not found",897
"""


async def test_the_flux_request_is_what_flaggers_client_sends() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=annotated(DOUBLE_TABLE), headers={"content-type": "text/csv"})

    token = "influx-v2-token"
    p = InfluxProvider(
        "https://influx.example:8086/",
        credentials=Credentials.from_secret({"token": token, "org": "my-org"}),
        transport=httpx.MockTransport(answer),
    )
    flux = 'from(bucket: "default") |> range(start: -1m) |> mean()'
    assert await p.value(flux) == 99.25
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/api/v2/query"
    assert dict(request.url.params) == {"org": "my-org"}
    assert request.headers["authorization"] == f"Token {token}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == "application/csv"
    body = json.loads(request.content)
    assert body == {
        "query": flux,
        "type": "flux",
        "dialect": {"annotations": ["datatype", "group", "default"], "delimiter": ",", "header": True},
    }
    # InfluxDB 1.8+: Flux with a username and password is a token `username:password`
    basic = InfluxProvider(
        "http://influx.example:8086",
        credentials=Credentials(username="u", password="p"),
        transport=httpx.MockTransport(answer),
    )
    await basic.value(flux)
    assert seen[1].headers["authorization"] == "Token u:p" and "org" not in seen[1].url.params
    with pytest.raises(ValueError, match="neither"):
        Credentials.from_secret({"org": "my-org"})


FLUX_TEMPLATE = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found
  namespace: test
spec:
  provider:
    type: influxdb
    address: {address}
    secretRef:
      name: influx-token
  query: |
    from(bucket: "default")
    |> range(start: -2h)
    |> filter(fn: (r) => r["_measurement"] == "istio_requests_total")
    |> filter(fn: (r) => r[" destination_workload_namespace"] == "{{{{ namespace }}}}")
    |> filter(fn: (r) => r["destination_workload"] == "{{{{ target }}}}")
    |> filter(fn: (r) => r["response_code"] == "500")
    |> count()
    |> yield(name: "count")
"""

CANARY = """apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: podinfo, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}
  service: {port: 9898}
  analysis:
    interval: 1m
    threshold: 5
    stepWeight: 10
    metrics:
    - name: "404s percentage"
      templateRef: {name: not-found}
      thresholdRange: {max: 5}
      interval: 1m
"""


def test_validate_names_the_missing_address_of_flaggers_documented_template(tmp_path: Path) -> None:
    """Flagger's docs' template has no address (Flagger then fails it at run time): `validate` says so."""
    (tmp_path / "template.yaml").write_text(FLUX_TEMPLATE.replace("    address: {address}\n", ""))
    res = CliRunner().invoke(cli, ["validate", str(tmp_path), "-o", "json"])
    (finding,) = json.loads(res.output)
    assert res.exit_code == 1 and finding["object"] == "MetricTemplate test/not-found"
    assert (
        finding["message"]
        == "spec.provider.address: is required: the InfluxDB server's URL, e.g. http://influxdb:8086"
    )
    (tmp_path / "template.yaml").write_text(FLUX_TEMPLATE.format(address="http://influxdb:8086"))
    res = CliRunner().invoke(cli, ["validate", str(tmp_path), "-o", "json"])
    assert res.exit_code == 0 and json.loads(res.output) == []


async def test_flaggers_documented_influxdb_template(server: AnswerServer) -> None:
    """Flagger's docs' template as a user pastes it, with the address it needs (Flagger needs one too)."""
    without = MetricTemplate.model_validate(
        yaml.safe_load(FLUX_TEMPLATE.replace("    address: {address}\n", ""))
    )
    assert kind_of("influxdb").problems(without.spec.provider) == [
        ("address", "is required: the InfluxDB server's URL, e.g. http://influxdb:8086")
    ]
    ftp = MetricTemplate.model_validate(yaml.safe_load(FLUX_TEMPLATE.format(address="ftp://influx")))
    assert kind_of("influxdb").problems(ftp.spec.provider)[0][0] == "address"

    template = MetricTemplate.model_validate(yaml.safe_load(FLUX_TEMPLATE.format(address=server.url)))
    assert kind_of("influxdb").problems(template.spec.provider) == []
    c = Canary.model_validate(yaml.safe_load(CANARY))
    metric: Metric = c.spec.the_analysis.metrics[0]
    text = render_query(template.spec.query, c, metric)
    assert '== "test")' in text and '== "podinfo")' in text

    server.answer = Answer(200, annotated(COUNT_TABLE), content_type="text/csv; charset=utf-8")
    token = "documented-secret-token"  # Flagger's docs' secret holds only `token`: org is then left out
    async with httpx.AsyncClient() as client:
        provider = kind_of("influxdb").make(
            SourceContext(template.spec.provider, "test", {"token": token}, client)
        )
        assert await provider.query(MetricQuery(ObjectKey("test/podinfo"), metric.name, 60.0, text)) == 17.0
    assert isinstance(provider, InfluxProvider) and provider.api.timeout_s == 15.0  # Flagger's for InfluxDB
    path, headers = server.served.requests[0]
    assert path == "/api/v2/query" and headers["authorization"] == f"Token {token}"

    server.answer = Answer(200, b"\r\n", content_type="text/csv; charset=utf-8")  # no tables at all
    with pytest.raises(NoData, match="no rows"):
        await InfluxProvider(server.url).value(text)


FLUX_UNUSABLE = [
    (200, annotated(ERROR_TABLE), 'the query failed: failed to execute query: bucket "default" not found'),
    (200, annotated(DOUBLE_TABLE, ERROR_TABLE), "the query failed: failed to execute query"),
    (200, annotated(double("1"), double("2", table=1)), "2 rows, not one value; aggregate"),
    (200, annotated(double("NaN")), "returned NaN, not a number"),
    (200, annotated(double("+Inf")), "returned +Inf"),
    (200, annotated(double("lots")), "not a number ('lots')"),
    (200, annotated(DOUBLE_TABLE.replace(",double", ",string")), "_value is a string, not a number"),
    (200, annotated(DOUBLE_TABLE.replace(",99.25", ",99.25,extra")), "row that does not match its header"),
    (200, annotated(DOUBLE_TABLE.replace("_value", "_other")), "not InfluxDB's annotated CSV"),
    (200, b'{"results":[]}', "not InfluxDB's annotated CSV: '{\"results\":[]}'"),
    (200, b"<!doctype html><title>Login</title>", "not InfluxDB's annotated CSV: '<!doctype html>"),
    (200, b"\xff\xfe\x00", "not UTF-8 text"),
    (200, b',result,table,_value\r\n,,0,"unterminated\r\n', "CSV that cannot be read"),
    (401, b'{"code":"unauthorized","message":"unauthorized access"}', "HTTP 401: unauthorized: unauthorized"),
    (
        400,
        b'{"code":"invalid","message":"compilation failed: error @1:1-1:5"}',
        "HTTP 400: invalid: compilation",
    ),
    (404, b'{"error":"not found"}', "HTTP 404: not found"),  # InfluxDB 1.x without Flux enabled
    (503, b"", "HTTP 503 with an empty body"),
    (502, b"upstream connect error", "HTTP 502: 'upstream connect error'"),
]


@pytest.mark.parametrize(("status", "body", "reason"), FLUX_UNUSABLE)
async def test_every_unusable_flux_answer_is_a_failed_check_with_the_reason(
    server: AnswerServer, status: int, body: bytes, reason: str
) -> None:
    server.answer = Answer(status, body, content_type="text/csv; charset=utf-8")
    token = "flux-secret-token"
    p = InfluxProvider(server.url, credentials=Credentials(token=token, org="o"))
    flux = 'from(bucket: "default") |> range(start: -1m)'
    with pytest.raises(ProviderError) as info:
        await p.value(flux)
    assert reason in str(info.value) and f"query: {flux}" in str(info.value)
    assert token not in str(info.value) and len(str(info.value)) < 700


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        annotated(DOUBLE_TABLE.replace(",99.25", ",")),  # a null _value
    ],
)
async def test_no_tables_or_a_null_value_is_no_data(server: AnswerServer, body: bytes) -> None:
    server.answer = Answer(200, body, content_type="text/csv; charset=utf-8")
    with pytest.raises(NoData):
        await InfluxProvider(server.url).value('from(bucket: "b") |> range(start: -1m)')


async def test_a_default_annotation_fills_an_empty_value(server: AnswerServer) -> None:
    table = DOUBLE_TABLE.replace("#default,_result,,,,", "#default,_result,,,,3.5").replace(",99.25", ",")
    server.answer = Answer(200, annotated(table), content_type="text/csv")
    assert await InfluxProvider(server.url).value('from(bucket: "b") |> range(start: -1m)') == 3.5


async def test_a_slow_flux_answer_is_cut_at_the_timeout(server: AnswerServer) -> None:
    """(InfluxQL's, as every HTTP provider's: test_http_providers.py.)"""
    server.answer = Answer(200, annotated(DOUBLE_TABLE), trickle=1, pause_s=0.1)
    p = InfluxProvider(server.url, timeout_s=0.5)
    with pytest.raises(ProviderError, match=r"did not answer within 0.5s; query: from"):
        await p.value('from(bucket: "b") |> range(start: -1m)')


# -- a canary judged on InfluxDB, end to end ----------------------------------------------------------------


E2E_TEMPLATE = """apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {{name: influx-success-rate, namespace: {ns}}}
spec:
  provider:
    type: influxdb
    address: "{url}/?db={db}"
    secretRef: {{name: influx-auth}}
  query: |
    SELECT mean("percent") FROM "success_rate"
    WHERE "namespace" = '{{{{ namespace }}}}' AND "target" = '{{{{ target }}}}' AND time > now() - {{{{ interval }}}}
"""

E2E_ANALYSIS = """
interval: 2s
threshold: 2
stepWeight: 25
maxWeight: 50
metrics:
- name: success-rate-on-influxdb
  templateRef: {name: influx-success-rate}
  thresholdRange: {min: 99}
  interval: 10s
"""


@contextlib.asynccontextmanager
async def writing(influx: Influx, percent: list[float]) -> AsyncIterator[None]:
    """The canary's success rate as a monitoring agent would report it: a point every half second."""

    async def write() -> None:
        while True:
            line = f"success_rate,namespace={NS},target=web percent={percent[0]} {now_ms()}"
            await asyncio.to_thread(influx.write, line)
            await asyncio.sleep(0.5)

    task = asyncio.create_task(write(), name="influx-writer")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_canary_promoted_on_good_numbers_and_rolled_back_on_bad_ones(
    influx: Influx, tmp_path: Path
) -> None:
    rig = Rig(tmp_path)
    secrets = rig.data / "secrets" / NS
    secrets.mkdir(parents=True)
    (secrets / "influx-auth.yaml").write_text(f"username: {USER}\npassword: {PASSWORD}\n")
    template = E2E_TEMPLATE.format(ns=NS, url=influx.url, db=DATABASE)
    rig.commit(workload("6.0.0"), canary(rig.port, E2E_ANALYSIS), template)
    percent = [99.9]
    try:
        await rig.start()
        await rig.wait(Phase.INITIALIZED)
        async with writing(influx, percent):
            tick = rig.status().tick
            rig.commit(workload("6.0.1"), canary(rig.port, E2E_ANALYSIS), template, message="6.0.1")
            await rig.wait(Phase.SUCCEEDED, after_tick=tick, timeout=60)
            assert rig.server is not None
            history = rig.server.controller.store.history(KEY)
            judged = [
                m for h in history for m in h.body["metrics"] if m["name"] == "success-rate-on-influxdb"
            ]
            assert sum(m["ok"] for m in judged) >= 2
            assert all(m["value"] == pytest.approx(99.9) for m in judged if m["value"] is not None)

            percent[0] = 80.0
            tick = rig.status().tick
            rig.commit(workload("6.0.2"), canary(rig.port, E2E_ANALYSIS), template, message="6.0.2 bad")
            st = await rig.wait(Phase.FAILED, after_tick=tick, timeout=60)
        assert "success-rate-on-influxdb" in st.message and "< 99" in st.message
        assert PASSWORD not in st.message
    finally:
        await rig.stop()
