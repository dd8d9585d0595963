"""Query parameters read strictly: a malformed one is a ValueError naming the field, which the API answers
with 400 and a JSON error."""

from __future__ import annotations

from starlette.requests import Request


def query_int(request: Request, name: str, default: int, *, minimum: int = 0) -> int:
    """The integer query parameter `name`, or `default` when it is absent."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return value


__all__ = ["query_int"]
