"""What the HTTP metric providers share: one exchange under a deadline for the whole of it, its failures
(timeout, unreachable, too large) and its answer's (an HTTP error, refused credentials, an empty body, not
JSON, JSON of the wrong shape) said the same way, with the provider's name, the status, the provider's own
words cut short and the query; credentials never in a message, whatever the server echoes back; and the
checks of a template's address and secret.

Each provider keeps what is its own: the request's shape, where its answer says what went wrong, and how
its answer is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit, urlunsplit

import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import BodyTooLarge, MiB, Reply, request
from rheostat.plugins.metrics.base import MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 5.0  # Flagger's for most providers
MAX_BODY = 10 * MiB  # one query's answer; past this it is a failed check, not memory spent
HTTP = ("http", "https")

NOT_JSON: Any = object()  # what `parsed` gives for a body that is not JSON (JSON's null is None)


# -- values of an answer, for messages ----------------------------------------------------------------------


def short(value: Any, limit: int = 300) -> str:
    """A field of an answer for a message: strings cut short, anything else by its type only."""
    if isinstance(value, str):
        return value[:limit] + ("..." if len(value) > limit else "")
    return f"<{type(value).__name__}>"


def shown(value: Any) -> str:
    """A value that should have been a number, for a message: a string quoted and cut, else its type."""
    return repr(short(value, 40)) if isinstance(value, str) else f"a {type(value).__name__}"


def one_line(text: str, limit: int = 200) -> str:
    """A query written over several lines (JSON, MQL, SignalFlow), for a message."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def number(value: Any, *, strings: bool = False) -> float | None:
    """A JSON number as a float (and, with `strings`, a number written as a string); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if strings and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return float(value)
    return None


def infinite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def finite(value: float, text: str, who: str = "the query") -> float:
    """`value`, or ProviderError: NaN and infinities are nothing to judge a check on."""
    if not math.isfinite(value):
        raise ProviderError(f"{who} returned {infinite(value)}, not a number to judge; query: {text}")
    return value


def judged(raw: Any, text: str, who: str, *, what: str = "a value", strings: bool = False) -> float:
    """An answer's value as the number to judge; ProviderError when it is not a number, or not finite."""
    value = number(raw, strings=strings)
    if value is None:
        raise ProviderError(f"{who} returned {what} that is not a number ({shown(raw)}); query: {text}")
    return finite(value, text, who)


# -- credentials --------------------------------------------------------------------------------------------


def redact(text: str, secrets: Collection[str]) -> str:
    """`text` with every credential replaced by `***` (a server may quote a key back in its error)."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:  # a shorter value would blank out ordinary words, and is no secret
            text = text.replace(secret, "***")
    return text


def secret_values(ctx: SourceContext, *keys: str) -> list[str]:
    """Credentials from the template's secret, by key; ValueError naming a key (never its value)."""
    if ctx.secret is None:
        raise ValueError(f"{ctx.spec.type} needs provider.secretRef: a Secret with `{keys[0]}`")
    values = [(ctx.secret.get(key) or "").strip() for key in keys]  # `echo key | base64` leaves a newline
    for key, value in zip(keys, values, strict=True):
        if not value:
            raise ValueError(f"the secret named by provider.secretRef has no `{key}`")
    return values


# -- a template's fields ------------------------------------------------------------------------------------


def address_problems(
    address: str | None,
    *,
    required: str | None = None,
    bare: bool = False,
    credentials: bool = True,
    schemes: tuple[str, ...] = HTTP,
) -> list[Problem]:
    """A URL of `schemes` with a host; `bare`: nothing after the path (the provider appends its API's);
    `credentials`: whether user:password@ may stand in it. `required` says what to set when it is not."""
    if not address:
        return [("address", required)] if required else []
    try:
        parts = urlsplit(address)
        hostname = parts.hostname
    except ValueError:
        parts, hostname = None, None
    if parts is None or parts.scheme not in schemes or not hostname:
        return [("address", f"must be an http(s) URL, got {address[:80]!r}")]
    if bare and (parts.query or parts.fragment):
        return [("address", f"must be a base URL without a query or fragment, got {address[:80]!r}")]
    if not credentials and (parts.username or parts.password):
        return [("address", "must not carry credentials: they belong in the secret named by secretRef")]
    return []


