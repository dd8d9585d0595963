"""Real age keys and real sops for tests: keys made by age-keygen, files encrypted by sops (stdin to stdout)."""

from __future__ import annotations

import base64
import subprocess
from dataclasses import dataclass

from rheostat.gitops.sops import sops_path
from tests.processes import binary


@dataclass(frozen=True)
class AgeKey:
    secret: str  # AGE-SECRET-KEY-1...
    public: str  # age1...


def age_key() -> AgeKey:
    out = subprocess.run(
        [binary("age-keygen", "age")], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    secret = next(ln for ln in out.splitlines() if ln.startswith("AGE-SECRET-KEY-"))
    public = next(ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("# public key: "))
    return AgeKey(secret, public)


def encrypt(
    text: str | bytes, key: AgeKey, fmt: str = "yaml", regex: str | None = "^(data|stringData)$"
) -> str:
    """sops encrypt, as a user would before committing (Flux's guide encrypts only data and stringData)."""
    data = text.encode() if isinstance(text, str) else text
    cmd = [sops_path(), "encrypt", "--age", key.public, "--input-type", fmt, "--output-type", fmt]
    if regex is not None and fmt in ("yaml", "json"):
        cmd += ["--encrypted-regex", regex]
    done = subprocess.run([*cmd, "/dev/stdin"], input=data, capture_output=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def secret_yaml(name: str, namespace: str, **values: str) -> str:
    lines = [
        f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\ntype: Opaque"
    ]
    lines.append("data:")
    lines += [f"  {k}: {base64.b64encode(v.encode()).decode()}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
