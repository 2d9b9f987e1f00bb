"""`wharf backup`: one snapshot of the metadata store, written as a tar stream.

Every table is read inside ONE read transaction (PostgreSQL: REPEATABLE READ, READ ONLY;
SQLite in WAL mode: one read transaction), so the archive is one point in time for all the
metadata whatever is pushed meanwhile; the registry keeps serving (readers never block
writers in either store). Each member is spooled to a temporary file while it is written
(a tar header needs the member's size up front) and then copied to the output: memory stays
bounded by one batch of rows, whatever the size of the store. With a passphrase, members
are encrypted as they are spooled: no private key is ever written to disk in clear.
"""

from __future__ import annotations

import io
import json
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Connection, Integer, func, select, text

from wharf.backup import archive as a
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, utcnow
from wharf.storage.config import CREDENTIALS_FILE

BATCH_ROWS = 100  # manifests may be up to 4 MiB each: bounded by rows, not bytes


def _dir_entry(name: str, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o700
    info.mtime = int(mtime)
    return info


def _file_entry(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    return info


def read_sequences(conn: Connection) -> dict[str, int]:
    """The next-id counters, so that a restore never hands out an id again (access tokens and
    sessions carry account ids): SQLite's sqlite_sequence, PostgreSQL's serial sequences."""
    found: dict[str, int] = {}
    if conn.dialect.name == "sqlite":
        has = conn.execute(
            text("SELECT 1 FROM sqlite_master WHERE type='table' AND name='sqlite_sequence'")
        ).scalar()
        if has:
            for name, seq in conn.execute(text("SELECT name, seq FROM sqlite_sequence")):
                found[name] = int(seq)
        return found
    for table in a.tables():
        key = list(table.primary_key.columns)
        if len(key) == 1 and isinstance(key[0].type, Integer):
            seq = conn.execute(select(func.pg_get_serial_sequence(table.name, key[0].name)))
            name = seq.scalar()
            if name:
                # A name PostgreSQL itself returned, not input.
                query = text(f"SELECT last_value, is_called FROM {name}")  # noqa: S608
                row = conn.execute(query).one()
                found[table.name] = int(row[0]) if row[1] else int(row[0]) - 1
    return found


class Backup:
    """Writes one archive to `out` (a binary stream; need not be seekable)."""

    def __init__(
        self,
        store: MetadataStore,
        out: IO[bytes],
        *,
        data_dir: Path | None,
        replica_config: dict[str, Any] | None,
        passphrase: str | None = None,
        spool_dir: Path | None = None,
        progress: Callable[[str, int], None] | None = None,
    ) -> None:
        self.store = store
        self.data_dir = data_dir
        self.replica_config = replica_config or {}
        self.spool_dir = spool_dir
        self.progress = progress
        self.encryption = a.new_encryption_params() if passphrase else None
        self.keys = a.Keys.derive(passphrase, self.encryption) if passphrase else None
        self.members: dict[str, dict[str, Any]] = {}
        self.mtime = time.time()
        self.tar = tarfile.open(  # noqa: SIM115 - closed by run()
            fileobj=out, mode="w|", format=tarfile.PAX_FORMAT
        )

    # -- members ----------------------------------------------------------------------------

    def _add(self, name: str, write: Callable[[Any], dict[str, Any] | None]) -> None:
        """Spool one member (encrypted when there is a passphrase), then append it."""
        with tempfile.TemporaryFile(dir=self.spool_dir) as spool:
            sink = a.HashingWriter(spool)
            writer: Any = (
                a.EncryptingWriter(sink, self.keys.encryption, name) if self.keys else sink
            )
            extra = write(writer) or {}
            writer.close()
            spool.seek(0)
            self.tar.addfile(_file_entry(name, sink.size, self.mtime), spool)
        self.members[name] = {"sha256": sink.sha256.hexdigest(), "size": sink.size, **extra}

    def _add_bytes(self, folder: str, filename: str, data: bytes) -> None:
        name = f"{a.ROOT}/{folder}/{filename}" + (".enc" if self.keys else "")
        self._add(name, lambda w: w.write(data))

    def _add_table(self, conn: Connection, table: Any, folder: str, where: Any = None) -> None:
        name = a.member_name(folder, table.name, bool(self.keys))
        query = select(table).order_by(*table.primary_key.columns)
        if where is not None:
            query = query.where(where)

        def write(w: Any) -> dict[str, Any]:
            rows = 0
            result = conn.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
                query
            )
            for batch in result.mappings().partitions(BATCH_ROWS):
                w.write(b"".join(a.encode_row(r) for r in batch))
                rows += len(batch)
                if self.progress:
                    self.progress(table.name, rows)
            return {"table": table.name, "rows": rows}

        self._add(name, write)

    # -- the archive ------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        for folder in (a.ROOT, *(f"{a.ROOT}/{f}" for f in a.FOLDERS)):
            self.tar.addfile(_dir_entry(folder, self.mtime))
        with self.store.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # The first statement of the transaction: every table from one snapshot.
                conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            created = utcnow()
            schema = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            settings = t.settings.c.key
            cluster_value = conn.execute(
                select(t.settings.c.value).where(settings == "cluster")
            ).scalar()
            for table in a.tables():
                if table.name == "settings":
                    self._add_table(conn, table, "config", settings.not_in(a.CERTIFICATE_SETTINGS))
                    self._add_table(
                        conn, table, "certificates", settings.in_(a.CERTIFICATE_SETTINGS)
                    )
                else:
                    self._add_table(conn, table, a.folder_of(table.name))
            sequences = read_sequences(conn)
            dialect = conn.dialect.name
            conn.rollback()
        self._add_bytes("config", "replica.json", a.canonical(self.replica_config))
        credentials = self.data_dir / CREDENTIALS_FILE if self.data_dir else None
        excluded = list(a.EXCLUDED)
        if credentials is not None and credentials.exists():
            if self.keys:
                self._add_bytes("config", CREDENTIALS_FILE, credentials.read_bytes())
            else:
                excluded.append(f"storage credentials ({CREDENTIALS_FILE}): encrypted backups only")
        replica = None
        if self.data_dir and (self.data_dir / "replica-id").exists():
            replica = (self.data_dir / "replica-id").read_text().strip()
        from wharf.upgrade.history import software_version

        cluster = json.loads(cluster_value) if cluster_value else {}
        manifest: dict[str, Any] = {
            "format": a.FORMAT,
            "formatVersion": a.FORMAT_VERSION,
            "wharfVersion": software_version(),
            "cluster": cluster,
            "clusterId": cluster.get("id") or cluster.get("createdAt"),
            "replicaId": replica,
            "hostname": socket.gethostname(),
            "createdAt": created.isoformat(),
            "store": {"dialect": dialect, "schemaRevision": schema, "sequences": sequences},
            "excluded": excluded,
            "notes": dict(a.NOT_YET),
            "encrypted": self.keys is not None,
            "members": self.members,
        }
        if self.keys and self.encryption:
            manifest["encryption"] = self.encryption
            manifest["authentication"] = {
                "keyCheck": self.keys.check_value(),
                "hmacSha256": self.keys.sign(manifest),
            }
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        self.tar.addfile(_file_entry(a.MANIFEST, len(data), self.mtime), io.BytesIO(data))
        self.tar.close()
        return manifest


def backup(store: MetadataStore, out: IO[bytes], **options: Any) -> dict[str, Any]:
    return Backup(store, out, **options).run()
