"""Readiness probes: an HTTP GET of the template's path, or a TCP connect when it declares no probe."""

from __future__ import annotations

import asyncio
import contextlib

from rheostat.model.workload import ReadinessProbe

TCP_TIMEOUT_S = 1.0


async def probe(port: int, spec: ReadinessProbe | None) -> bool:
    try:
        async with asyncio.timeout(spec.timeoutSeconds if spec else TCP_TIMEOUT_S):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if spec is None:
                    return True
                writer.write(
                    f"GET {spec.path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "User-Agent: rheostat-probe\r\nConnection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    parts = status.split()
    # As Kubernetes does: any 2xx or 3xx answer means ready.
    return len(parts) >= 2 and parts[1].isdigit() and 200 <= int(parts[1]) < 400
