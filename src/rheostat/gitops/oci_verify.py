"""cosign signatures made with a key, checked with `cryptography`: what `cosign verify --key` checks offline.

`cosign sign --key` stores its signature as an OCI artifact tagged `sha256-<digest>.sig` in the same
repository: each layer is a "simple signing" JSON payload naming the signed manifest digest, and the layer's
`dev.cosignproject.cosign/signature` annotation is the base64 signature over that payload (ECDSA P-256 with
SHA-256 for cosign's own keys; RSA PKCS#1 v1.5 and Ed25519 keys are checked too). A payload that names
another digest does not count. A Rekor transparency-log bundle beside the signature is not checked (as
`cosign verify --insecure-ignore-tlog`); keyless (Fulcio certificate) signatures are refused in the model.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from rheostat.gitops.oci_registry import Registry, RegistryError

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE = "dev.cosignproject.cosign/signature"
MAX_PAYLOAD = 64 * 1024


def public_keys(data: Mapping[str, str]) -> list[tuple[str, object]]:
    """The `*.pub` entries of the Secret, as Flux reads them; ValueError naming a key that does not load."""
    out: list[tuple[str, object]] = []
    for name, pem in sorted(data.items()):
        if not name.endswith(".pub"):
            continue
        try:
            out.append((name, serialization.load_pem_public_key(pem.encode())))
        except ValueError:
            raise ValueError(f"{name} is not a PEM public key") from None
    if not out:
        raise ValueError("has no public key (an entry whose name ends with .pub)")
    return out


def fingerprint(key: object) -> str:
    assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def signature_ok(key: object, signature: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def names_digest(payload: bytes, digest: str) -> bool:
    try:
        doc = json.loads(payload)
        return bool(doc["critical"]["image"]["docker-manifest-digest"] == digest)
    except (ValueError, KeyError, TypeError):
        return False


async def verify(registry: Registry, digest: str, keys: list[tuple[str, object]], secret: str) -> str:
    """Who signed `digest` (the key's name and fingerprint), or RegistryError VerificationFailed."""
    tag = digest.replace(":", "-") + ".sig"
    try:
        manifest, _ = await registry.manifest(tag, field="spec.verify")
    except RegistryError as exc:
        if "not found" in str(exc):
            raise RegistryError(
                "VerificationFailed", f"{digest} has no cosign signature (no tag {tag})", "spec.verify"
            ) from None
        raise
    tried = 0
    for layer in manifest.get("layers") or []:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING:
            continue
        encoded = (layer.get("annotations") or {}).get(SIGNATURE)
        if not isinstance(encoded, str):
            continue
        payload = await registry.blob(str(layer.get("digest")), MAX_PAYLOAD)
        if not names_digest(payload, digest):
            continue
        tried += 1
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        for name, key in keys:
            if signature_ok(key, signature, payload):
                return f"cosign key {name} ({fingerprint(key)})"
    names = ", ".join(n for n, _ in keys)
    raise RegistryError(
        "VerificationFailed",
        f"no cosign signature of {digest} verifies with the keys in secret {secret} ({names}); "
        f"{tried} signature(s) for this digest found",
        "spec.verify",
    )
