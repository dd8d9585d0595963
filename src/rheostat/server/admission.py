"""The validating admission webhook: `admission.k8s.io/v1` AdmissionReviews answered with the policy engine.

The same templates, constraints and ValidatingAdmissionPolicies as the GitOps gate, answered as Gatekeeper
answers: each deny as `[constraint-name] message` (one per line), each warn as a warning of the same form,
dryrun only recorded. An evaluation error (or a policy that cannot be compiled) denies, naming the reason,
unless the webhook is told to fail open; then it allows with a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from rheostat.gitops.gate import PolicyGate
from rheostat.plugins.kube.api import KubeAPI
from rheostat.plugins.kube.kinds import NAMESPACE
from rheostat.policy import Inventory, PolicyError, PolicySet, Violation, is_policy
from rheostat.policy.review import Review, ReviewError, make_review
from rheostat.store.port import Change, State
from rheostat.util.backoff import Backoff

log = logging.getLogger(__name__)

PATH = "/admission/validate"
API_VERSION = "admission.k8s.io/v1"
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")
MAX_BODY = 8 * 1024 * 1024  # an object and its old version, each at most etcd's 1.5 MiB, with room to spare


class BadReview(ValueError):
    """A request that is not an AdmissionReview v1 the API server would send; answered 400."""


def parse_review(body: bytes) -> dict[str, Any]:
    """The `request` of an AdmissionReview v1; BadReview names the field that is wrong."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise BadReview(f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadReview("the body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise BadReview(
            f"expected apiVersion {API_VERSION} and kind AdmissionReview, got apiVersion "
            f"{doc.get('apiVersion')!r} and kind {doc.get('kind')!r}"
        )
    request = doc.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview has no request object")
    if not isinstance(request.get("uid"), str) or not request["uid"]:
        raise BadReview("request.uid: missing (a string the response must echo)")
    if request.get("operation") not in OPERATIONS:
        raise BadReview(
            f"request.operation: {request.get('operation')!r} is not one of {', '.join(OPERATIONS)}"
        )
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str) or not kind["kind"]:
        raise BadReview("request.kind: expected {group, version, kind}")
    for field in ("object", "oldObject"):
        if request.get(field) is not None and not isinstance(request[field], dict):
            raise BadReview(f"request.{field}: expected an object or null")
    return request


class PolicySource(Protocol):
    def current(self) -> tuple[PolicySet, Inventory]:
        """The compiled policies and what `data.inventory` holds; PolicyError when a policy is unusable."""
        ...


