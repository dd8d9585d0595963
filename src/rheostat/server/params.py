"""Query parameters read strictly: a malformed or out-of-range one is a ValueError naming the field and the
allowed range, which the API answers with 400 and a JSON error."""

from __future__ import annotations

import re

from starlette.requests import Request

INT64_MAX = 2**63 - 1  # SQLite's integers: an event id past it cannot exist
MAX_ROWS = 10_000  # `limit` and `tail`: an answer stays a few MiB
_DIGITS = re.compile(r"-?[0-9]{1,19}")


def parse_int(raw: str, name: str, *, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """`raw` as an integer in [minimum, maximum]; only ASCII digits with an optional sign."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        if re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(
                f"{name}: expected an integer from {minimum} to {maximum}, got {len(text)} digits"
            )
        raise ValueError(f"{name}: expected an integer, got {raw[:40]!r}")
    value = int(text)
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name}: expected an integer from {minimum} to {maximum}, got {value}")
    return value


def query_int(
    request: Request, name: str, default: int, *, minimum: int = 0, maximum: int = INT64_MAX
) -> int:
    """The integer query parameter `name`, or `default` when it is absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    return parse_int(raw, name, minimum=minimum, maximum=maximum)


__all__ = ["INT64_MAX", "MAX_ROWS", "parse_int", "query_int"]
