"""Amazon CloudWatch as a metrics provider: MetricTemplates with `provider.type: cloudwatch`.

As Flagger (pkg/metrics/providers/cloudwatch.go): the template's query is the `MetricDataQueries` JSON array
of CloudWatch's `GetMetricData`, asked over the last 10 intervals with at most 20 points, and the check's value
is the newest point of the result. The region is `spec.provider.region`; the credentials are the environment's
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, as the AWS SDKs read them.

The call is GetMetricData over CloudWatch's AWS JSON 1.0 protocol (POST /, `X-Amz-Target`), signed with
Signature Version 4 by botocore's signer (AWS's own, maintained with the SDKs) and sent with httpx under one
deadline. A result without points is no data; several results are an error (Flagger takes the first, which is
whichever CloudWatch listed first): every query but one should say `"ReturnData": false`.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import httpx
from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import BodyTooLarge, MiB, Reply, request
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.sources import Problem, SourceContext
from rheostat.util.errors import network_error

DEFAULT_TIMEOUT_S = 5.0
MAX_BODY = 10 * MiB
MAX_PAGES = 5  # NextToken pages followed while the result has no point yet
MAX_DATAPOINTS = 20  # Flagger's
WINDOWS = 10  # Flagger asks for the last 10 metric intervals
TARGET = "GraniteServiceVersion20100801.GetMetricData"
CONTENT_TYPE = "application/x-amz-json-1.0"
SERVICE = "monitoring"  # the signing name and endpoint prefix
ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def endpoint(region: str) -> str:
    """CloudWatch's public endpoint in a region (China's regions have their own domain)."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://{SERVICE}.{region}.{domain}"


class AwsCredentials:
    """Static credentials as the SDKs read them from the environment; never shown."""

    def __init__(self, access_key: str, secret_key: str, token: str | None = None) -> None:
        self._creds = Credentials(access_key, secret_key, token or None)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AwsCredentials:
        missing = [k for k in ENV_KEYS if not environ.get(k)]
        if missing:
            raise ValueError(f"CloudWatch needs AWS credentials in the environment: {' and '.join(missing)}")
        return cls(
            environ["AWS_ACCESS_KEY_ID"], environ["AWS_SECRET_ACCESS_KEY"], environ.get("AWS_SESSION_TOKEN")
        )

    def sign(self, url: str, body: bytes, region: str) -> dict[str, str]:
        """The request's headers with SigV4's X-Amz-Date, X-Amz-Security-Token and Authorization added."""
        req = AWSRequest(
            method="POST", url=url, data=body, headers={"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET}
        )
        SigV4Auth(self._creds, SERVICE, region).add_auth(req)
        return {k: v for k, v in req.headers.items()}

    def __repr__(self) -> str:
        return "AwsCredentials(...)"


class CloudWatchProvider:
    def __init__(
        self,
        region: str,
        credentials: AwsCredentials,
        *,
        address: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
        clock: Any = time.time,
    ) -> None:
        self.region = region
        self.address = (address or endpoint(region)).rstrip("/")
        if not self.address.startswith(("http://", "https://")):
            raise ValueError(f"CloudWatch address must be an http(s) URL, got {self.address[:80]!r}")
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.client = client
        self.clock = clock

    def __repr__(self) -> str:
        return f"CloudWatchProvider({self.region!r}, {self.address!r})"

    async def query(self, q: MetricQuery) -> float:
        if q.text is None:
            raise ProviderError(f"metric {q.name!r} has no query; CloudWatch runs MetricDataQueries only")
        return await self.value(q.text, q.window_s)

    async def is_online(self) -> bool:
        """Flagger's check: an empty query answers 400 (a validation error), not 403 (not allowed)."""
        try:
            reply = await self._call(
                {"MetricDataQueries": [], "StartTime": 0, "EndTime": 0}, "[]", self._deadline()
            )
        except ProviderError:
            return False
        return reply.status in (200, 400)

    async def value(self, text: str, window_s: float) -> float:
        queries = _queries(text)
        end = self.clock()
        body: dict[str, Any] = {
            "MetricDataQueries": queries,
            "StartTime": math.floor(end - WINDOWS * max(window_s, 60.0)),
            "EndTime": math.floor(end),
            "MaxDatapoints": MAX_DATAPOINTS,
            "ScanBy": "TimestampDescending",  # the newest point first
        }
        deadline = self._deadline()  # one for every page
        for _ in range(MAX_PAGES):
            answer = _answer(await self._call(body, text, deadline), text)
            results = answer.get("MetricDataResults")
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise ProviderError(
                    f"CloudWatch answered without a MetricDataResults list; query: {_one_line(text)}"
                )
            if not results:
                raise NoData(f"CloudWatch returned no result; query: {_one_line(text)}")
            if len(results) > 1:
                ids = ", ".join(_short(r.get("Id"), 40) for r in results[:5])
                raise ProviderError(
                    f'CloudWatch returned {len(results)} results ({ids}), not one; set "ReturnData": false '
                    f"on all but one query; query: {_one_line(text)}"
                )
            result = results[0]
            status = result.get("StatusCode")
            if status in ("InternalError", "Forbidden"):
                raise ProviderError(
                    f"CloudWatch returned {status} for {_short(result.get('Id'), 40)}{_messages(result)}; "
                    f"query: {_one_line(text)}"
                )
            values = result.get("Values", [])
            if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise ProviderError(
                    f"CloudWatch returned Values that are not numbers; query: {_one_line(text)}"
                )
            if values:
                value = float(values[0])
                if not math.isfinite(value):
                    raise ProviderError(
                        f"CloudWatch returned {value}, not a number to judge; query: {_one_line(text)}"
                    )
                return value
            token = answer.get("NextToken")
            if not isinstance(token, str) or not token:
                break
            body["NextToken"] = token
        raise NoData(f"CloudWatch returned no data points{_messages(result)}; query: {_one_line(text)}")

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self.timeout_s

    async def _call(self, payload: dict[str, Any], text: str, deadline: float) -> Reply:
        body = json.dumps(payload, separators=(",", ":")).encode()
        url = self.address + "/"
        headers = self.credentials.sign(url, body, self.region)
        try:
            if self.client is not None:
                return await self._send(self.client, url, body, headers, deadline)
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                return await self._send(client, url, body, headers, deadline)
        except (TimeoutError, httpx.TimeoutException):
            raise ProviderError(
                f"CloudWatch at {self.address} did not answer within {self.timeout_s:g}s; query: {_one_line(text)}"
            ) from None
        except BodyTooLarge as exc:
            raise ProviderError(f"CloudWatch at {self.address}: {exc}; query: {_one_line(text)}") from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise ProviderError(
                f"CloudWatch at {self.address} is unreachable ({network_error(exc)}); query: {_one_line(text)}"
            ) from None

    async def _send(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], deadline: float
    ) -> Reply:
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        return await request(
            client, "POST", url, deadline_s=left, cap=MAX_BODY, content=body, headers=headers
        )