def api_problems(spec: MetricProviderSpec, keys: str, *, required: str | None = None) -> list[Problem]:
    """A SaaS API's: its address, nothing after the path and no credentials in it; a secret with `keys`."""
    found = address_problems(spec.address, required=required, bare=True, credentials=False)
    if spec.secretRef is None:
        found.append(("secretRef", f"must name a Secret with {keys}: the credentials are read from it only"))
    return found


# -- the exchange -------------------------------------------------------------------------------------------


@functools.cache
def tls_context(insecure_skip_verify: bool) -> ssl.SSLContext:
    """Made once: building a TLS context (loading the CA bundle) for every query was most of a busy
    controller's CPU (bench/kube_scale.py: 91% with 500 canaries in analysis)."""
    return httpx.create_ssl_context(verify=not insecure_skip_verify)  # what httpx makes by default


@contextlib.contextmanager
def exchange_errors(
    where: str, timeout_s: float, text: str, *, late: str = "did not answer"
) -> Iterator[None]:
    """An exchange's failures as ProviderError: past the deadline, too large, or no exchange at all."""
    try:
        yield
    except (TimeoutError, httpx.TimeoutException):
        raise ProviderError(f"{where} {late} within {timeout_s:g}s; query: {text}") from None
    except BodyTooLarge as exc:
        raise ProviderError(f"{where}: {exc}; query: {text}") from None
    except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
        raise ProviderError(f"{where} is unreachable ({network_error(exc)}); query: {text}") from None


class HttpOptions(TypedDict, total=False):
    """How a provider reaches its API: every HTTP provider's keyword arguments."""

    timeout_s: float  # for the whole exchange
    headers: Mapping[str, list[str]] | None  # the template's `headers`, sent with every request
    insecure_skip_verify: bool
    client: httpx.AsyncClient | None
    transport: httpx.AsyncBaseTransport | None


def template_options(ctx: SourceContext) -> HttpOptions:
    """What a template says of how to reach its server: its `headers`, and the controller's client for its
    `insecureSkipVerify`."""
    return {
        "headers": ctx.spec.headers,
        "insecure_skip_verify": bool(ctx.spec.insecureSkipVerify),
        "client": ctx.client,
    }


