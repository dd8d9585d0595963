"""What a hostile or careless client sends the API gets a 4xx with a reason, read only as far as needed: integer
parameters out of range, JSON nested 100,000 deep, bodies and headers over their caps, the load tester's
switches without the token. All against one real server (uvicorn on 127.0.0.1, real Envoy and processes)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from rheostat.rollout.types import Phase
from rheostat.server.limits import MAX_BODY, MAX_HEAD, MAX_HOOK_BODY
from rheostat.server.own_hooks import own_hook_headers
from rheostat.server.params import INT64_MAX, MAX_ROWS
from tests.rig import KEY, Rig, canary, workload

pytestmark = pytest.mark.asyncio(loop_scope="module")

ANALYSIS = "interval: 1s\nthreshold: 2\nstepWeight: 20\nmaxWeight: 60"
HOOK_TOKEN = "s3cret"
RECEIVER = """apiVersion: notification.toolkit.fluxcd.io/v1
kind: Receiver
metadata: {name: push, namespace: flux-system}
spec:
  type: github
  events: [push]
  secretRef: {name: hook-token}
  resources: [{kind: GitRepository, name: flux-system}]
"""
HOOK_PATH = "/hook/" + hashlib.sha256(f"{HOOK_TOKEN}pushflux-system".encode()).hexdigest()
FLAGS = {
    "flags": {
        "color": {"state": "ENABLED", "variants": {"red": "red", "blue": "blue"}, "defaultVariant": "red"}
    }
}
DEEP = 100_000


@dataclass
class Served:
    rig: Rig
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def start_api_rig(tmp: Path) -> Served:
    """A running server with a Canary, a flag and a GitHub Receiver on its repository."""
    rig = Rig(tmp)
    (rig.repo / "flags.json").write_text(json.dumps(FLAGS))
    rig.commit(workload("1.0.0"), canary(rig.port, ANALYSIS), RECEIVER, message="first")
    (rig.data / "secrets" / "flux-system").mkdir(parents=True)
    (rig.data / "secrets" / "flux-system" / "hook-token.yaml").write_text(f"token: {HOOK_TOKEN}\n")
    await rig.start()
    try:
        await rig.wait(Phase.INITIALIZED)
    except BaseException:
        await rig.stop()
        raise
    return Served(rig, (rig.data / "token").read_text().strip())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    s = await start_api_rig(tmp_path_factory.mktemp("api"))
    try:
        yield s
    finally:
        await s.rig.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def api(served: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.rig.api, timeout=10) as client:
        yield client


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client had sent when the answer came

    def json(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.body)
        return data


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    return status, headers, await reader.readexactly(int(headers.get("content-length", "0")))


async def exchange(port: int, head: str, chunks: Iterable[bytes] = (), pause: float = 0.01) -> Reply:
    """One request over a raw connection: the head, then `chunks` one by one until the server answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1"))
        await writer.drain()
        answer = asyncio.create_task(_read_reply(reader))
        sent = 0
        for chunk in chunks:
            await asyncio.sleep(pause)  # the server reads each piece before the next: nothing left unread
            if answer.done():
                break
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
        status, headers, body = await asyncio.wait_for(answer, 30)
        return Reply(status, headers, body, sent)
    finally:
        writer.close()
        await writer.wait_closed()


def post_head(path: str, *, length: int | None = None, token: str | None = None) -> str:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return "\r\n".join(lines) + "\r\n\r\n"


def chunked(total: int, size: int = 64 * 1024) -> list[bytes]:
    return [b"%x\r\n%s\r\n" % (size, b" " * size) for _ in range(total // size)]


# -- integer parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/api/v1/events", "limit", "9" * 40),
        ("/api/v1/events", "limit", str(MAX_ROWS + 1)),
        ("/api/v1/events", "after", str(INT64_MAX + 1)),
        ("/api/v1/stream", "after", "9" * 5000),
        (f"/api/v1/canaries/{KEY}/history", "limit", "9" * 40),
        (f"/api/v1/workloads/{KEY}/logs", "tail", "9" * 40),
    ],
)
async def test_an_integer_out_of_range_is_400_naming_the_parameter_and_range(
    api: httpx.AsyncClient, path: str, name: str, value: str
) -> None:
    r = await api.get(path, params={name: value})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith(f"{name}: expected an integer from 0 to "), error
    assert len(error) < 200  # the 5,000 digits are not echoed back


