"""The backup archive: its layout, its rows, its manifest and its encryption.

    wharf-backup/
      config/        settings.jsonl (system settings, LDAP, storage URL, cluster record),
                     replica.json (the replica's wharf.toml), storage.env (encrypted only)
      metadata/      repositories, blobs, repository_blobs, manifests, manifest_references,
                     tags, uploads (.jsonl)
      access/        accounts, org_members, teams, team_members, api_tokens (hashes only),
                     repository_team_access, namespace_team_access, audit_events
      jobs/          jobs, job_logs, crons
      trust/         (content trust: none in this release; the folder keeps the format stable)
      scans/         (scan results: none in this release)
      certificates/  settings.jsonl: the cluster's TLS certificate and key, the token signing key
      cluster/       replicas, job_workers: recorded for information, never restored
      manifest.json  written last: versions, ids, time, store, every member's sha256 and size

Every table is a JSON Lines file, one row per line, ordered by primary key; bytes are base64
and times ISO 8601 in UTC. Encrypted archives keep the same names with `.enc` appended: each
member is a sequence of AES-256-GCM chunks (see `EncryptingWriter`), and the manifest carries
an HMAC under a key derived from the passphrase, so that nothing can be changed, swapped,
reordered or cut without the restore noticing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import DateTime, LargeBinary, Table

from wharf.metadata import schema as t

ROOT = "wharf-backup"
MANIFEST = f"{ROOT}/manifest.json"
FORMAT = "wharf-backup"
FORMAT_VERSION = 1
FOLDERS = ("config", "metadata", "access", "jobs", "trust", "scans", "certificates", "cluster")
EXCLUDED = ["image contents (blob storage)", "vulnerability database"]
NOT_YET = {
    "trust": "this installation has no trust data (content trust is not part of this release)",
    "scans": "this installation has no scan results (scanning is not part of this release)",
}

# Which folder each table goes to; a table added later and not listed here goes to
# metadata/, so that a backup never leaves a table out.
TABLE_FOLDERS = {
    "accounts": "access",
    "org_members": "access",
    "teams": "access",
    "team_members": "access",
    "api_tokens": "access",
    "repository_team_access": "access",
    "namespace_team_access": "access",
    "audit_events": "access",
    "jobs": "jobs",
    "job_logs": "jobs",
    "crons": "jobs",
    "replicas": "cluster",
    "job_workers": "cluster",
}
# The settings that are keys and certificates go to certificates/, the others to config/.
CERTIFICATE_SETTINGS = ("tls", "token_signing_key")
# Facts of the old cluster's processes: a restore makes a new replica of its own.
NOT_RESTORED = frozenset({"replicas", "job_workers"})


def folder_of(table: str) -> str:
    return TABLE_FOLDERS.get(table, "metadata")


def member_name(folder: str, table: str, encrypted: bool) -> str:
    return f"{ROOT}/{folder}/{table}.jsonl" + (".enc" if encrypted else "")


class ArchiveError(Exception):
    """The archive cannot be used: corrupted, truncated, tampered with, or not a backup."""


class WrongPassphrase(ArchiveError):
    pass


# -- rows -----------------------------------------------------------------------------------


def _encode_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat()  # naive UTC, as SQLite keeps it
    return value


def encode_row(row: Mapping[str, Any]) -> bytes:
    doc = {k: _encode_value(v) for k, v in row.items()}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def row_decoder(table: Table) -> Callable[[bytes], dict[str, Any]]:
    """Turns a line back into a row for `table`, refusing columns the table does not have."""
    binary = {c.name for c in table.columns if isinstance(c.type, LargeBinary)}
    times = {c.name for c in table.columns if isinstance(c.type, DateTime)}
    known = {c.name for c in table.columns}

    def decode(line: bytes) -> dict[str, Any]:
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise ArchiveError(f"{table.name}: a line is not a JSON object")
        unknown = set(doc) - known
        if unknown:
            raise ArchiveError(f"{table.name}: unknown columns {sorted(unknown)}")
        for name in binary & doc.keys():
            if doc[name] is not None:
                doc[name] = base64.b64decode(doc[name])
        for name in times & doc.keys():
            if doc[name] is not None:
                value = datetime.fromisoformat(doc[name])
                doc[name] = value if value.tzinfo else value.replace(tzinfo=UTC)
        return doc

    return decode


def tables() -> list[Table]:
    return list(t.metadata.sorted_tables)  # parents before children


# -- members: hashing, spooling ------------------------------------------------------------


class HashingWriter:
    """Counts and hashes what goes through to `out`: the member as stored in the archive."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)
        self.out.write(data)

    def close(self) -> None:
        pass


def canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# -- encryption -----------------------------------------------------------------------------

MAGIC = b"WHARFENC1\n"
CHUNK = 64 * 1024
SCRYPT = {"n": 2**15, "r": 8, "p": 1}  # 32 MiB, ~0.1 s: per archive, not per member
_FRAME = struct.Struct(">BI")  # final flag, ciphertext length
_CHECK = b"wharf-backup passphrase check"


@dataclass(frozen=True)
class Keys:
    encryption: bytes  # AES-256-GCM
    mac: bytes  # HMAC-SHA256 of the manifest

    @classmethod
    def derive(cls, passphrase: str, params: Mapping[str, Any]) -> Keys:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        salt = base64.b64decode(params["salt"])
        kdf = Scrypt(salt=salt, length=64, n=params["n"], r=params["r"], p=params["p"])
        material = kdf.derive(passphrase.encode())
        return cls(material[:32], material[32:])

    def check_value(self) -> str:
        return hmac.new(self.mac, _CHECK, hashlib.sha256).hexdigest()

    def sign(self, manifest: Mapping[str, Any]) -> str:
        unsigned = {k: v for k, v in manifest.items() if k != "authentication"}
        return hmac.new(self.mac, canonical(unsigned), hashlib.sha256).hexdigest()


def new_encryption_params() -> dict[str, Any]:
    return {
        "cipher": "AES-256-GCM",
        "chunkSize": CHUNK,
        "kdf": "scrypt",
        **SCRYPT,
        "salt": base64.b64encode(os.urandom(16)).decode(),
    }


def _aad(name: str, index: int, final: bool) -> bytes:
    return name.encode() + b"\0" + struct.pack(">QB", index, final)


class EncryptingWriter:
    """A member encrypted in chunks: MAGIC, then for each chunk of up to CHUNK bytes
    `final flag (1) | length (4) | nonce (12) | ciphertext+tag`. The member's name, the
    chunk's index and the final flag are authenticated with each chunk, so chunks cannot be
    moved to another member, reordered, dropped or cut short without decryption failing."""

    def __init__(self, out: HashingWriter | IO[bytes], key: bytes, name: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.out, self.name, self.index = out, name, 0
        self.aead = AESGCM(key)
        self.buffer = bytearray()
        out.write(MAGIC)

    def _emit(self, chunk: bytes, final: bool) -> None:
        nonce = os.urandom(12)
        sealed = self.aead.encrypt(nonce, chunk, _aad(self.name, self.index, final))
        self.out.write(_FRAME.pack(final, len(sealed)) + nonce + sealed)
        self.index += 1

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= CHUNK:
            self._emit(bytes(self.buffer[:CHUNK]), final=False)
            del self.buffer[:CHUNK]

    def close(self) -> None:
        self._emit(bytes(self.buffer), final=True)
        self.buffer.clear()


def _read_exact(f: IO[bytes], n: int, name: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ArchiveError(f"{name} is truncated")
    return data


def decrypt_chunks(f: IO[bytes], key: bytes, name: str) -> Iterator[bytes]:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    aead = AESGCM(key)
    if f.read(len(MAGIC)) != MAGIC:
        raise ArchiveError(f"{name} is not an encrypted member")
    index = 0
    while True:
        header = f.read(_FRAME.size)
        if len(header) < _FRAME.size:
            raise ArchiveError(f"{name} is truncated (it ends before its last chunk)")
        final, length = _FRAME.unpack(header)
        if final > 1 or length > CHUNK + 16:
            raise ArchiveError(f"{name} is corrupted (a chunk header is invalid)")
        nonce = _read_exact(f, 12, name)
        sealed = _read_exact(f, length, name)
        try:
            yield aead.decrypt(nonce, sealed, _aad(name, index, bool(final)))
        except InvalidTag:
            raise ArchiveError(f"{name} was altered (chunk {index} fails authentication)") from None
        index += 1
        if final:
            if f.read(1):
                raise ArchiveError(f"{name} has data after its last chunk")
            return


def iter_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines of a stream of chunks, holding at most one line and one chunk in memory."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def read_chunks(f: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    while True:
        data = f.read(size)
        if not data:
            return
        yield data