class HttpApi:
    """One provider's HTTP API at `address`: exchanges under the deadline, their failures as ProviderError.

    A long-lived caller (the controller) passes a client it owns, so queries reuse its connections; without
    one, each exchange has its own (and nothing is left open)."""

    def __init__(
        self,
        name: str,
        address: str,
        *,
        keys: str | None = None,
        error_text: Callable[[dict[str, Any]], str | None] = lambda body: None,
        secrets: Collection[str | None] = (),
        schemes: tuple[str, ...] = ("http://", "https://"),
        **options: Unpack[HttpOptions],
    ) -> None:
        if not address.startswith(schemes):
            raise ValueError(f"{name} address must be an http(s) URL, got {address[:80]!r}")
        self.name = name
        self.address = address.rstrip("/")
        self.shown = _without_secrets(self.address)
        self.where = f"{name} at {self.shown}"
        self.keys = keys  # how the secret names the credentials, for "refused" messages
        self.error_text = error_text  # the provider's own words in an error answer
        self.secrets = [secret for secret in secrets if secret]  # never in a message
        self.timeout_s = options.get("timeout_s", DEFAULT_TIMEOUT_S)
        self.headers = [(k, v) for k, values in (options.get("headers") or {}).items() for v in values]
        self.insecure_skip_verify = options.get("insecure_skip_verify", False)
        self.client = options.get("client")
        self.transport = options.get("transport")

    async def redacted(self, query: Awaitable[float]) -> float:
        """The query's value; any message it ends with redacted of the credentials (a server may quote them)."""
        try:
            return await query
        except ProviderError as exc:
            raise ProviderError(redact(str(exc), self.secrets)) from None
        except NoData as exc:
            raise NoData(redact(str(exc), self.secrets)) from None

    def session(self) -> contextlib.AbstractAsyncContextManager[httpx.AsyncClient]:
        """The shared client (left open), or one for this exchange."""
        if self.client is not None:
            return contextlib.nullcontext(self.client)
        return httpx.AsyncClient(
            timeout=self.timeout_s, verify=tls_context(self.insecure_skip_verify), transport=self.transport
        )

    def deadline(self) -> float:
        """The provider's timeout from now, on the event loop's clock: for exchanges that share one."""
        return asyncio.get_running_loop().time() + self.timeout_s

    async def send(
        self, method: str, path: str, text: str, *, until: float | None = None, **kwargs: Any
    ) -> Reply:
        """`method` on the address + `path`, the whole exchange within the provider's timeout (or by `until`,
        a `deadline()` that several exchanges share); ProviderError naming the query `text` when there is
        no answer."""
        headers = httpx.Headers(self.headers)
        headers.update(kwargs.pop("headers", None) or {})
        with exchange_errors(self.where, self.timeout_s, text):
            async with self.session() as client:
                return await request(
                    client,
                    method,
                    f"{self.address}{path}",
                    deadline_s=self.timeout_s if until is None else left(until),
                    cap=MAX_BODY,
                    headers=headers,
                    **kwargs,
                )

    async def json(self, method: str, path: str, text: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON object of an answer below 400 (see `json_answer`)."""
        reply = await self.send(method, path, text, **kwargs)
        return json_answer(reply, self.name, text, self.error_text, keys=self.keys)


def left(deadline: float) -> float:
    """Seconds until a `deadline()`."""
    return max(0.0, deadline - asyncio.get_running_loop().time())


def turn_page(answer: Mapping[str, Any], field: str, body: dict[str, Any], param: str) -> bool:
    """Whether the answer's `field` says more pages follow; if so, the next request's `param` asks for them."""
    token = answer.get(field)
    if not isinstance(token, str) or not token:
        return False
    body[param] = token
    return True


def _without_secrets(address: str) -> str:
    """The address for messages: without what may be secret in it (user:password@, a query, a fragment)."""
    try:
        parts = urlsplit(address)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return address.partition("?")[0]
    return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


def needs_text(q: MetricQuery, why: str) -> str:
    """The template's query: a provider of this kind has no builtin checks."""
    if q.text is None:
        raise ProviderError(f"metric {q.name!r} has no query; {why}")
    return q.text


async def succeeds(call: Awaitable[object]) -> bool:
    """Whether the call ends without ProviderError (an `is_online` check)."""
    try:
        await call
    except ProviderError:
        return False
    return True


# -- the answer ---------------------------------------------------------------------------------------------


def parsed(reply: Reply) -> Any:
    """The answer's JSON value, or NOT_JSON."""
    if reply.body.strip():
        with contextlib.suppress(ValueError, RecursionError):
            return json.loads(reply.body)
    return NOT_JSON


def refuse_errors(reply: Reply, name: str, text: str, said: str | None, *, keys: str | None = None) -> None:
    """ProviderError for an error status (400 and above): the provider's own words (`said`), else the start
    of the body. With `keys` (how the secret names the credentials), 401 and 403 say they were refused."""
    detail = f": {short(said)}" if said else ""
    if keys is not None and reply.status in (401, 403):
        raise ProviderError(
            f"{name} refused the credentials (HTTP {reply.status}{detail}); "
            f"check {keys} in the secret named by provider.secretRef; query: {text}"
        )
    if reply.status >= 400:
        if not detail:
            detail = f": {reply.text(120)!r}" if reply.body.strip() else " with an empty body"
        raise ProviderError(f"{name} answered HTTP {reply.status}{detail}; query: {text}")


def json_value(
    reply: Reply, body: Any, name: str, text: str, *, kind: type = dict, what: str = "an object"
) -> Any:
    """`body` (parsed from `reply`) when it is JSON of `kind`; else ProviderError saying what it is."""
    where = f"{name} answered HTTP {reply.status}"
    if not reply.body.strip():
        raise ProviderError(f"{where} with an empty body; query: {text}")
    if body is NOT_JSON:
        raise ProviderError(f"{where} with a body that is not JSON: {reply.text(80)!r}; query: {text}")
    if not isinstance(body, kind):
        raise ProviderError(f"{where} with JSON that is not {what}; query: {text}")
    return body


def json_answer(
    reply: Reply,
    name: str,
    text: str,
    error_text: Callable[[dict[str, Any]], str | None],
    *,
    keys: str | None = None,
) -> dict[str, Any]:
    """The JSON object of an answer below 400; ProviderError for anything else, with the provider's words
    (`error_text` of an error answer's object)."""
    body = parsed(reply)
    refuse_errors(reply, name, text, error_text(body) if isinstance(body, dict) else None, keys=keys)
    result: dict[str, Any] = json_value(reply, body, name, text)
    return result
