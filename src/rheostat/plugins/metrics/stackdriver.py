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
from collections.abc import Mapping
from typing import Any, Unpack

import google.auth
import google.auth.compute_engine
import google.auth.credentials
import google.auth.exceptions
import google.auth.transport
import google.oauth2.service_account
import httpx

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import Reply
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.http_query import (
    HttpApi,
    HttpOptions,
    address_problems,
    json_answer,
    judged,
    left,
    needs_text,
    one_line,
    short,
    turn_page,
)
from rheostat.plugins.metrics.prometheus import Auth, PrometheusProvider
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

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
        **http: Unpack[HttpOptions],
    ) -> None:
        self.project = project
        self.api = HttpApi("Cloud Monitoring", address or API, **http)
        self.promql = self.api.address.endswith("/prometheus")
        self.token = token

    def __repr__(self) -> str:
        return f"StackdriverProvider({self.project!r}, {self.api.address!r})"

    async def query(self, q: MetricQuery) -> float:
        return await self.value(needs_text(q, "Cloud Monitoring runs MQL or PromQL only"))

    async def is_online(self) -> bool:
        """Flagger's check: an empty query is refused as invalid (400), not as unauthorised."""
        deadline = self.api.deadline()
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
        deadline = self.api.deadline()
        if self.promql:
            return await self._prometheus(await self._token(text, deadline), deadline).value(text)
        body: dict[str, Any] = {"query": text}
        for _ in range(MAX_PAGES):
            answer = _answer(await self._post(body, text, deadline), text)
            series = answer.get("timeSeriesData", [])
            if not isinstance(series, list):
                raise ProviderError(
                    f"Cloud Monitoring answered a timeSeriesData that is not a list; query: {one_line(text)}"
                )
            if len(series) > 1:
                raise ProviderError(
                    f"the query returned {len(series)} time series, not one; aggregate them (group_by []); "
                    f"query: {one_line(text)}"
                )
            if series:
                return _first_point(series[0], answer.get("timeSeriesDescriptor"), text)
            if not turn_page(answer, "nextPageToken", body, "pageToken"):
                break
        raise NoData(f"the query returned no time series; query: {one_line(text)}")

    def _prometheus(self, token: str, deadline: float) -> PrometheusProvider:
        return PrometheusProvider(
            self.api.address, auth=Auth(token=token), timeout_s=left(deadline), client=self.api.client
        )

    async def _has_token(self, deadline: float) -> str | None:
        try:
            return await self._token("", deadline)
        except ProviderError:
            return None

    async def _token(self, text: str, deadline: float) -> str:
        try:
            async with asyncio.timeout_at(deadline):
                return await self.token.get(self.api.timeout_s)
        except TimeoutError:
            raise ProviderError(
                f"no Google access token within {self.api.timeout_s:g}s; query: {one_line(text)}"
            ) from None
        except google.auth.exceptions.GoogleAuthError as exc:
            # google-auth's first argument is its message (the token endpoint's error); the rest is detail
            said = exc.args[0] if exc.args and isinstance(exc.args[0], str) else type(exc).__name__
            raise ProviderError(
                f"no Google access token: {short(said, 300)}; query: {one_line(text)}"
            ) from None

    async def _post(self, body: dict[str, Any], text: str, deadline: float) -> Reply:
        headers = {"Authorization": f"Bearer {await self._token(text, deadline)}"}
        path = f"/v3/projects/{self.project}/timeSeries:query"
        return await self.api.send("POST", path, one_line(text), until=deadline, json=body, headers=headers)


def _answer(reply: Reply, text: str) -> dict[str, Any]:
    """The JSON object of a 200, or ProviderError with Google's error status and message."""
    body = json_answer(reply, "Cloud Monitoring", one_line(text), _error_text)
    if "error" in body:  # an error in an answer of 200
        said = _error_text(body)
        raise ProviderError(
            f"Cloud Monitoring answered HTTP {reply.status}{': ' + said if said else ''}; query: {one_line(text)}"
        )
    return body


def _error_text(body: dict[str, Any]) -> str | None:
    """Google's error: `{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "..."}}`."""
    error = body.get("error")
    if not isinstance(error, dict):
        return None
    return f"{short(error.get('status', 'error'), 40)}: {short(error.get('message', ''))}"


def _first_point(series: Any, descriptor: Any, text: str) -> float:
    """The first value of the series' first (newest) point: a double, or an int64 (a JSON string)."""
    points = series.get("pointData") if isinstance(series, dict) else None
    if not isinstance(points, list):
        raise ProviderError(f"Cloud Monitoring answered a series without pointData; query: {one_line(text)}")
    if not points:
        raise NoData(f"the query returned a series without points; query: {one_line(text)}")
    values = points[0].get("values") if isinstance(points[0], dict) else None
    if not isinstance(values, list) or not values or not isinstance(values[0], dict):
        raise NoData(f"the query returned a point without values; query: {one_line(text)}")
    typed = values[0]
    raw = typed.get("doubleValue", typed.get("int64Value"))  # int64 is a decimal string in JSON (proto3)
    if raw is None:
        kinds = ", ".join(short(k, 40) for k in typed)
        raise ProviderError(
            f"the query returned a {kinds or 'empty value'}, not a number; query: {one_line(text)}"
        )
    # JSON has no NaN: Google writes "NaN", "Infinity" as strings
    return judged(raw, one_line(text), "the query", strings=True)


class StackdriverKind:
    """`provider.type: stackdriver`: a secret with `project` (and optionally `serviceAccountKey`)."""

    name = "stackdriver"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        found: list[Problem] = []
        if spec.secretRef is None:
            found.append(("secretRef", "Cloud Monitoring needs a secret with the `project` id"))
        return found + address_problems(spec.address)

    def make(self, ctx: SourceContext) -> MetricProvider:
        project = (ctx.secret or {}).get("project")
        if not project:
            raise ValueError("provider.secretRef: the secret has no `project` (the Google Cloud project id)")
        key = (ctx.secret or {}).get("serviceAccountKey")
        token = GoogleToken.from_key(key) if key else GoogleToken.default(ctx.environ)
        return StackdriverProvider(project, token, address=ctx.spec.address, client=ctx.client)


KIND = StackdriverKind()
