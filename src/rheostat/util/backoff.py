"""Waiting before trying again: 0.5 s, doubled after each failure up to 30 s, back to 0.5 s after a success."""

from __future__ import annotations

import asyncio
import logging

from rheostat.util.errors import describe_error


class Backoff:
    def __init__(self, first_s: float = 0.5, most_s: float = 30.0) -> None:
        self.first_s = first_s
        self.most_s = most_s
        self.delay_s = first_s

    def reset(self) -> None:
        """It worked (a watch event arrived): the next failure waits the shortest time again."""
        self.delay_s = self.first_s

    async def wait(self, log: logging.Logger, what: str, exc: BaseException) -> None:
        """Say what failed and when it is tried again, then wait that long."""
        log.warning("%s failed (%s); again in %.1fs", what, describe_error(exc), self.delay_s)
        await asyncio.sleep(self.delay_s)
        self.delay_s = min(self.delay_s * 2, self.most_s)
