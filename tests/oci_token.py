"""A registry token service for tests, as Docker Hub's or Harbor's: Basic credentials in, an ES256 JWT out.

docker-registry is configured (`auth.token`) to trust the self-signed certificate this writes to a bundle;
each token carries the certificate in its `x5c` header and grants what the user may do: `pull` and `push` for
the known user, nothing for anyone else (so an anonymous pull is refused, as on a private registry).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from tests.servers import serving


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    realm: str
    bundle: Path
    issued: list[str]  # "user scope" of each token given, for the tests to read


@contextlib.contextmanager
def token_service(tmp: Path, user: str, password: str) -> Iterator[TokenService]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rheostat-test-token-signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = tmp / "token-bundle.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    issued: list[str] = []

    def token(subject: str, scope: str) -> str:
        access = []
        if subject == user and scope.startswith("repository:"):
            _, repo, actions = scope.split(":")
            access.append({"type": "repository", "name": repo, "actions": actions.split(",")})
        header = {"typ": "JWT", "alg": "ES256", "x5c": [x5c]}
        t = int(time.time())
        claims = {
            "iss": "rheostat-test",
            "sub": subject,
            "aud": "registry",
            "exp": t + 300,
            "nbf": t - 10,
            "iat": t,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der = key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            scope = (query.get("scope") or [""])[0]
            subject = ""
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                got = base64.b64decode(header[6:]).decode()
                if got != f"{user}:{password}":
                    self.send_response(401)
                    self.end_headers()
                    return
                subject = user
            issued.append(f"{subject or '<anonymous>'} {scope}")
            body = json.dumps({"token": token(subject, scope)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with serving(server, "oci-token-service"):
        yield TokenService(f"http://127.0.0.1:{server.server_address[1]}/token", bundle, issued)
