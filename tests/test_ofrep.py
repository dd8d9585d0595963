"""The OFREP server driven by the stock clients (`openfeature-sdk` + `openfeature-provider-ofrep`) and by
plain HTTP, against a real uvicorn on 127.0.0.1 that each test stops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from rheostat.flags.store import FlagSource, FlagStore
from rheostat.model.flags import FlagdConfig
from rheostat.server.ofrep import RateLimit, ofrep_app

FLAGS: dict[str, Any] = {
    "flags": {
        "new-ui": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", None]},
            "metadata": {"owner": "web"},
        },
        "greeting": {"state": "ENABLED", "variants": {"hi": "hi", "yo": "yo"}, "defaultVariant": "hi"},
        "page-size": {"state": "ENABLED", "variants": {"small": 10, "big": 100}, "defaultVariant": "big"},
        "ratio": {"state": "ENABLED", "variants": {"low": 0.1, "high": 0.9}, "defaultVariant": "low"},
        "layout": {"state": "ENABLED", "variants": {"a": {"cols": 2}}, "defaultVariant": "a"},
        "old-thing": {"state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "code-default": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": None},
        "broken": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"$ref": "missing"},
        },
        "split": {
            "state": "ENABLED",
            "variants": {"new": True, "old": False},
            "defaultVariant": "old",
            "targeting": {"fractional": [["new", 50], ["old", 50]]},
        },
    },
    "metadata": {"flagSetId": "web"},
}


def _store(doc: dict[str, Any] = FLAGS, revision: str = "abc123") -> FlagStore:
    store = FlagStore()
    store.replace([FlagSource("FlagSet default/web", FlagdConfig.model_validate(doc), revision)])
    return store


@dataclass
class Served:
    url: str
    store: FlagStore


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # a thread, not the main one
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[tuple[_Server, threading.Thread, Any]] = []

    def start(store: FlagStore, **kwargs: Any) -> Served:
        app = ofrep_app(store, **kwargs)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        server = _Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        started.append((server, thread, app))
        return Served(f"http://127.0.0.1:{port}", store)

    yield start
    for server, thread, app in started:
        app.state.ofrep.close()
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive()


@pytest.fixture
def client_for() -> Iterator[Any]:
    domains: list[str] = []

    def make(url: str, headers: dict[str, str] | None = None) -> OpenFeatureClient:
        domain = f"ofrep-test-{len(domains)}"
        provider = OFREPProvider(url, headers_factory=(lambda: dict(headers)) if headers else None)
        api.set_provider(provider, domain)
        domains.append(domain)
        return api.get_client(domain)

    yield make
    api.clear_providers()


def test_stock_client_gets_every_type_with_variant_and_reason(serve: Any, client_for: Any) -> None:
    served = serve(_store())
    client = client_for(served.url)
    hit = client.get_boolean_details("new-ui", False, EvaluationContext("u1", {"email": "a@example.com"}))
    assert (hit.value, hit.variant, hit.reason, hit.error_code) == (True, "on", Reason.TARGETING_MATCH, None)
    assert hit.flag_metadata == {"owner": "web", "flagSetId": "web"}
    miss = client.get_boolean_details("new-ui", True, EvaluationContext("u1", {"email": "a@other.org"}))
    assert (miss.value, miss.variant, miss.reason) == (False, "off", Reason.DEFAULT)
    assert client.get_string_details("greeting", "x").value == "hi"
    assert client.get_integer_details("page-size", 1).value == 100
    assert client.get_float_details("ratio", 0.5).value == 0.1
    assert client.get_object_details("layout", {}).value == {"cols": 2}


def test_no_context_is_answered(serve: Any, client_for: Any) -> None:
    """The stock provider sends `{}` without a context; an empty body is accepted too."""
    served = serve(_store())
    details = client_for(served.url).get_string_details("greeting", "x")
    assert (details.value, details.reason, details.error_code) == ("hi", Reason.STATIC, None)
    for body in (b"", b"{}", b'{"context": {}}'):
        r = httpx.post(f"{served.url}/ofrep/v1/evaluate/flags/greeting", content=body)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "key": "greeting",
            "value": "hi",
            "reason": "STATIC",
            "variant": "hi",
            "metadata": {"flagSetId": "web"},
        }


def test_disabled_and_code_default_give_the_callers_default(serve: Any, client_for: Any) -> None:
    served = serve(_store())
    client = client_for(served.url)
    off = client.get_boolean_details("old-thing", False)
    assert (off.value, off.reason, off.error_code) == (False, Reason.DISABLED, None)
    dflt = client.get_boolean_details("code-default", True)
    assert (dflt.value, dflt.reason, dflt.error_code) == (True, Reason.DEFAULT, None)
    raw = httpx.post(f"{served.url}/ofrep/v1/evaluate/flags/old-thing", json={}).json()
    assert "value" not in raw and raw["variant"] == "" and raw["reason"] == "DISABLED"


def test_errors_are_ofrep_errors(serve: Any, client_for: Any) -> None:
    served = serve(_store())
    client = client_for(served.url)
    missing = client.get_boolean_details("nope", True)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    broken = client.get_boolean_details("broken", True)
    assert (broken.value, broken.error_code) == (True, ErrorCode.PARSE_ERROR)

    url = f"{served.url}/ofrep/v1/evaluate/flags"
    r = httpx.post(f"{url}/nope", json={})
    assert r.status_code == 404
    assert r.json()["key"] == "nope" and r.json()["errorCode"] == "FLAG_NOT_FOUND"
    r = httpx.post(f"{url}/broken", json={})
    assert r.status_code == 400 and r.json()["errorCode"] == "PARSE_ERROR"
    r = httpx.post(f"{url}/greeting", content=b"{not json")
    assert r.status_code == 400 and r.json() == {
        "key": "greeting",
        "errorCode": "INVALID_CONTEXT",
        "errorDetails": r.json()["errorDetails"],
    }
    r = httpx.post(f"{url}/greeting", json={"context": {"targetingKey": 7}})
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT"
    assert r.json()["errorDetails"] == "context.targetingKey must be a string, got number"  # JSON's words
    r = httpx.post(url, json={"context": []})
    assert r.status_code == 400 and r.json()["errorCode"] == "INVALID_CONTEXT" and "key" not in r.json()
    assert r.json()["errorDetails"] == "context must be a JSON object, got array"


def test_token_401_403(serve: Any, client_for: Any) -> None:
    served = serve(_store(), token="s3cret")
    url = f"{served.url}/ofrep/v1/evaluate/flags/greeting"
    assert httpx.post(url, json={}).status_code == 401
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert httpx.post(url, json={}, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.post(url, json={}, headers={"X-API-Key": "s3cret"}).status_code == 200
    denied = client_for(served.url).get_string_details("greeting", "x")
    assert (denied.value, denied.error_code, denied.error_message) == ("x", ErrorCode.GENERAL, "unauthorized")
    wrong = client_for(served.url, {"Authorization": "Bearer nope"}).get_string_details("greeting", "x")
    assert wrong.error_message == "forbidden"
    ok = client_for(served.url, {"Authorization": "Bearer s3cret"}).get_string_details("greeting", "x")
    assert (ok.value, ok.error_code) == ("hi", None)


def test_rate_limit_429_with_retry_after_seconds(serve: Any, client_for: Any) -> None:
    now = [0.0]
    served = serve(_store(), rate_limit=RateLimit(rate=0.5, burst=2), clock=lambda: now[0])
    url = f"{served.url}/ofrep/v1/evaluate/flags/greeting"
    assert [httpx.post(url, json={}).status_code for _ in range(2)] == [200, 200]
    r = httpx.post(url, json={})
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    now[0] += 2.0
    assert httpx.post(url, json={}).status_code == 200
    limited = client_for(served.url).get_string_details("greeting", "x")
    assert (limited.value, limited.error_code) == ("x", ErrorCode.GENERAL)
    assert "Rate limited" in (limited.error_message or "")


def test_bulk_etag_304_and_change(serve: Any) -> None:
    store = _store()
    served = serve(store)
    url = f"{served.url}/ofrep/v1/evaluate/flags"
    ctx = {"context": {"targetingKey": "u1", "email": "a@example.com"}}
    r = httpx.post(url, json=ctx)
    assert r.status_code == 200
    etag = r.headers["ETag"]
    body = r.json()
    by_key = {f["key"]: f for f in body["flags"]}
    assert by_key["new-ui"] == {
        "key": "new-ui",
        "value": True,
        "reason": "TARGETING_MATCH",
        "variant": "on",
        "metadata": {"flagSetId": "web", "owner": "web"},
    }
    assert by_key["broken"]["errorCode"] == "PARSE_ERROR"
    assert by_key["old-thing"]["reason"] == "DISABLED"
    assert body["eventStreams"][0]["type"] == "sse"
    assert body["eventStreams"][0]["url"].endswith("/ofrep/v1/events")
    again = httpx.post(url, json=ctx, headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["ETag"]) == (304, b"", etag)
    other = httpx.post(url, json={"context": {"targetingKey": "u1"}}, headers={"If-None-Match": etag})
    assert other.status_code == 200  # another context, other answers

    changed = json.loads(json.dumps(FLAGS))
    changed["flags"]["greeting"]["defaultVariant"] = "yo"
    store.replace([FlagSource("FlagSet default/web", FlagdConfig.model_validate(changed), "def456")])
    after = httpx.post(url, json=ctx, headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.headers["ETag"] != etag


def test_sse_pushes_changes(serve: Any) -> None:
    store = _store()
    served = serve(store, keepalive_s=0.2)
    with (
        httpx.Client(timeout=10) as http,
        http.stream("GET", f"{served.url}/ofrep/v1/events") as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "retry: 1000"
        changed = json.loads(json.dumps(FLAGS))
        changed["flags"]["greeting"]["defaultVariant"] = "yo"

        def change() -> None:
            time.sleep(0.3)
            store.replace([FlagSource("FlagSet default/web", FlagdConfig.model_validate(changed), "def456")])

        threading.Thread(target=change).start()
        event: dict[str, str] = {}
        for line in lines:
            if line.startswith(("id:", "event:", "data:")):
                name, _, value = line.partition(":")
                event[name] = value.strip()
            if "data" in event:
                break
        assert event["id"] == str(store.version) and event["event"] == "message"
        data = json.loads(event["data"])
        assert data["type"] == "refetchEvaluation" and data["etag"] == store.etag


def test_sse_needs_the_token(serve: Any) -> None:
    served = serve(_store(), token="t")
    assert httpx.get(f"{served.url}/ofrep/v1/events").status_code == 401


def test_bucketing_is_sticky_by_targeting_key(serve: Any, client_for: Any) -> None:
    served = serve(_store())
    client = client_for(served.url)
    first = [client.get_boolean_value("split", False, EvaluationContext(f"user-{i}")) for i in range(40)]
    second = [client.get_boolean_value("split", False, EvaluationContext(f"user-{i}")) for i in range(40)]
    assert first == second and any(first) and not all(first)
