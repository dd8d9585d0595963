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


def json_type(value: object) -> str:
    """A value's type as JSON and YAML name it (what a user wrote), not Python's `dict` or `NoneType`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "value of another kind"


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


# httpx's transport errors by class name (util imports no HTTP client), in words. Their text is left out:
# it may carry a URL, and a URL may carry a credential.
_NETWORK = {
    "ConnectError": "cannot connect",
    "ConnectTimeout": "no connection in time",
    "ReadTimeout": "no answer in time",
    "WriteTimeout": "the request could not be sent in time",
    "PoolTimeout": "no free connection in time",
    "TimeoutException": "timed out",
    "TimeoutError": "timed out",
    "ReadError": "the connection broke while reading the answer",
    "WriteError": "the connection broke while sending the request",
    "RemoteProtocolError": "the server broke the HTTP protocol or closed the connection",
    "LocalProtocolError": "the request is not valid HTTP",
    "ProxyError": "the proxy refused the request",
    "UnsupportedProtocol": "the URL's scheme is not http or https",
    "InvalidURL": "the URL is not valid",
    "TooManyRedirects": "too many redirects",
    "DecodingError": "the answer could not be decoded",
    "UnicodeError": "the URL or a header is not valid text",
}


def network_error(exc: BaseException) -> str:
    """What an HTTP client's error means, in words; never the error's own text (see _NETWORK)."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _NETWORK:
            return _NETWORK[cls.__name__]
    return "a network error"
