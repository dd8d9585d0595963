"""The logs of `rheostat run` on stderr: plain lines or one JSON object per line, warnings without tracebacks
unless `-v`, and the same warning told once in a while rather than at every tick."""

from __future__ import annotations

import datetime
import json
import logging
import sys
import time
from typing import TextIO

from rheostat.util.errors import describe_error

REPEAT_S = 300.0  # the same message from the same logger again within this is dropped


class Repeats(logging.Filter):
    """Drops a record that says exactly what was said less than `window_s` ago."""

    def __init__(self, window_s: float = REPEAT_S) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # A fault is keyed by what it says, so two places meeting the same one (a taken port: the tick and
        # the replicas' publish) make one line.
        exc = record.exc_info[1] if record.exc_info else None
        said = describe_error(exc) if exc is not None else _message(record, with_error=False)
        ident = ("", 0, said) if exc is not None else (record.name, record.levelno, said)
        now = time.monotonic()
        last = self._seen.get(ident)
        if last is not None and now - last < self.window_s:
            return False
        if len(self._seen) > 1000:  # a bound, should messages carry ever-changing numbers
            self._seen.clear()
        self._seen[ident] = now
        return True


def _message(record: logging.LogRecord, *, with_error: bool) -> str:
    """The record's message; with `with_error`, followed by what its exception says (in user terms)."""
    text = record.getMessage()
    exc = record.exc_info[1] if record.exc_info else None
    if with_error and exc is not None:
        said = describe_error(exc)
        if said not in text:
            text = f"{text}: {said}"
    return text


class TextFormatter(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        who = f" {record.name}" if self.verbose else ""
        line = f"{at} {record.levelname.lower()}{who}: {_message(record, with_error=True)}"
        if self.verbose and record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One object per line: time, level, logger, message, and kind and object where the record names them
    (`extra={"kind": ..., "object": ...}`)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _message(record, with_error=True),
        }
        for field in ("kind", "object"):
            value = getattr(record, field, None)
            if value is not None:
                body[field] = str(value)
        if self.verbose and record.exc_info:
            body["traceback"] = self.formatException(record.exc_info)
        return json.dumps(body, separators=(",", ":"))


def setup(*, verbose: bool, fmt: str, stream: TextIO | None = None) -> None:
    """Route every log record of the process through one handler on stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(verbose) if fmt == "json" else TextFormatter(verbose))
    if not verbose:
        handler.addFilter(Repeats())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("rheostat.run").setLevel(logging.INFO)  # what `run` says of itself, at any -v
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # flagd-core logs at ERROR, once per request, what a rule could not use (e.g. `fractional` without a
    # targeting key); the answer to the client already says so, and a log line per request drowns the rest.
    logging.getLogger("openfeature.contrib").setLevel(logging.CRITICAL)


def adopt_uvicorn() -> None:
    """uvicorn installs its own handlers when its server is built: send its records through ours."""
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        for old in list(lg.handlers):
            lg.removeHandler(old)
        lg.propagate = True
