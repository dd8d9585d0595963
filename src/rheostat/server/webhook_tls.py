"""The webhook's TLS: certificates kept in files or in the Secret `rheostat-webhook-tls`, renewed before expiry,
the ValidatingWebhookConfiguration's caBundle kept in step, and the serving context reloaded in place.

Reloading loads the new chain into the same `ssl.SSLContext`: handshakes from then on get the new certificate,
connections already open keep theirs, so no request is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from rheostat.plugins.kube.api import KubeAPI, KubeError, Obj
from rheostat.plugins.kube.kinds import SECRET, VALIDATING_WEBHOOK_CONFIGURATION
from rheostat.server.certs import SERVING_VALIDITY, Bundle, CertError, renew

log = logging.getLogger(__name__)

SECRET_NAME = "rheostat-webhook-tls"
WEBHOOK_CONFIGURATION = "rheostat"
SERVICE = "rheostat-webhook"

RECHECK_S = 5.0
RACE_WINDOW_S = 60.0

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Keeper(Protocol):
    """Where the bundle lives between restarts and is shared between replicas."""

    async def read(self) -> Bundle | None: ...

    async def write(self, bundle: Bundle) -> None: ...


class FileKeeper:
    """tls.crt, tls.key, ca.crt (and ca.key for a CA made here) in a folder: the data dir's, or cert-manager's
    mounted Secret (then `--webhook-cert-dir`, read only)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def read(self) -> Bundle | None:
        crt, key = self.folder / "tls.crt", self.folder / "tls.key"
        if not crt.exists() and not key.exists():
            return None
        try:
            ca = self.folder / "ca.crt"
            ca_key = self.folder / "ca.key"
            return Bundle(
                crt.read_bytes(),
                key.read_bytes(),
                ca.read_bytes() if ca.exists() else crt.read_bytes(),
                ca_key.read_bytes() if ca_key.exists() else b"",
            )
        except OSError as exc:
            raise CertError(f"{self.folder}: {exc}") from exc

    async def write(self, bundle: Bundle) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        files = {"tls.crt": bundle.tls_crt, "tls.key": bundle.tls_key, "ca.crt": bundle.ca_crt}
        if bundle.ca_key:
            files["ca.key"] = bundle.ca_key
        for name, data in files.items():
            tmp = self.folder / f".{name}.tmp"
            tmp.touch(mode=0o600)
            tmp.write_bytes(data)
            tmp.rename(self.folder / name)  # each file whole, never half written


class SecretKeeper:
    """The Secret `rheostat-webhook-tls` in the controller's namespace: every replica serves what it holds."""

    def __init__(self, kube: KubeAPI, namespace: str, name: str = SECRET_NAME) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name

    async def read(self) -> Bundle | None:
        obj = await self.kube.get(SECRET, self.namespace, self.name)
        if obj is None:
            return None
        data = obj.get("data") or {}
        try:
            raw = {k: base64.b64decode(data.get(k) or "") for k in ("tls.crt", "tls.key", "ca.crt", "ca.key")}
        except ValueError as exc:
            raise CertError(f"Secret {self.namespace}/{self.name}: data is not base64 ({exc})") from exc
        if not raw["tls.crt"] or not raw["tls.key"]:
            return None  # e.g. made empty by hand: made again
        return Bundle(raw["tls.crt"], raw["tls.key"], raw["ca.crt"] or raw["tls.crt"], raw["ca.key"])

    async def write(self, bundle: Bundle) -> None:
        data = {"tls.crt": bundle.tls_crt, "tls.key": bundle.tls_key, "ca.crt": bundle.ca_crt}
        if bundle.ca_key:
            data["ca.key"] = bundle.ca_key
        await self.kube.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "labels": {"app.kubernetes.io/managed-by": "rheostat"},
                },
                "type": "kubernetes.io/tls",
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            },
            force=True,  # the Secret is the controller's own
        )


