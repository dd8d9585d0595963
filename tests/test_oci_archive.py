"""The tarball guard of OCI layers (gitops/archive.py): everything safe is unpacked, anything unsafe refuses
the whole layer before a byte is written."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from rheostat.gitops.archive import ArchiveError, extract_tgz


def layer(tmp: Path, *members: Callable[[tarfile.TarFile], None]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for add in members:
            add(tar)
    path = tmp / "layer.tgz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def file(name: str, data: bytes = b"x: 1\n") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    return add


def special(name: str, kind: bytes, link: str = "") -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        tar.addfile(info)

    return add


def test_a_safe_layer_is_unpacked_with_links_inside_kept(tmp_path: Path) -> None:
    src = layer(tmp_path, file("apps/w.yaml"), special("apps/alias.yaml", tarfile.SYMTYPE, "w.yaml"))
    dest = tmp_path / "out"
    dest.mkdir()
    assert extract_tgz(src, dest) == 2
    assert (dest / "apps/alias.yaml").read_text() == "x: 1\n"


@pytest.mark.parametrize(
    ("member", "words"),
    [
        (file("../evil.yaml"), "member '../evil.yaml' points outside the artifact ('..')"),
        (file("apps/../../evil.yaml"), "points outside the artifact ('..')"),
        (file("/etc/evil.yaml"), "member '/etc/evil.yaml' has an absolute path"),
        (
            special("apps/l", tarfile.SYMTYPE, "../../etc/passwd"),
            "links outside the artifact ('../../etc/passwd')",
        ),
        (special("apps/l", tarfile.SYMTYPE, "/etc/passwd"), "links outside the artifact ('/etc/passwd')"),
        (special("apps/h", tarfile.LNKTYPE, "../outside"), "links outside the artifact"),
        (special("dev", tarfile.CHRTYPE), "member 'dev' is a device or pipe"),
        (special("fifo", tarfile.FIFOTYPE), "member 'fifo' is a device or pipe"),
    ],
)
def test_an_unsafe_member_refuses_the_whole_layer(
    tmp_path: Path, member: Callable[[tarfile.TarFile], None], words: str
) -> None:
    src = layer(tmp_path, file("apps/w.yaml"), member, file("apps/z.yaml"))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError) as err:
        extract_tgz(src, dest)
    assert words in str(err.value)
    assert list(dest.iterdir()) == []  # nothing written, not even the safe members before it


def test_size_and_member_limits_are_checked_before_writing(tmp_path: Path) -> None:
    src = layer(tmp_path, file("a.yaml", b"a" * 600), file("b.yaml", b"b" * 600))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="more than 1000 bytes uncompressed"):
        extract_tgz(src, dest, max_bytes=1000)
    with pytest.raises(ArchiveError, match="more than 1 members"):
        extract_tgz(src, dest, max_members=1)
    assert list(dest.iterdir()) == []


def test_a_layer_that_is_not_a_gzip_tarball_is_named(tmp_path: Path) -> None:
    src = tmp_path / "layer.tgz"
    src.write_bytes(b"apiVersion: v1\nkind: ConfigMap\n")
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="not a gzip tarball"):
        extract_tgz(src, dest)


def test_cosign_key_kinds_other_than_ecdsa_are_checked_too() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    from rheostat.gitops.oci_verify import names_digest, signature_ok

    payload = b'{"critical":{"image":{"docker-manifest-digest":"sha256:ab"}}}'
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    signed = [
        (rsa_key.public_key(), rsa_key.sign(payload, padding.PKCS1v15(), hashes.SHA256())),
        (ed_key.public_key(), ed_key.sign(payload)),
        (ec_key.public_key(), ec_key.sign(payload, ec.ECDSA(hashes.SHA256()))),
    ]
    for key, sig in signed:
        assert signature_ok(key, sig, payload)
        assert not signature_ok(key, sig, payload + b" ")
    assert not signature_ok(signed[0][0], signed[1][1], payload)  # another key's signature
    assert names_digest(payload, "sha256:ab") and not names_digest(payload, "sha256:cd")
