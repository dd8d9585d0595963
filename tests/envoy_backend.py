"""A small HTTP backend for Envoy tests and the benchmark, run as its own process.

`python tests/envoy_backend.py NAME` listens on a free 127.0.0.1 port, prints it, and answers every
request with its NAME. `?status=500` and `?delay=ms` shape the reply; `/_count` tells how many requests
(other than `/_count`) it has served, so a test can see mirrored traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 drops connections under load


def serve(name: str) -> None:
    count = 0
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else keep-alive replies stall ~40 ms on delayed ACKs

        def do_GET(self) -> None:
            nonlocal count
            url = urlsplit(self.path)
            if url.path == "/_count":
                with lock:
                    body = str(count).encode()
                self._reply(200, body)
                return
            with lock:
                count += 1
            query = parse_qs(url.query)
            delay_ms = float(query.get("delay", ["0"])[0])
            if delay_ms > 0:
                time.sleep(delay_ms / 1000)
            self._reply(int(query.get("status", ["200"])[0]), name.encode())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.send_header("x-backend", name)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


class Backend:
    """A backend subprocess; `async with Backend("primary") as b:` guarantees it is stopped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> Backend:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__)), self.name, stdout=asyncio.subprocess.PIPE
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), 10)
        self.port = int(line)
        return self

    async def stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
        if self._proc is not None:
            await self._proc.communicate()
        self._proc = None

    async def __aenter__(self) -> Backend:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class KeepAliveClient:
    """A minimal HTTP/1.1 client on one keep-alive connection; far lighter than httpx for load loops."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, path: str = "/") -> tuple[int, bytes]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.connections += 1
        reader, writer = self._reader, self._writer
        writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n".encode())
        status_line = await reader.readline()
        if not status_line:
            await self.aclose()
            raise ConnectionError("connection closed before a response")
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.aclose()
        return int(status_line.split()[1]), body

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


if __name__ == "__main__":
    serve(sys.argv[1])