async def patch_ca_bundle(kube: KubeAPI, ca_crt: bytes, name: str = WEBHOOK_CONFIGURATION) -> bool:
    """Set caBundle on every webhook of the ValidatingWebhookConfiguration `name`; False when it is absent.

    Read, change, replace with its resourceVersion: only caBundle changes, and what `rheostat install` owns is
    left as it is (an apply of a partial object would drop the rest from the field manager's set).
    """
    for _ in range(3):
        obj = await kube.get(VALIDATING_WEBHOOK_CONFIGURATION, "", name)
        if obj is None:
            return False
        wanted = base64.b64encode(ca_crt).decode()
        hooks: list[Obj] = obj.get("webhooks") or []
        if all((h.get("clientConfig") or {}).get("caBundle") == wanted for h in hooks):
            return True
        for hook in hooks:
            hook.setdefault("clientConfig", {})["caBundle"] = wanted
        try:
            await kube.replace(obj)
            return True
        except KubeError as exc:
            if exc.status != 409:
                raise
    raise RuntimeError(f"ValidatingWebhookConfiguration {name}: changed under us three times in a row")


class WebhookTLS:
    """The certificate the webhook serves.

    managed: made here (a CA and a serving certificate for `names` and `ips`), kept by `keeper`, renewed
    when a third of its validity is left; with `kube`, caBundle of the webhook configuration follows ca.crt.
    Not managed (cert-manager): read from `keeper`, reloaded when it changes, never written.
    """

    def __init__(
        self,
        keeper: Keeper,
        *,
        managed: bool,
        names: list[str],
        ips: list[str],
        kube: KubeAPI | None = None,
        validity: dt.timedelta = SERVING_VALIDITY,
        clock: Clock = utcnow,
    ) -> None:
        self.keeper = keeper
        self.managed = managed
        self.names = names
        self.ips = ips
        self.kube = kube
        self.validity = validity
        self.clock = clock
        self.bundle: Bundle | None = None
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca_patched: bytes | None = None
        self._lock = asyncio.Lock()
        self._wrote_at = -1e9  # monotonic time of our last write to the keeper

    async def check(self, *, force: bool = False) -> None:
        """Read what is kept; renew it when due (or `force`); serve it; keep caBundle in step."""
        async with self._lock:
            kept = await self.keeper.read()
            if kept is not None:
                try:
                    kept.check()
                except CertError as exc:
                    if not self.managed:
                        raise
                    log.warning("webhook certificate unusable, made again: %s", exc)
                    kept = None
            if self.managed and (kept is None or force or kept.due(self.clock()) or not self._fits(kept)):
                await self.keeper.write(renew(kept, self.names, self.ips, self.clock(), self.validity))
                self._wrote_at = time.monotonic()
                kept = await self.keeper.read()  # another replica may have written at the same time: its wins
                assert kept is not None
                kept.check()
                log.info("webhook certificate renewed, valid until %s", kept.not_after().isoformat())
            if kept is None:
                raise CertError("no tls.crt and tls.key for the webhook")
            if not self.managed and kept.due(self.clock()):
                log.warning(
                    "webhook certificate expires %s and was not renewed", kept.not_after().isoformat()
                )
            if kept != self.bundle:
                self._load(kept)
                self.bundle = kept
            if self.managed and self.kube is not None and self._ca_patched != kept.ca_crt:
                if await patch_ca_bundle(self.kube, kept.ca_crt):
                    self._ca_patched = kept.ca_crt
                else:
                    log.info("ValidatingWebhookConfiguration %s not found yet", WEBHOOK_CONFIGURATION)

    async def rotate(self) -> None:
        await self.check(force=True)

    def _fits(self, bundle: Bundle) -> bool:
        return set(self.names) <= set(bundle.dns_names())

    def _load(self, bundle: Bundle) -> None:
        # load_cert_chain reads files only: a private folder that lives for the call
        with tempfile.TemporaryDirectory(prefix="rheostat-tls-") as tmp:
            crt, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            crt.write_bytes(bundle.tls_crt)
            key.touch(mode=0o600)
            key.write_bytes(bundle.tls_key)
            self.context.load_cert_chain(os.fspath(crt), os.fspath(key))

    async def run(self, interval_s: float) -> None:
        """Check every `interval_s`; a failed check is logged and tried again (the old certificate serves).

        For a minute after this replica wrote a certificate, every RECHECK_S: two replicas that started (or
        renewed) at once both wrote, the Secret holds the last write, and the other one must serve it soon.
        """
        while True:
            recent = time.monotonic() - self._wrote_at < RACE_WINDOW_S
            await asyncio.sleep(min(interval_s, RECHECK_S) if recent else interval_s)
            try:
                await self.check()
            except (CertError, KubeError, OSError, RuntimeError) as exc:
                log.warning("webhook certificate check failed: %s", exc)