class StorePolicies:
    """The policies and objects the store holds, compiled once per change (read on the event loop's thread,
    where the store is written, and evaluated there too: a compiled engine is not shared across threads)."""

    def __init__(self, store: State, gate: PolicyGate) -> None:
        self.store = store
        self.gate = gate
        self._current: tuple[PolicySet, Inventory] | PolicyError | None = None
        self._compiled: tuple[str, PolicySet] | None = None
        self.unwatch = store.watch(self._changed)
        self.namespaces: dict[str, dict[str, Any]] = {}  # a cluster's Namespaces, for namespaceSelector

    def namespace(self, event: str, obj: dict[str, Any]) -> None:
        name = str((obj.get("metadata") or {}).get("name", ""))
        if event == "DELETED":
            self.namespaces.pop(name, None)
        else:
            self.namespaces[name] = {**obj, "apiVersion": "v1", "kind": "Namespace"}
        self._current = None

    def _changed(self, changes: frozenset[Change]) -> None:
        if any(
            "." not in kind and kind not in ("status", "manual", "event", "history") for kind, _ in changes
        ):
            self._current = None

    async def watch_namespaces(self, kube: KubeAPI) -> None:
        """Keep `namespaces` current from the cluster (Gatekeeper reads a request's Namespace the same way)."""
        backoff = Backoff()
        while True:
            try:
                async for event, obj in kube.watch(NAMESPACE):
                    backoff.reset()
                    self.namespace(event, obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await backoff.wait(log, "watch of namespaces", exc)

    def current(self) -> tuple[PolicySet, Inventory]:
        if self._current is None:
            stored = self.gate.audit_inputs()
            docs = [s.body for s in stored if is_policy(s.body)]
            objects = [s.body for s in stored if not is_policy(s.body)]
            objects += self.namespaces.values()
            # Any object's change rebuilds the inventory; the policies are compiled again only when they changed.
            digest = hashlib.sha256(json.dumps(docs, sort_keys=True, default=str).encode()).hexdigest()
            try:
                if self._compiled is None or self._compiled[0] != digest:
                    self._compiled = (digest, PolicySet.from_documents(docs))
                self._current = (self._compiled[1], Inventory(objects))
            except PolicyError as exc:
                self._current = exc
        if isinstance(self._current, PolicyError):
            raise self._current
        return self._current


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    denials: list[str]  # `[name] message`
    warnings: list[str]
    violations: list[Violation]  # everything found, dryrun included: what is recorded


def label(v: Violation) -> str:
    return f"[{v.policy or v.template or 'policy'}] {v.message}"


class Admission:
    """Decides AdmissionReviews. `record` hears of every violation found (deny, warn and dryrun alike)."""

    def __init__(
        self,
        source: PolicySource,
        *,
        fail_closed: bool = True,
        record: Callable[[Review, list[Violation]], None] | None = None,
    ) -> None:
        self.source = source
        self.fail_closed = fail_closed
        self.record = record

    def decide(self, request: dict[str, Any]) -> Verdict:
        try:
            review = make_review({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})
        except ReviewError as exc:
            raise BadReview(str(exc)) from None
        try:
            policies, inventory = self.source.current()
            found = policies.evaluate_review(review, inventory)
        except PolicyError as exc:
            found = [self._error(review, exc.source, f"policy cannot be used: {exc.message}")]
        except Exception as exc:  # an engine crash is an evaluation error: it must not turn into "allowed"
            log.exception("admission review of %s %s failed", review.kind, review.name)
            found = [self._error(review, "", f"evaluation failed: {exc}")]
        denials: list[str] = []
        warnings: list[str] = []
        for v in found:
            if v.kind == "error":
                (denials if self.fail_closed else warnings).append(
                    f"[{v.policy or 'rheostat'}] error: {v.message}"
                )
            elif v.action == "deny":
                denials.append(label(v))
            elif v.action == "warn":
                warnings.append(label(v))
        if found and self.record is not None:
            try:
                self.record(review, found)
            except Exception:  # recording must not change the answer
                log.exception("recording admission violations failed")
        return Verdict(not denials, denials, warnings, found)

    @staticmethod
    def _error(review: Review, source: str, message: str) -> Violation:
        return Violation(
            policy=source,
            template="",
            action="deny",
            object_kind=review.kind,
            object_namespace=review.namespace,
            object_name=review.name,
            message=message,
            kind="error",
        )

    async def endpoint(self, request: Request) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return PlainTextResponse(f"AdmissionReview larger than {MAX_BODY} bytes\n", status_code=413)
        try:
            req = parse_review(bytes(body))
            verdict = self.decide(req)
        except BadReview as exc:
            return PlainTextResponse(f"malformed AdmissionReview: {exc}\n", status_code=400)
        response: dict[str, Any] = {"uid": req["uid"], "allowed": verdict.allowed}
        if not verdict.allowed:
            response["status"] = {"code": 403, "reason": "Forbidden", "message": "\n".join(verdict.denials)}
        if verdict.warnings:
            response["warnings"] = verdict.warnings
        return JSONResponse({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response})


class Recorder:
    """Violations found at admission go where the gate's and the audit's go (dashboard, CLI, alerts), written
    in batches by `flush` (WebhookServer calls it every FLUSH_S): a request never waits on a store write."""

    FLUSH_S = 0.5

    def __init__(self, gate: PolicyGate) -> None:
        self.gate = gate
        self._pending: dict[str, list[Violation]] = {}

    def __call__(self, review: Review, found: list[Violation]) -> None:
        self._pending.setdefault(str(review.user_info.get("username") or ""), []).extend(found)

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for who, found in pending.items():
            self.gate.record_admission(found, who)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_S)
            try:
                self.flush()
            except (
                Exception
            ):  # e.g. a full disk: the webhook keeps answering; tried again with the next batch
                log.exception("recording admission violations failed")


def create_webhook_app(admission: Admission) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    return Starlette(
        routes=[
            Route(PATH, admission.endpoint, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
