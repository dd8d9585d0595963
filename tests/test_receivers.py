"""Receivers verify each provider's signature; secrets come from files or the environment."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from rheostat.gitops.receivers import hook_path, verify
from rheostat.model.gitops import Receiver
from rheostat.model.load import parse_object
from rheostat.reactor.alerts import Secrets, env_name

BODY = b'{"ref": "refs/heads/main"}'


def receiver(kind: str, events: list[str] | None = None) -> Receiver:
    obj = parse_object(
        {
            "apiVersion": "notification.toolkit.fluxcd.io/v1",
            "kind": "Receiver",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {
                "type": kind,
                "secretRef": {"name": "t"},
                "events": events or [],
                "resources": [{"kind": "GitRepository", "name": "app"}],
            },
        }
    )
    assert isinstance(obj, Receiver)
    return obj


def sig(token: str, algo: str = "sha256") -> str:
    return f"{algo}=" + hmac.new(token.encode(), BODY, getattr(hashlib, algo)).hexdigest()


def test_the_path_is_flux_s_digest() -> None:
    assert hook_path(receiver("generic"), "tok") == "/hook/" + hashlib.sha256(b"tokrns").hexdigest()


def test_github() -> None:
    r = receiver("github", ["push"])
    assert verify(r, "tok", {"X-Hub-Signature-256": sig("tok"), "X-GitHub-Event": "push"}, BODY).status == 200
    assert verify(r, "tok", {"X-Hub-Signature-256": sig("bad"), "X-GitHub-Event": "push"}, BODY).status == 401
    assert verify(r, "tok", {"X-GitHub-Event": "push"}, BODY).status == 401
    assert verify(r, "tok", {"X-Hub-Signature-256": sig("tok"), "X-GitHub-Event": "ping"}, BODY).status == 202
    other = verify(r, "tok", {"X-Hub-Signature-256": sig("tok"), "X-GitHub-Event": "issues"}, BODY)
    assert (other.ok, other.status) == (True, 202)  # an event this receiver does not act on triggers nothing


def test_gitlab() -> None:
    r = receiver("gitlab")
    assert verify(r, "tok", {"X-Gitlab-Token": "tok", "X-Gitlab-Event": "Push Hook"}, BODY).status == 200
    assert verify(r, "tok", {"X-Gitlab-Token": "nope"}, BODY).status == 401
    assert verify(r, "tok", {}, BODY).status == 401


def test_generic_hmac_with_each_digest() -> None:
    r = receiver("generic-hmac")
    for algo in ("sha1", "sha256", "sha512"):
        assert verify(r, "tok", {"X-Signature": sig("tok", algo)}, BODY).status == 200
    assert verify(r, "tok", {"X-Signature": sig("bad")}, BODY).status == 401
    assert verify(r, "tok", {"X-Signature": "md5=00"}, BODY).status == 401
    assert verify(r, "tok", {"X-Signature": sig("tok")}, BODY + b" ").status == 401  # the body is signed


def test_secrets_from_files_or_the_environment(tmp_path: Path) -> None:
    (tmp_path / "ns").mkdir()
    (tmp_path / "ns" / "file.yaml").write_text("token: from-file\n")
    secrets = Secrets(tmp_path, environ={env_name("ns", "git-creds"): '{"username": "u", "password": "p"}'})
    assert secrets.get("ns", "file") == {"token": "from-file"}
    assert secrets.get("ns", "git-creds") == {"username": "u", "password": "p"}
    assert env_name("flux-system", "git-creds") == "RHEOSTAT_SECRET_FLUX_SYSTEM_GIT_CREDS"
    assert secrets.get("ns", "missing") is None
