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

import json
import math
import time
from collections.abc import Mapping
from typing import Any, Unpack

from botocore.auth import SigV4Auth  # type: ignore[import-untyped]
from botocore.awsrequest import AWSRequest  # type: ignore[import-untyped]
from botocore.credentials import Credentials  # type: ignore[import-untyped]

from rheostat.model.metric_template import MetricProviderSpec
from rheostat.plugins.http_limits import Reply
from rheostat.plugins.metrics.base import MetricProvider, MetricQuery, NoData, ProviderError
from rheostat.plugins.metrics.http_query import (
    HttpApi,
    HttpOptions,
    address_problems,
    finite,
    json_answer,
    needs_text,
    one_line,
    short,
    turn_page,
)
from rheostat.plugins.metrics.sources import Problem, SourceContext

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
        clock: Any = time.time,
        **http: Unpack[HttpOptions],
    ) -> None:
        self.region = region
        self.api = HttpApi("CloudWatch", address or endpoint(region), **http)
        self.credentials = credentials
        self.clock = clock

    def __repr__(self) -> str:
        return f"CloudWatchProvider({self.region!r}, {self.api.address!r})"

    async def query(self, q: MetricQuery) -> float:
        return await self.value(needs_text(q, "CloudWatch runs MetricDataQueries only"), q.window_s)

    async def is_online(self) -> bool:
        """Flagger's check: an empty query answers 400 (a validation error), not 403 (not allowed)."""
        try:
            reply = await self._call(
                {"MetricDataQueries": [], "StartTime": 0, "EndTime": 0}, "[]", self.api.deadline()
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
        deadline = self.api.deadline()  # one for every page
        for _ in range(MAX_PAGES):
            answer = _answer(await self._call(body, text, deadline), text)
            results = answer.get("MetricDataResults")
            if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
                raise ProviderError(
                    f"CloudWatch answered without a MetricDataResults list; query: {one_line(text)}"
                )
            if not results:
                raise NoData(f"CloudWatch returned no result; query: {one_line(text)}")
            if len(results) > 1:
                ids = ", ".join(short(r.get("Id"), 40) for r in results[:5])
                raise ProviderError(
                    f'CloudWatch returned {len(results)} results ({ids}), not one; set "ReturnData": false '
                    f"on all but one query; query: {one_line(text)}"
                )
            result = results[0]
            status = result.get("StatusCode")
            if status in ("InternalError", "Forbidden"):
                raise ProviderError(
                    f"CloudWatch returned {status} for {short(result.get('Id'), 40)}{_messages(result)}; "
                    f"query: {one_line(text)}"
                )
            values = result.get("Values", [])
            if not isinstance(values, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values
            ):
                raise ProviderError(
                    f"CloudWatch returned Values that are not numbers; query: {one_line(text)}"
                )
            if values:
                return finite(float(values[0]), one_line(text), "CloudWatch")
            if not turn_page(answer, "NextToken", body, "NextToken"):
                break
        raise NoData(f"CloudWatch returned no data points{_messages(result)}; query: {one_line(text)}")

    async def _call(self, payload: dict[str, Any], text: str, deadline: float) -> Reply:
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = self.credentials.sign(self.api.address + "/", body, self.region)
        return await self.api.send("POST", "/", one_line(text), until=deadline, content=body, headers=headers)


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
    return json_answer(reply, "CloudWatch", one_line(text), _error_text)


def _error_text(body: dict[str, Any]) -> str:
    kind = short(body.get("__type", "error"), 120).rpartition("#")[2]
    return f"{kind}: {short(body.get('message', body.get('Message', '')))}"


def _messages(result: Mapping[str, Any]) -> str:
    messages = result.get("Messages")
    if not isinstance(messages, list) or not messages:
        return ""
    shown = [
        f"{short(m.get('Code'), 40)}: {short(m.get('Value'), 120)}"
        for m in messages[:3]
        if isinstance(m, dict)
    ]
    return f" ({'; '.join(shown)})" if shown else ""


class CloudWatchKind:
    """`provider.type: cloudwatch`: a region, and AWS credentials in the controller's environment."""

    name = "cloudwatch"

    def problems(self, spec: MetricProviderSpec) -> list[Problem]:
        found: list[Problem] = []
        if not spec.region:
            found.append(("region", "CloudWatch needs the region of the metrics (e.g. eu-west-1)"))
        return found + address_problems(spec.address)

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
