"""Receivers: a POST with a valid signature asks for a reconcile at once; anything else triggers nothing."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from rheostat.model.gitops import Receiver


def hook_path(receiver: Receiver, token: str) -> str:
    """Flux's path: /hook/sha256(token + name + namespace), so the URL itself is unguessable."""
    seed = f"{token}{receiver.metadata.name}{receiver.metadata.namespace}".encode()
    return f"/hook/{hashlib.sha256(seed).hexdigest()}"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    status: int  # 200 triggered, 202 accepted but filtered out, 401 refused
    message: str


def _hmac_ok(header: str, body: bytes, token: str) -> bool:
    algo, _, given = header.partition("=")
    digestmod = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}.get(algo)
    if digestmod is None or not given:
        return False
    expected = hmac.new(token.encode(), body, digestmod).hexdigest()
    return hmac.compare_digest(expected, given)


def verify(receiver: Receiver, token: str, headers: Mapping[str, str], body: bytes) -> Verdict:
    h = {k.lower(): v for k, v in headers.items()}
    kind = receiver.spec.type
    if kind == "github":
        if not _hmac_ok(h.get("x-hub-signature-256", ""), body, token):
            return Verdict(False, 401, "missing or wrong X-Hub-Signature-256")
        event = h.get("x-github-event", "")
        if event == "ping":
            return Verdict(True, 202, "pong")
    elif kind == "gitlab":
        if not hmac.compare_digest(h.get("x-gitlab-token", "").encode(), token.encode()):
            return Verdict(False, 401, "missing or wrong X-Gitlab-Token")
        event = h.get("x-gitlab-event", "")
    elif kind == "generic-hmac":
        if not _hmac_ok(h.get("x-signature", ""), body, token):
            return Verdict(False, 401, "missing or wrong X-Signature")
        event = ""
    else:
        event = ""
    if receiver.spec.events and event and event not in receiver.spec.events:
        return Verdict(True, 202, f"event {event!r} is not one this receiver acts on")
    return Verdict(True, 200, "reconcile requested")
