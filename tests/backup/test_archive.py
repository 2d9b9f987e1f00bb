"""The archive's building blocks: chunked encryption that notices reordering, truncation and
members swapped, the row codec, and the version rule of a restore."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from wharf.backup import archive as a
from wharf.backup.restore import VersionRefused, check_version
from wharf.metadata import schema as t

pytestmark = pytest.mark.once


def _keys() -> a.Keys:
    return a.Keys.derive("passphrase", a.new_encryption_params())


def _encrypt(keys: a.Keys, name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    w = a.EncryptingWriter(out, keys.encryption, name)
    w.write(data)
    w.close()
    return out.getvalue()


def _decrypt(keys: a.Keys, name: str, sealed: bytes) -> bytes:
    return b"".join(a.decrypt_chunks(io.BytesIO(sealed), keys.encryption, name))


def _frames(sealed: bytes) -> list[bytes]:
    body, frames = sealed[len(a.MAGIC) :], []
    while body:
        length = int.from_bytes(body[1:5], "big")
        frames.append(body[: 5 + 12 + length])
        body = body[5 + 12 + length :]
    return frames


def test_encryption_round_trip_and_tampering():
    keys = _keys()
    data = bytes(range(256)) * 1000  # several chunks
    sealed = _encrypt(keys, "m", data)
    assert _decrypt(keys, "m", sealed) == data
    assert _decrypt(keys, "e", _encrypt(keys, "e", b"")) == b""
    frames = _frames(sealed)
    assert len(frames) == 4
    swapped = a.MAGIC + frames[1] + frames[0] + b"".join(frames[2:])
    with pytest.raises(a.ArchiveError, match="fails authentication"):
        _decrypt(keys, "m", swapped)
    with pytest.raises(a.ArchiveError, match="truncated"):
        _decrypt(keys, "m", a.MAGIC + b"".join(frames[:-1]))
    with pytest.raises(a.ArchiveError, match="fails authentication"):
        _decrypt(keys, "other-member", sealed)
    with pytest.raises(a.ArchiveError, match="fails authentication"):
        _decrypt(a.Keys.derive("wrong", {"salt": "AAAA", **a.SCRYPT}), "m", sealed)


def test_manifest_authentication():
    keys = _keys()
    manifest = {"members": {"x": {"sha256": "00"}}, "createdAt": "now"}
    signature = keys.sign(manifest)
    assert keys.sign({**manifest, "authentication": {"hmacSha256": "ignored"}}) == signature
    assert keys.sign({**manifest, "createdAt": "later"}) != signature


def test_rows_round_trip():
    row = {
        "id": 7,
        "repository_id": 1,
        "digest": "sha256:ab",
        "sha256": "sha256:ab",
        "sha512": "sha512:cd",
        "media_type": "m",
        "size": 3,
        "content": b"\x00\xff{",
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        "subject": None,
    }
    decoded = a.row_decoder(t.manifests)(a.encode_row(row).rstrip(b"\n"))
    assert decoded == row
    with pytest.raises(a.ArchiveError, match="unknown columns"):
        a.row_decoder(t.tags)(b'{"nope": 1}')


def test_every_table_has_a_folder():
    names = {table.name for table in a.tables()}
    assert {a.folder_of(n) for n in names} <= set(a.FOLDERS)
    assert {"accounts", "manifests", "tags", "settings", "api_tokens"} <= names


def test_version_rule():
    assert check_version("1.2.3", "1.2.3") is None
    assert "patch" in check_version("1.2.3", "1.2.5")
    with pytest.raises(VersionRefused, match=r"Install Wharf 1\.2\.x"):
        check_version("1.2.3", "1.3.0")
    with pytest.raises(VersionRefused):
        check_version("1.2.3", "2.2.3")
