"""Benchmark: the admission webhook over TLS with Gatekeeper's whole general library loaded.

A real WebhookServer (uvicorn, TLS with the certificate it made) on 127.0.0.1; AdmissionReview v1 requests of
every sample object of the library, one at a time, from a bare HTTP/1.1 client verifying with the webhook's CA: over
kept-alive connections (as the API server calls webhooks) and with a new TLS connection per request; then
`Admission.decide` in process (no HTTP), and the requests again with no policy loaded (HTTP and TLS alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.policy_admission import LIBRARY, load
from rheostat.gitops.gate import PolicyGate
from rheostat.model.policy import is_policy
from rheostat.policy.suites import find_cases
from rheostat.reactor.settings import WebhookSettings
from rheostat.server.certs import service_names
from rheostat.server.webhook import WebhookServer
from rheostat.server.webhook_tls import FileKeeper, WebhookTLS
from rheostat.store import Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def library_docs() -> list[dict[str, Any]]:
    """The templates and constraints the engine accepts (bench/policy_admission.py's choice)."""
    _, _, refused = load()
    docs: dict[tuple[str, str], dict[str, Any]] = {}
    for case in find_cases(LIBRARY):
        for path in (case.template, case.constraint):
            for d in yaml.safe_load_all(path.read_text()):
                if d and is_policy(d):
                    docs[(d["kind"], d["metadata"]["name"])] = d
    refused_kinds = {
        d["spec"]["crd"]["spec"]["names"]["kind"]
        for d in docs.values()
        if d["kind"] == "ConstraintTemplate" and d["metadata"]["name"] in refused
    }
    return [
        d for d in docs.values() if d["metadata"]["name"] not in refused and d["kind"] not in refused_kinds
    ]


def reviews() -> list[dict[str, Any]]:
    out = []
    for case in find_cases(LIBRARY):
        for obj in yaml.safe_load_all(case.object.read_text()):
            if not obj:
                continue
            group, _, version = str(obj["apiVersion"]).rpartition("/")
            meta = obj.get("metadata") or {}
            out.append(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {
                        "uid": "",
                        "kind": {"group": group, "version": version, "kind": obj["kind"]},
                        "name": meta.get("name", ""),
                        "namespace": meta.get("namespace", ""),
                        "operation": "CREATE",
                        "userInfo": {"username": "bench"},
                        "object": obj,
                    },
                }
            )
    return out


async def measure(rounds: int) -> dict[str, Any]:
    docs = library_docs()
    with tempfile.TemporaryDirectory(prefix="rheostat-bench-") as tmp:
        store = Store(Path(tmp) / "state.db")
        with store.transaction():
            for d in docs:
                store.put_object(d["kind"], d["metadata"]["name"], d, source="bench")
        gate = PolicyGate(store)
        settings = WebhookSettings(port=_free_port())
        tls = WebhookTLS(
            FileKeeper(Path(tmp) / "tls"),
            managed=True,
            names=service_names("rheostat-webhook", "x"),
            ips=["127.0.0.1"],
        )
        server = WebhookServer(settings, store, gate, tls)
        await server.start()
        assert tls.bundle is not None
        verify = ssl.create_default_context(cadata=tls.bundle.ca_crt.decode())
        bodies = reviews()
        results: dict[str, Any] = {"constraints": sum(1 for d in docs if d["kind"] != "ConstraintTemplate")}
        try:
            inproc: list[float] = []
            server.admission.decide(bodies[0]["request"])  # warm: the policies compile at the first request
            for _ in range(rounds):
                for body in bodies:
                    t0 = time.perf_counter()
                    server.admission.decide(body["request"])
                    inproc.append((time.perf_counter() - t0) * 1000)
            inproc.sort()
            results["in process"] = {
                "requests": len(inproc),
                "denied": None,
                "p50_ms": statistics.median(inproc),
                "p99_ms": inproc[int(0.99 * (len(inproc) - 1))],
            }
            for name, keepalive in (("kept-alive", True), ("new TLS connection", False)):
                results[name] = await over_http(settings.port, verify, bodies, rounds, keepalive)
            with store.transaction():  # the same requests without policies: what HTTP and TLS cost alone
                for d in docs:
                    store.delete_object(d["kind"], d["metadata"]["name"])
            results["kept-alive, no policies"] = await over_http(settings.port, verify, bodies, rounds, True)
        finally:
            await server.stop()
            store.close()
    return results


class Connection:
    """A bare HTTP/1.1 client over TLS: what the API server's Go client costs is not Python's. (httpx spends
    more per request than the webhook's HTTP handling does: it looks for an async library on every call.)"""

    def __init__(self, port: int, verify: ssl.SSLContext) -> None:
        self.port = port
        self.verify = verify
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.verify, server_hostname="127.0.0.1"
            )
        reader, writer = self.streams
        writer.write(
            b"POST /admission/validate HTTP/1.1\r\nHost: rheostat-webhook\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await reader.readexactly(length)

    async def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                await self.streams[1].wait_closed()
            self.streams = None


async def over_http(
    port: int, verify: ssl.SSLContext, bodies: list[dict[str, Any]], rounds: int, keepalive: bool
) -> dict[str, Any]:
    latencies: list[float] = []
    denied = 0
    conn = Connection(port, verify)
    await conn.post(json.dumps(bodies[0]).encode())  # warm: the policies compile at the first request
    for _ in range(rounds):
        for body in bodies:
            body["request"]["uid"] = str(uuid.uuid4())
            data = json.dumps(body).encode()
            if not keepalive:
                await conn.close()
            t0 = time.perf_counter()
            status, answer = await conn.post(data)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert status == 200, answer
            denied += not json.loads(answer)["response"]["allowed"]
    await conn.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "denied": denied,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
    }


def main() -> dict[str, Any] | None:
    if not LIBRARY.is_dir():
        print(f"(skipped: the Gatekeeper library is not at {LIBRARY})")
        return None
    r = asyncio.run(measure(rounds=5))
    print(f"webhook over TLS, {r['constraints']} constraints of Gatekeeper's general library\n")
    print("| how | requests | denied | p50 | p99 |")
    print("|---|---|---|---|---|")
    for name in ("kept-alive", "new TLS connection", "in process", "kept-alive, no policies"):
        m = r[name]
        denied = "" if m["denied"] is None else m["denied"]
        print(f"| {name} | {m['requests']} | {denied} | {m['p50_ms']:.2f} ms | {m['p99_ms']:.2f} ms |")
    return r


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
