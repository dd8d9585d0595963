"""The HTTP API fuzzed from its own OpenAPI document (schemathesis) against a real server: no 5xx, answers as
the document says, and no mutating call succeeds without the token.

Bounded: a fixed seed, `EXAMPLES` valid and `EXAMPLES` invalid requests per operation, no shrinking, a
10 s timeout per request and the test's own timeout. The two event streams never end, so they are left out
(tests/test_api_hardening.py and tests/test_ofrep.py cover them)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.test_api_hardening import start_api_rig

EXAMPLES = 12
SEED = 20_170
STREAMS = {("GET", "/api/v1/stream"), ("GET", "/ofrep/v1/events")}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# POSTs open without the API token: receivers sign their bodies, OFREP evaluates, the load tester's checks.
OPEN_POSTS = {
    "/hook/{digest}",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/{key}",
    "/loadtester/gate/check",
    "/loadtester/rollback/check",
    "/loadtester/gate/approve",
    "/loadtester/gate/halt",
}


def fuzz_operation(strategy: st.SearchStrategy[Case[Any]], probe: Callable[[Case[Any]], None]) -> None:
    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Case[Any]) -> None:
        probe(case)

    run()


class Fuzzer:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url
        self.auth = {"Authorization": f"Bearer {token}"}
        self.sent = 0
        self.tried: set[str] = set()

    def probe(self, case: Case[Any], needs_token: bool) -> None:
        """Without the token (and with a wrong one) a mutating call is refused; with it, the answer is as
        the document says."""
        if needs_token:
            for headers in ({}, {"Authorization": "Bearer not-the-token"}):
                refused = case.call(base_url=self.base_url, headers=headers, timeout=10)
                self.sent += 1
                assert refused.status_code in (401, 403), (
                    f"{case.method} {case.formatted_path} without the token: {refused.status_code}"
                )
        response = case.call(base_url=self.base_url, headers=self.auth, timeout=10)
        self.sent += 1
        self.tried.add(case.operation.label)
        case.validate_response(response, checks=CHECKS)


def fuzz(document: dict[str, Any], base_url: str, token: str) -> tuple[list[str], Fuzzer]:
    """The disagreements found, and the fuzzer (what it sent)."""
    schema = schemathesis.openapi.from_dict(document)
    fuzzer = Fuzzer(base_url, token)
    failures: list[str] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):  # the document itself is wrong here (an undeclared path parameter...)
            failures.append(f"the document is not valid OpenAPI: {result.err()}")
            continue
        op = result.ok()
        if (op.method.upper(), op.path) in STREAMS:
            continue
        needs_token = op.method.upper() == "POST" and op.path not in OPEN_POSTS
        if needs_token != bool(op.definition.raw.get("security")):
            failures.append(f"{op.label}: the document's `security` does not say whether it needs the token")
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(
                    op.as_strategy(generation_mode=mode),
                    functools.partial(fuzzer.probe, needs_token=needs_token),
                )
            except Unsatisfiable:  # nothing in the operation's parameters can be made invalid
                continue
            except (Exception, BaseExceptionGroup) as exc:  # collected: one run reports every disagreement
                failures.append(f"{op.label} ({mode.value}): {type(exc).__name__}: {str(exc)[:1500]}")
    return failures, fuzzer


@pytest.mark.timeout(240)
async def test_the_api_fuzzed_from_its_openapi_document(tmp_path: Path) -> None:
    served = await start_api_rig(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=served.rig.api, timeout=10) as api:
            document = (await api.get("/api/v1/openapi.json")).json()
        # schemathesis is synchronous; the server runs on this loop, so the fuzzer runs in a thread.
        failures, fuzzer = await asyncio.to_thread(fuzz, document, served.rig.api, served.token)
        print(f"{fuzzer.sent} requests")
        assert failures == [], "\n\n".join(failures)
        every = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
        assert fuzzer.tried == every - {f"{m} {p}" for m, p in STREAMS}  # every operation was tried
        async with httpx.AsyncClient(base_url=served.rig.api, timeout=10) as api:  # and it serves on
            assert (await api.get("/api/v1/canaries/e2e/web")).status_code == 200
    finally:
        await served.rig.stop()
