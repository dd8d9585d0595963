"""Atomic file replacement: Envoy reloads a watched file only when one is moved onto its path."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, data: Any, tmp_dir: Path) -> bytes:
    """Write `data` to a temp file in `tmp_dir` (same filesystem), fsync, rename over `path`."""
    content = json.dumps(data, indent=1, sort_keys=True).encode()
    replace_atomic(path, content, tmp_dir)
    return content


def replace_atomic(path: Path, content: bytes, tmp_dir: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
