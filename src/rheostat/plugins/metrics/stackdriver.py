"""Google Cloud Monitoring (Stackdriver) as a metrics provider: MetricTemplates with `provider.type: stackdriver`.

As Flagger (pkg/metrics/providers/stackdriver.go): the query is MQL, run by Cloud Monitoring's
`projects.timeSeries.query` (POST `/v3/projects/<project>/timeSeries:query`), the project is the secret's
`project`, and the check's value is the first point of the answer. Credentials: the secret's
`serviceAccountKey` (a service account's JSON key), else Google's application default credentials: the key
file named by GOOGLE_APPLICATION_CREDENTIALS, else the metadata server (Workload Identity on GKE).

google-auth (Google's maintained library) makes the OAuth 2 access token: it signs the service account's JWT
and exchanges it at the key's `token_uri`, through a transport over httpx here; the query itself is plain
httpx under one deadline. Google has deprecated MQL: with an `address` ending in `/prometheus` (Cloud
Monitoring's Prometheus API, `https://monitoring.googleapis.com/v1/projects/<project>/location/global/prometheus`)
the query is PromQL, run by the Prometheus provider with the same token.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import google.auth
import google.auth.compute_engine
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import google.oauth2.service_account
import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import BodyTooLarge, MiB, Reply, request
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.prometheus import Auth, PrometheusProvider
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 5.0
MAX_BODY = 10 * MiB
MAX_PAGES = 5  # nextPageToken pages followed while no series has come yet
API = "https://monitoring.googleapis.com"
SCOPE = "https://www.googleapis.com/auth/monitoring.read"
_CACHED: dict[str, google.auth.credentials.Credentials] = {}  # by key digest: tokens outlive one check


class _Response(google.auth.transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class HttpxRequest(google.auth.transport.Request):
    """google-auth's transport over httpx (its own are requests, urllib3 and aiohttp): used in a thread."""

    def __init__(self, timeout_s: float, verify: bool = True) -> None:
        self.timeout_s = timeout_s
        self.verify = verify

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        try:
            with httpx.Client(
                timeout=min(timeout or self.timeout_s, self.timeout_s), verify=self.verify
            ) as c:
                return _Response(c.request(method, url, content=body, headers=headers))
        except httpx.HTTPError as exc:
            raise google.auth.exceptions.TransportError(f"{network_error(exc)} at {url}") from None  # type: ignore[no-untyped-call]


class GoogleToken:
    """An access token for Cloud Monitoring, refreshed by google-auth when it expires; never shown."""

    def __init__(self, credentials: google.auth.credentials.Credentials) -> None:
        self.credentials = credentials

    @classmethod
    def from_key(cls, key_json: str) -> GoogleToken:
        digest = hashlib.sha256(key_json.encode()).hexdigest()
        if digest not in _CACHED:
            try:
                info = json.loads(key_json)
                creds = google.oauth2.service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=[SCOPE]
                )
            except (ValueError, TypeError, KeyError):
                raise ValueError(
                    "the secret's `serviceAccountKey` is not a service account's JSON key"
                ) from None
            if len(_CACHED) > 64:
                _CACHED.clear()
            _CACHED[digest] = creds
        return cls(_CACHED[digest])

    @classmethod
    def default(cls, environ: Mapping[str, str]) -> GoogleToken:
        """Application default credentials: the service account key file named by
        GOOGLE_APPLICATION_CREDENTIALS, else the metadata server (GKE's Workload Identity)."""
        path = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    return cls.from_key(f.read())
            except OSError as exc:
                raise ValueError(
                    f"GOOGLE_APPLICATION_CREDENTIALS: cannot read {path} ({exc.strerror})"
                ) from None
        return cls(google.auth.compute_engine.Credentials(scopes=[SCOPE]))  # type: ignore[no-untyped-call]

    async def get(self, timeout_s: float) -> str:
        if not self.credentials.valid:
            await asyncio.to_thread(self.credentials.refresh, HttpxRequest(timeout_s))
        token = self.credentials.token
        if not isinstance(token, str) or not token:
            raise google.auth.exceptions.RefreshError("no access token was granted")  # type: ignore[no-untyped-call]
        return token

    def __repr__(self) -> str:
        return f"GoogleToken({type(self.credentials).__name__})"


