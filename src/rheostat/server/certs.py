"""The admission webhook's certificates: a CA and a serving certificate, made here or given (cert-manager).

The only module that imports `cryptography`. Pure: PEM bytes in, PEM bytes out; where they are kept (files,
a Secret) is webhook_tls.py's business.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
BACKDATE = dt.timedelta(minutes=5)  # a node whose clock is a little behind still trusts a fresh certificate


class CertError(ValueError):
    """PEM that cannot be read, or a key that does not belong to its certificate."""


@dataclass(frozen=True)
class Bundle:
    """What the Secret `rheostat-webhook-tls` holds: tls.crt, tls.key and ca.crt (PEM).

    `ca_crt` may hold two CAs while the CA itself is renewed (the new one first), so that the API server
    trusts both the serving certificate in use and its successor. `ca_key` is empty for a given certificate.
    """

    tls_crt: bytes
    tls_key: bytes
    ca_crt: bytes
    ca_key: bytes = b""

    @property
    def serving(self) -> x509.Certificate:
        return _load_cert(self.tls_crt, "tls.crt")

    @property
    def ca(self) -> x509.Certificate:
        return _load_cert(self.ca_crt, "ca.crt")

    def not_after(self) -> dt.datetime:
        return self.serving.not_valid_after_utc

    def serial(self) -> int:
        return self.serving.serial_number

    def dns_names(self) -> list[str]:
        try:
            ext = self.serving.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            return []
        return list(ext.value.get_values_for_type(x509.DNSName))

    def due(self, now: dt.datetime) -> bool:
        """Renew when less than a third of the serving certificate's (or the CA's) validity is left."""
        return _due(self.serving, now) or (bool(self.ca_key) and _due(self.ca, now))

    def check(self) -> None:
        """CertError unless tls.crt, tls.key and ca.crt parse and the key is the certificate's."""
        key = _load_key(self.tls_key, "tls.key")
        cert = self.serving
        self.ca  # noqa: B018  # parses, or raises CertError naming ca.crt
        if key.public_key().public_bytes(*_SPKI) != cert.public_key().public_bytes(*_SPKI):
            raise CertError("tls.key is not the key of tls.crt")


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _due(cert: x509.Certificate, now: dt.datetime) -> bool:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    return end - now < (end - start) / 3


def _load_cert(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CertError(f"{what}: not a PEM certificate ({exc})") from exc


def _load_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertError(f"{what}: not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{what}: expected an EC key, got {type(key).__name__}")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def service_names(service: str, namespace: str) -> list[str]:
    """The names the API server may call a Service by: `svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`."""
    base = f"{service}.{namespace}"
    return [service, base, f"{base}.svc", f"{base}.svc.cluster.local"]


def new_ca(now: dt.datetime, validity: dt.timedelta = CA_VALIDITY) -> tuple[bytes, bytes]:
    """(ca.crt, ca.key) of a fresh self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"rheostat-webhook-ca-{now:%Y%m%d%H%M%S}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def issue(
    ca_crt: bytes,
    ca_key: bytes,
    dns_names: list[str],
    ips: list[str],
    now: dt.datetime,
    validity: dt.timedelta = SERVING_VALIDITY,
) -> tuple[bytes, bytes]:
    """(tls.crt, tls.key): a serving certificate for the names and addresses, signed by the CA (its first)."""
    ca = _load_cert(ca_crt, "ca.crt")
    signer = _load_key(ca_key, "ca.key")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    not_after = min(now + validity, ca.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0] if dns_names else ips[0])])
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
        )
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def renew(
    old: Bundle | None, dns_names: list[str], ips: list[str], now: dt.datetime, validity: dt.timedelta
) -> Bundle:
    """A bundle with a fresh serving certificate; the CA is kept unless it is due too (or there is none).

    A new CA is put before the old one in ca.crt while the old one is still valid: the API server, which
    reads caBundle, then trusts the certificate served before and after the switch.
    """
    if old is not None and old.ca_key and not _due(old.ca, now):
        ca_crt, ca_key = old.ca_crt, old.ca_key
        first_ca = _first_pem(ca_crt)
    else:
        first_ca, ca_key = new_ca(now)
        ca_crt = first_ca
        if old is not None and old.ca_key and old.ca.not_valid_after_utc > now:
            ca_crt = first_ca + _first_pem(old.ca_crt)
    tls_crt, tls_key = issue(first_ca, ca_key, dns_names, ips, now, validity)
    return Bundle(tls_crt, tls_key, ca_crt, ca_key)


def _first_pem(pem: bytes) -> bytes:
    end = b"-----END CERTIFICATE-----"
    at = pem.find(end)
    return pem[: at + len(end)] + b"\n" if at >= 0 else pem
