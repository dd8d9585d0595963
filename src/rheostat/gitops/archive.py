"""Unpacking a gzip tarball that came from outside (an OCI layer): all of it safely, or none of it.

A member that would land outside the destination (an absolute path, `..`, a link that leads out), a device
or pipe, too many members or too many bytes refuse the whole archive: an artifact with one such member is
not trusted for the rest either. Sizes are checked from the headers before anything is written.
"""

from __future__ import annotations

import tarfile
from pathlib import Path, PurePosixPath

MAX_BYTES = 100 * 1024 * 1024  # uncompressed, as Flux's default untar limit
MAX_MEMBERS = 20_000


class ArchiveError(Exception):
    pass


def check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or member.name.startswith("/"):
        raise ArchiveError(f"member {member.name!r} has an absolute path")
    if ".." in name.parts:
        raise ArchiveError(f"member {member.name!r} points outside the artifact ('..')")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ArchiveError(f"member {member.name!r} is a device or pipe, not a file")
    if member.issym():
        target = PurePosixPath(member.linkname)
        inside = PurePosixPath(*name.parts[:-1], target)
        if target.is_absolute() or _escapes(inside):
            raise ArchiveError(f"member {member.name!r} links outside the artifact ({member.linkname!r})")
    if member.islnk() and (
        PurePosixPath(member.linkname).is_absolute() or _escapes(PurePosixPath(member.linkname))
    ):
        raise ArchiveError(f"member {member.name!r} links outside the artifact ({member.linkname!r})")


def _escapes(path: PurePosixPath) -> bool:
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return True
    return False


def extract_tgz(
    archive: Path, dest: Path, *, max_bytes: int = MAX_BYTES, max_members: int = MAX_MEMBERS
) -> int:
    """Unpack `archive` (tar+gzip) into `dest`, which must exist and be empty; the number of files."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            total = 0
            for count, member in enumerate(tar, start=1):
                check_member(member)
                total += max(member.size, 0)
                if count > max_members:
                    raise ArchiveError(f"more than {max_members} members")
                if total > max_bytes:
                    limit = f"{max_bytes // 2**20} MiB" if max_bytes >= 2**20 else f"{max_bytes} bytes"
                    raise ArchiveError(f"more than {limit} uncompressed")
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, tarfile.FilterError):
            raise ArchiveError(str(exc)) from None
        if isinstance(exc, OSError) and not isinstance(exc, EOFError) and exc.filename:
            raise
        raise ArchiveError(f"not a gzip tarball: {exc}") from None
    return sum(1 for p in dest.rglob("*") if p.is_file())
