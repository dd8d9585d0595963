"""An exception said in user terms, for events and console lines: what went wrong, never a Python class name.

Rheostat's own errors (RouterError, PlatformError, FetchError, ...) already carry a sentence written for
users, so their text is used as it is. The standard library's speak Python (`KeyError('x')`,
`[Errno 98] Address already in use`); they are turned into words here. What is left (a bug) says so and
points at the log, where `-v` shows the traceback.
"""

from __future__ import annotations

import errno
import re

# Exceptions whose str() is Python-speak, and what they mean to a user.
_NO_TEXT = "an internal error with no message (run `rheostat run -v` for the traceback)"
_ERRNO_PREFIX = re.compile(r"^\[Errno \d+\]\s*")


def describe_error(exc: BaseException) -> str:
    """One line about `exc` for a person: its message without class names, Python reprs or errno codes."""
    if isinstance(exc, KeyError):
        key = exc.args[0] if exc.args else "?"
        return f"{key!s} is missing (an internal error; run `rheostat run -v` for the traceback)"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        what = exc.strerror
        if exc.errno == errno.EADDRINUSE:
            what = "the port is already in use"
        where = exc.filename if exc.filename is not None else None
        return f"{where}: {what}" if where else what
    if isinstance(exc, AssertionError | AttributeError | TypeError | IndexError | NameError):
        return f"an internal error ({_words(exc)}); run `rheostat run -v` for the traceback"
    text = " ".join(str(exc).split())  # one line
    text = _ERRNO_PREFIX.sub("", text)
    if not text and exc.__cause__ is not None:
        return describe_error(exc.__cause__)
    return text or _NO_TEXT


def _words(exc: BaseException) -> str:
    """The message of a bug's exception, without its class name."""
    text = " ".join(str(exc).split())
    return text[:200] if text else "no message"