class StackdriverProvider:
    def __init__(
        self,
        project: str,
        token: GoogleToken,
        *,
        address: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.project = project
        self.address = (address or API).rstrip("/")
        if not self.address.startswith(("http://", "https://")):
            raise ValueError(f"Cloud Monitoring address must be an http(s) URL, got {self.address[:80]!r}")
        self.promql = self.address.endswith("/prometheus")
        self.token = token
        self.timeout_s = timeout_s
        self.client = client

    def __repr__(self) -> str:
        return f"StackdriverProvider({self.project!r}, {self.address!r})"

    async def query(self, q: MetricQuery) -> float:
        if q.text is None:
            raise ProviderError(f"metric {q.name!r} has no query; Cloud Monitoring runs MQL or PromQL only")
        return await self.value(q.text)

    async def is_online(self) -> bool:
        """Flagger's check: an empty query is refused as invalid (400), not as unauthorised."""
        deadline = self._deadline()
        if self.promql:
            token = await self._has_token(deadline)
            return token is not None and await self._prometheus(token, deadline).is_online()
        try:
            reply = await self._post({"query": ""}, "", deadline)
        except ProviderError:
            return False
        return reply.status in (200, 400)

    async def value(self, text: str) -> float:
        """One deadline for all of it: the token, then every page."""
        deadline = self._deadline()
        if self.promql:
            return await self._prometheus(await self._token(text, deadline), deadline).value(text)
        body: dict[str, Any] = {"query": text}
        for _ in range(MAX_PAGES):
            answer = _answer(await self._post(body, text, deadline), text)
            series = answer.get("timeSeriesData", [])
            if not isinstance(series, list):
                raise ProviderError(
                    f"Cloud Monitoring answered a timeSeriesData that is not a list; query: {_line(text)}"
                )
            if len(series) > 1:
                raise ProviderError(
                    f"the query returned {len(series)} time series, not one; aggregate them (group_by []); "
                    f"query: {_line(text)}"
                )
            if series:
                return _first_point(series[0], answer.get("timeSeriesDescriptor"), text)
            token = answer.get("nextPageToken")
            if not isinstance(token, str) or not token:
                break
            body["pageToken"] = token
        raise NoData(f"the query returned no time series; query: {_line(text)}")

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.timeout_s

    def _prometheus(self, token: str, deadline: float) -> PrometheusProvider:
        return PrometheusProvider(
            self.address, auth=Auth(token=token), timeout_s=_left(deadline), client=self.client
        )

    async def _has_token(self, deadline: float) -> str | None:
        try:
            return await self._token("", deadline)
        except ProviderError:
            return None

    async def _token(self, text: str, deadline: float) -> str:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.token.get(self.timeout_s)
        except TimeoutError:
            raise ProviderError(
                f"no Google access token within {self.timeout_s:g}s; query: {_line(text)}"
            ) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            # google-auth's first argument is its message (the token endpoint's error); the rest is detail
            said = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc).__name__
            raise ProviderError(
                f"no Google access token: {_short(said, 300)}; query: {_line(text)}"
            ) from None

    async def _post(self, body: dict[str, Any], text: str, deadline: float) -> Reply:
        url = f"{self.address}/v3/projects/{self.project}/timeSeries:query"
        headers = {"Authorization": f"Bearer {await self._token(text, deadline)}"}
        try:
            if self.client is not None:
                return await self._send(self.client, url, body, headers, deadline)
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                return await self._send(client, url, body, headers, deadline)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(
                f"Cloud Monitoring at {self.address} did not answer within {self.timeout_s:g}s; query: {_line(text)}"
            ) from None
        except BodyTooLarge as exc:
            raise ProviderError(f"Cloud Monitoring at {self.address}: {exc}; query: {_line(text)}") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise ProviderError(
                f"Cloud Monitoring at {self.address} is unreachable ({network_error(exc)}); query: {_line(text)}"
            ) from None

    async def _send(
        self,
        client: httpx.AsyncClient,
        url: str,
        body: dict[str, Any],
        headers: dict[str, str],
        deadline: float,
    ) -> Reply:
        return await request(
            client, "POST", url, deadline_s=_left(deadline), cap=MAX_BODY, json=body, headers=headers
        )