async def test_the_largest_allowed_values_are_served(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/v1/events", params={"limit": MAX_ROWS})).status_code == 200
    r = await api.get("/api/v1/events", params={"after": INT64_MAX})
    assert r.status_code == 200 and r.json()["items"] == []
    assert (await api.get(f"/api/v1/workloads/{KEY}/logs", params={"tail": MAX_ROWS})).status_code == 200


async def test_a_huge_last_event_id_is_400(api: httpx.AsyncClient) -> None:
    r = await api.get("/api/v1/stream", headers={"Last-Event-ID": "9" * 100})
    assert r.status_code == 400 and r.json()["error"].startswith("after: expected an integer from 0 to")


async def test_an_unknown_log_group_is_400_naming_the_choices(api: httpx.AsyncClient) -> None:
    r = await api.get(f"/api/v1/workloads/{KEY}/logs", params={"group": "both"})
    assert r.status_code == 400 and r.json()["error"] == "group: expected one of primary, canary, got 'both'"


# -- JSON nested 100,000 deep ----------------------------------------------------------------------------

DEEP_LIST = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECT = b'{"context": ' + b'{"a": ' * DEEP + b"1" + b"}" * DEEP + b"}"


@pytest.mark.parametrize("body", [DEEP_LIST, DEEP_OBJECT], ids=["list", "object"])
@pytest.mark.parametrize(
    ("path", "needs_token", "says"),
    [
        ("/loadtester/", True, "not JSON"),
        ("/loadtester/gate/check", False, "not JSON"),
        ("/loadtester/rollback/check", False, "not JSON"),
        ("/loadtester/gate/open", True, "not JSON"),
        ("/ofrep/v1/evaluate/flags/color", False, "INVALID_CONTEXT"),
        ("/ofrep/v1/evaluate/flags", False, "INVALID_CONTEXT"),
        ("/api/v1/flags/color/disable", True, "body: not JSON"),
    ],
)
async def test_json_nested_100000_deep_is_400(
    served: Served, api: httpx.AsyncClient, body: bytes, path: str, needs_token: bool, says: str
) -> None:
    headers = {"Content-Type": "application/json", **(served.auth if needs_token else {})}
    r = await api.post(path, content=body, headers=headers)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert says in r.text
    assert served.rig.server is not None and not served.rig.server.controller.kill_switch.killed()


async def test_a_deep_context_in_the_query_is_400(api: httpx.AsyncClient) -> None:
    depth = 5_000  # deeper than the stack allows json.loads; percent-encoded, it fits under the head cap
    r = await api.get("/api/v1/flags/color/evaluate", params={"context": "[" * depth + "]" * depth})
    assert r.status_code == 400 and r.json()["error"].startswith("context: not JSON")


# -- body caps -------------------------------------------------------------------------------------------


async def test_an_unknown_receiver_path_is_404_without_reading_the_body(served: Served) -> None:
    # 1 MiB announced and never sent: the answer comes all the same.
    r = await exchange(served.rig.api_port, post_head("/hook/nothing", length=MAX_BODY))
    assert r.status == 404 and r.json() == {"error": "no receiver at this path"}


@pytest.mark.parametrize(
    "path", ["/hook/nothing", HOOK_PATH, "/api/v1/reconcile", "/loadtester/", "/nowhere"]
)
async def test_a_body_announced_over_its_cap_is_413_before_any_of_it_is_read(
    served: Served, path: str
) -> None:
    r = await exchange(served.rig.api_port, post_head(path, length=256 * 1024 * 1024, token=served.token))
    assert r.status == 413 and r.headers["connection"] == "close"
    cap = MAX_HOOK_BODY if path.startswith("/hook/") else MAX_BODY
    assert r.json() == {"error": f"the request body is over {cap} bytes"}


@pytest.mark.parametrize(
    ("path", "cap"),
    [
        ("/loadtester/", MAX_BODY),
        ("/ofrep/v1/evaluate/flags/color", MAX_BODY),
        ("/api/v1/flags/color/disable", MAX_BODY),
        (HOOK_PATH, MAX_HOOK_BODY),
    ],
)
async def test_a_streamed_body_is_cut_off_at_its_cap(served: Served, path: str, cap: int) -> None:
    chunks = chunked(2 * cap)
    r = await exchange(served.rig.api_port, post_head(path, token=served.token), chunks)
    assert r.status == 413, r.body[:300]
    assert str(cap) in r.body.decode()
    assert cap < r.sent <= cap + 2 * len(chunks[0])  # answered at the cap, not at the end of the body
    assert served.rig.server is not None and not served.rig.server.controller.kill_switch.killed()


async def test_a_body_under_the_cap_is_read(served: Served, api: httpx.AsyncClient) -> None:
    r = await api.post("/ofrep/v1/evaluate/flags/color", content=b" " * (MAX_BODY - 100) + b"{}")
    assert r.status_code == 200 and r.json()["value"] == "red"


# -- header cap ------------------------------------------------------------------------------------------


async def test_a_2_mb_header_is_431_once_past_the_cap(served: Served, api: httpx.AsyncClient) -> None:
    head = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
    pieces = [b"a" * 8192] * (2 * 1024 * 1024 // 8192)
    r = await exchange(served.rig.api_port, head, pieces)
    assert r.status == 431 and r.json() == {
        "error": f"the request line and headers are over {MAX_HEAD} bytes"
    }
    assert r.sent <= MAX_HEAD + 2 * 8192  # refused as the cap passed, not after 2 MB
    assert (await api.get("/healthz")).text == "ok"  # the server serves on


async def test_headers_under_the_cap_are_served(api: httpx.AsyncClient) -> None:
    r = await api.get("/healthz", headers={"X-Big": "a" * (MAX_HEAD - 1024)})
    assert r.status_code == 200 and r.text == "ok"


# -- the load tester's switches --------------------------------------------------------------------------

CANARY_BODY = {"name": "web", "namespace": "e2e"}


@pytest.mark.parametrize("switch", ["gate", "rollback"])
async def test_the_load_tester_switches_need_the_token(
    served: Served, api: httpx.AsyncClient, switch: str
) -> None:
    check = f"/loadtester/{switch}/check"
    for verb in ("open", "close"):
        r = await api.post(f"/loadtester/{switch}/{verb}", json=CANARY_BODY)
        assert r.status_code == 401 and "token" in r.json()["error"]
        wrong = await api.post(
            f"/loadtester/{switch}/{verb}", json=CANARY_BODY, headers={"Authorization": "Bearer x"}
        )
        assert wrong.status_code == 403
        assert (await api.post(check, json=CANARY_BODY)).status_code == 403  # still closed
    assert (
        await api.post(f"/loadtester/{switch}/open", json=CANARY_BODY, headers=served.auth)
    ).status_code == 202
    assert (await api.post(check, json=CANARY_BODY)).status_code == 200  # checks stay open to webhooks
    assert (await api.get(check, params=CANARY_BODY)).status_code in (200, 403)
    assert (
        await api.post(f"/loadtester/{switch}/close", json=CANARY_BODY, headers=served.auth)
    ).status_code == 202
    assert (await api.post(check, json=CANARY_BODY)).status_code == 403


async def test_load_tester_tasks_need_the_token_and_checks_do_not(
    served: Served, api: httpx.AsyncClient
) -> None:
    task = {**CANARY_BODY, "metadata": {"type": "bash", "cmd": "touch /tmp/never"}}
    r = await api.post("/loadtester/", json=task)
    assert r.status_code == 401
    assert (await api.post("/loadtester/", json=task, headers=served.auth)).status_code == 403  # exec is off
    assert (await api.get("/loadtester/healthz")).text == "OK"
    assert (await api.post("/loadtester/gate/approve", json=CANARY_BODY)).status_code == 200
    assert (await api.get("/loadtester/gate/halt")).status_code == 403


async def test_the_controllers_own_hook_headers_open_the_gate(served: Served, api: httpx.AsyncClient) -> None:
    assert served.rig.server is not None
    headers_for = served.rig.server.hook_headers
    url = f"{served.rig.api}/loadtester/gate/open"
    r = await api.post(url, json=CANARY_BODY, headers=headers_for(url))
    assert r.status_code == 202
    assert (await api.post("/loadtester/gate/check", json=CANARY_BODY)).status_code == 200
    close = f"http://localhost:{served.rig.api_port}/loadtester/gate/close"
    assert (await api.post(close, json=CANARY_BODY, headers=headers_for(close))).status_code == 202


async def test_own_hook_headers_go_only_to_this_apis_load_tester() -> None:
    headers_for = own_hook_headers("http://127.0.0.1:8470", "tok")
    mine = {"Authorization": "Bearer tok"}
    for url in (
        "http://127.0.0.1:8470/loadtester/",
        "http://localhost:8470/loadtester/gate/open",
        "http://LOCALHOST:8470/loadtester/rollback/close",
    ):
        assert headers_for(url) == mine, url
    for url in (
        "http://127.0.0.1:8471/loadtester/",  # another port
        "http://127.0.0.2:8470/loadtester/",  # another loopback address: maybe another server
        "http://example.com:8470/loadtester/",
        "https://127.0.0.1:8470/loadtester/",
        "http://127.0.0.1:8470/api/v1/reconcile",  # the API itself: not a webhook's business
        "http://127.0.0.1:8470/loadtesterx",
        "http://u:p@127.0.0.1:8470/loadtester/",
        "http://127.0.0.1:8470@example.com/loadtester/",
        "not a url",
    ):
        assert headers_for(url) == {}, url
    assert own_hook_headers("http://0.0.0.0:80", "t")("http://127.0.0.1/loadtester/") == {
        "Authorization": "Bearer t"
    }
    assert own_hook_headers("http://[::1]:8470", "t")("http://[::1]:8470/loadtester/") == {
        "Authorization": "Bearer t"
    }
