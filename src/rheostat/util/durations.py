"""Go-style durations ("1m", "30s", "500ms", "1m30s"), as Kubernetes objects write them."""

from __future__ import annotations

import re

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str) -> float:
    """Seconds in `text`; ValueError names what is wrong."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected a duration such as '30s' or '1m', got {text!r}")
    pos = 0
    total = 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"expected a duration such as '30s' or '1m', got {text!r}")
    return total


def format_duration(seconds: float) -> str:
    """Shortest readable form: 90 -> '1m30s', 0.5 -> '500ms'."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")
    frac = seconds - whole
    return out if frac < 0.001 else f"{seconds:.3f}s"