def _left(deadline: float) -> float:
    return max(0.0, deadline - asyncio.get_running_loop().time())


def _answer(reply: Reply, text: str) -> dict[str, Any]:
    """The JSON object of a 200, or ProviderError with Google's error status and message."""
    where = f"Cloud Monitoring answered HTTP {reply.status}"
    if not reply.body.strip():
        raise ProviderError(f"{where} with an empty body; query: {_line(text)}")
    try:
        body = json.loads(reply.body)
    except (ValueError, RecursionError):
        raise ProviderError(
            f"{where} with a body that is not JSON: {reply.text(80)!r}; query: {_line(text)}"
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(f"{where} with JSON that is not an object; query: {_line(text)}")
    if reply.status >= 400 or "error" in body:
        error = body.get("error")
        detail = ""
        if isinstance(error, dict):
            detail = f": {_short(error.get('status', 'error'), 40)}: {_short(error.get('message', ''), 300)}"
        raise ProviderError(f"{where}{detail}; query: {_line(text)}")
    return body


def _first_point(series: Any, descriptor: Any, text: str) -> float:
    """The first value of the series' first (newest) point: a double, or an int64 (a JSON string)."""
    points = series.get("pointData") if isinstance(series, dict) else None
    if not isinstance(points, list):
        raise ProviderError(f"Cloud Monitoring answered a series without pointData; query: {_line(text)}")
    if not points:
        raise NoData(f"the query returned a series without points; query: {_line(text)}")
    values = points[0].get("values") if isinstance(points[0], dict) else None
    if not isinstance(values, list) or not values or not isinstance(values[0], dict):
        raise NoData(f"the query returned a point without values; query: {_line(text)}")
    typed = values[0]
    raw = typed.get("doubleValue", typed.get("int64Value"))  # int64 is a decimal string in JSON (proto3)
    if raw is None:
        kinds = ", ".join(_short(k, 40) for k in typed)
        raise ProviderError(
            f"the query returned a {kinds or 'empty value'}, not a number; query: {_line(text)}"
        )
    value = _number(raw)
    if value is None:
        raise ProviderError(f"Cloud Monitoring returned a value that is not a number; query: {_line(text)}")
    if not math.isfinite(value):  # JSON has no NaN: Google writes "NaN", "Infinity" as strings
        raise ProviderError(
            f"the query returned {_short(raw, 20)}, not a number to judge; query: {_line(text)}"
        )
    return value


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def _short(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else f"<{type(value).__name__}>"


def _line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class StackdriverKind:
    """`provider.type: stackdriver`: a secret with `project` (and optionally `serviceAccountKey`)."""

    name = "stackdriver"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        found: list[Problem] = []
        if spec.secretRef is None:
            found.append(("secretRef", "Cloud Monitoring needs a secret with the `project` id"))
        if spec.address is not None and not spec.address.startswith(("http://", "https://")):
            found.append(("address", f"must be an http(s) URL, got {spec.address[:80]!r}"))
        return found

    def make(self, ctx: SourceContext) -> MetricProvider:
        project = (ctx.secret or {}).get("project")
        if not project:
            raise ValueError("provider.secretRef: the secret has no `project` (the Google Cloud project id)")
        key = (ctx.secret or {}).get("serviceAccountKey")
        token = GoogleToken.from_key(key) if key else GoogleToken.default(ctx.environ)
        return StackdriverProvider(project, token, address=ctx.spec.address, client=ctx.client)


KIND = StackdriverKind()
