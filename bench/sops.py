"""SOPS: building a Kustomization path of 50 encrypted Secrets, one sops process per file.

sops decrypts one file per run (each file has its own data key and MAC, so files cannot be merged into one
run); what can be batched is how many runs are in flight. Compared: the same path in clear (no sops), the
runs one after the other, and 2, 4 and 8 at a time.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rheostat.gitops.build import build
from rheostat.gitops.sops import Decryptor, keys_from_secret, sops_path

N = 50
ROUNDS = 3


def _age_key() -> tuple[str, str]:
    out = subprocess.run(["age-keygen"], capture_output=True, text=True, check=True).stdout
    secret = next(ln for ln in out.splitlines() if ln.startswith("AGE-SECRET-KEY-"))
    public = next(ln.split(": ", 1)[1] for ln in out.splitlines() if ln.startswith("# public key: "))
    return secret, public


def _secret(i: int) -> str:
    value = base64.b64encode(f"password-{i}".encode()).decode()
    return f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}, namespace: apps}}\ndata: {{password: {value}}}\n"


def _encrypt(text: str, public: str) -> str:
    cmd = [sops_path(), "encrypt", "--age", public, "--encrypted-regex", "^(data|stringData)$"]
    cmd += ["--input-type", "yaml", "--output-type", "yaml", "/dev/stdin"]
    return subprocess.run(cmd, input=text, capture_output=True, text=True, check=True).stdout


async def _time(root: Path, path: str, decryptor: Decryptor | None) -> float:
    runs = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        built = await build(root, path, decryptor=decryptor)
        runs.append(time.perf_counter() - start)
        assert len(built.objects) == N
    return statistics.median(runs)


async def _main() -> None:
    secret, public = _age_key()
    keys = keys_from_secret({"age.agekey": secret}, "flux-system/sops-age")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clear").mkdir()
        (root / "sops").mkdir()
        for i in range(N):
            (root / "clear" / f"s{i}.yaml").write_text(_secret(i))
            (root / "sops" / f"s{i}.yaml").write_text(_encrypt(_secret(i), public))
        print(f"| {N} Secrets | sops runs in flight | build (median of {ROUNDS}) | per file |")
        print("| --- | --- | --- | --- |")
        clear = await _time(root, "clear", None)
        print(f"| in clear | 0 | {clear * 1000:.0f} ms | {clear / N * 1000:.1f} ms |")
        for flight in (1, 2, 4, 8):
            d = Decryptor(keys, "Kustomization bench/sops", concurrency=flight)
            took = await _time(root, "sops", d)
            assert d.count == N * ROUNDS
            print(f"| encrypted | {flight} | {took * 1000:.0f} ms | {took / N * 1000:.1f} ms |")


def main() -> None:
    asyncio.run(_main())


if __name__ == "__main__":
    main()