def _queries(text: str) -> list[Any]:
    """The template's MetricDataQueries: a JSON array of objects, each with an Id."""
    try:
        queries = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProviderError(
            f"the query is not JSON ({exc}); CloudWatch takes a MetricDataQueries array"
        ) from None
    if not isinstance(queries, list) or not queries or not all(isinstance(q, dict) for q in queries):
        raise ProviderError("the query must be a non-empty JSON array of MetricDataQuery objects")
    if not all(isinstance(q.get("Id"), str) for q in queries):
        raise ProviderError("every MetricDataQuery needs an `Id` string")
    return queries


def _answer(reply: Reply, text: str) -> dict[str, Any]:
    """The JSON object of a 200, or ProviderError naming AWS's error type and message."""
    where = f"CloudWatch answered HTTP {reply.status}"
    if not reply.body.strip():
        raise ProviderError(f"{where} with an empty body; query: {_one_line(text)}")
    try:
        body = json.loads(reply.body)
    except (ValueError, RecursionError):
        raise ProviderError(
            f"{where} with a body that is not JSON: {reply.text(80)!r}; query: {_one_line(text)}"
        ) from None
    if not isinstance(body, dict):
        raise ProviderError(f"{where} with JSON that is not an object; query: {_one_line(text)}")
    if reply.status >= 400:
        kind = _short(body.get("__type", "error"), 120).rpartition("#")[2]
        message = body.get("message", body.get("Message", ""))
        raise ProviderError(f"{where}: {kind}: {_short(message, 300)}; query: {_one_line(text)}")
    return body


def _messages(result: Mapping[str, Any]) -> str:
    messages = result.get("Messages")
    if not isinstance(messages, list) or not messages:
        return ""
    shown = [
        f"{_short(m.get('Code'), 40)}: {_short(m.get('Value'), 120)}"
        for m in messages[:3]
        if isinstance(m, dict)
    ]
    return f" ({'; '.join(shown)})" if shown else ""


def _short(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else f"<{type(value).__name__}>"


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


class CloudWatchKind:
    """`provider.type: cloudwatch`: a region, and AWS credentials in the controller's environment."""

    name = "cloudwatch"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        found: list[Problem] = []
        if not spec.region:
            found.append(("region", "CloudWatch needs the region of the metrics (e.g. eu-west-1)"))
        if spec.address is not None and not spec.address.startswith(("http://", "https://")):
            found.append(("address", f"must be an http(s) URL, got {spec.address[:80]!r}"))
        return found

    def make(self, ctx: SourceContext) -> MetricProvider:
        if not ctx.spec.region:
            raise ValueError("provider.region is not set; CloudWatch needs the region of the metrics")
        return CloudWatchProvider(
            ctx.spec.region,
            AwsCredentials.from_environ(ctx.environ),
            address=ctx.spec.address,
            client=ctx.client,
        )


KIND = CloudWatchKind()
