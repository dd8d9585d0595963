"""Loopback ports for replicas: free ones from the kernel, remembered so two replicas never share one."""

from __future__ import annotations

import socket


def bindable(port: int) -> int | None:
    """Bind 127.0.0.1:port (0 = any) as servers do (SO_REUSEADDR); the port bound, or None if taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(sock.getsockname()[1])


class PortPool:
    """Ports handed to replicas of one platform. A replica keeps its port across restarts."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def take(self) -> int:
        for _ in range(100):
            port = bindable(0)
            if port is not None and port not in self._taken:
                self._taken.add(port)
                return port
        raise OSError("no free loopback port")

    def claim(self, port: int) -> None:
        """A port an adopted replica already listens on."""
        self._taken.add(port)

    def renew(self, port: int) -> int:
        """The same port if nothing else grabbed it meanwhile, otherwise a fresh one."""
        if bindable(port) is not None:
            return port
        self.release(port)
        return self.take()

    def release(self, port: int) -> None:
        self._taken.discard(port)
