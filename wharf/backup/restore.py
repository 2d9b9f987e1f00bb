"""Reading a backup: verifying it completely before anything changes, then loading it into a
fresh metadata store in one transaction.

Verification (`verify`, also `wharf backup --verify`): the tar must end with the manifest
(an archive cut short has none), name exactly the members the manifest lists, and every
member must have the size and SHA-256 recorded there. An encrypted archive's manifest must
carry a valid HMAC under the key derived from the passphrase (a wrong passphrase is told
apart from a tampered manifest by a separate check value). Only then is anything created.

Loading (`load`): the schema (the backup's Alembic revision) and every row are written in
ONE transaction of the target, in foreign-key order and in batches; the old cluster's
running jobs are put back as a stale worker's would be, upload leases are cleared, and the
id counters are moved past every id the old cluster ever handed out. A failure at any point
rolls everything back.
"""

from __future__ import annotations

import hmac
import json
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import Connection, Integer, func, select, text, update

from wharf.backup import archive as a
from wharf.metadata import schema as t
from wharf.metadata.store import MIGRATIONS, MetadataStore, utcnow
from wharf.upgrade.versions import Version, VersionError

INSERT_ROWS = 500


class VersionRefused(Exception):
    """The backup is from another minor (or major) version: refused by a rule (exit 3)."""


@dataclass
class Verified:
    tar: tarfile.TarFile
    manifest: dict[str, Any]
    keys: a.Keys | None

    @property
    def version(self) -> str:
        return str(self.manifest["wharfVersion"])

    def member_chunks(self, name: str) -> Iterator[bytes]:
        f = self.tar.extractfile(name)
        if f is None:
            raise a.ArchiveError(f"{name} is not a file")
        if self.keys:
            return a.decrypt_chunks(f, self.keys.encryption, name)
        return a.read_chunks(f)

    def member_lines(self, name: str) -> Iterator[bytes]:
        return a.iter_lines(self.member_chunks(name))

    def member_bytes(self, name: str) -> bytes:
        return b"".join(self.member_chunks(name))

    def find(self, folder: str, filename: str) -> str | None:
        base = f"{a.ROOT}/{folder}/{filename}"
        for name in (base, base + ".enc"):
            if name in self.manifest["members"]:
                return name
        return None

    def replica_config(self) -> dict[str, Any]:
        name = self.find("config", "replica.json")
        return json.loads(self.member_bytes(name)) if name else {}

    def table_rows(self, table: str) -> Iterator[dict[str, Any]]:
        """Rows of one table, decoded (for reading small tables such as settings)."""
        decode = a.row_decoder(t.metadata.tables[table])
        for name, info in sorted(self.manifest["members"].items()):
            if info.get("table") == table:
                for line in self.member_lines(name):
                    yield decode(line)

    def setting(self, key: str) -> Any:
        for row in self.table_rows("settings"):
            if row["key"] == key:
                return json.loads(row["value"])
        return None


def open_archive(fileobj: IO[bytes]) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=fileobj, mode="r:")
    except (tarfile.TarError, OSError) as e:
        raise a.ArchiveError(f"not a tar archive ({e})") from None


def _read_manifest(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo]) -> dict[str, Any]:
    info = files.get(a.MANIFEST)
    if info is None:
        raise a.ArchiveError(
            f"no {a.MANIFEST}: the archive is truncated (the manifest is its last member) or "
            "is not a Wharf backup"
        )
    if info.size > 64 * 1024 * 1024:
        raise a.ArchiveError(f"{a.MANIFEST} is implausibly large")
    f = tar.extractfile(info)
    try:
        data = f.read() if f else b""
        manifest = json.loads(data)
    except (tarfile.TarError, OSError) as e:
        raise a.ArchiveError(
            f"{a.MANIFEST} cannot be read ({e}): the archive is truncated"
        ) from None
    except ValueError:
        raise a.ArchiveError(f"{a.MANIFEST} is not valid JSON: the archive is corrupted") from None
    if not isinstance(manifest, dict) or manifest.get("format") != a.FORMAT:
        raise a.ArchiveError(f"{a.MANIFEST} is not a Wharf backup manifest")
    if manifest.get("formatVersion") != a.FORMAT_VERSION:
        raise a.ArchiveError(
            f"archive format {manifest.get('formatVersion')} is not one this Wharf reads "
            f"({a.FORMAT_VERSION}); restore it with the Wharf version that made it "
            f"({manifest.get('wharfVersion')})"
        )
    for key in ("wharfVersion", "members", "store", "encrypted", "createdAt"):
        if key not in manifest:
            raise a.ArchiveError(f"{a.MANIFEST} has no {key!r}: the archive is corrupted")
    return manifest


def verify(
    fileobj: IO[bytes],
    passphrase: Callable[[], str] | None,
    progress: Callable[[str], None] | None = None,
) -> Verified:
    """Check the whole archive; ArchiveError (or WrongPassphrase) says what is wrong."""
    tar = open_archive(fileobj)
    files: dict[str, tarfile.TarInfo] = {}
    try:
        for info in tar:
            if info.isdir():
                continue
            if not info.isfile() or info.name in files:
                raise a.ArchiveError(f"unexpected member {info.name!r}: the archive was altered")
            files[info.name] = info
    except (tarfile.TarError, OSError) as e:
        raise a.ArchiveError(f"the archive is damaged or truncated ({e})") from None
    manifest = _read_manifest(tar, files)
    keys = None
    if manifest["encrypted"]:
        auth = manifest.get("authentication") or {}
        params = manifest.get("encryption") or {}
        if not auth or not params:
            raise a.ArchiveError("the encrypted archive's manifest lacks its authentication")
        if passphrase is None:
            raise a.WrongPassphrase("the archive is encrypted: a passphrase is needed")
        try:
            keys = a.Keys.derive(passphrase(), params)
        except (KeyError, TypeError, ValueError) as e:
            raise a.ArchiveError(
                f"the manifest's encryption parameters are invalid ({e})"
            ) from None
        if not hmac.compare_digest(keys.check_value(), str(auth.get("keyCheck"))):
            raise a.WrongPassphrase(
                "wrong passphrase: it does not open this archive (check WHARF_BACKUP_PASSPHRASE)"
            )
        if not hmac.compare_digest(keys.sign(manifest), str(auth.get("hmacSha256"))):
            raise a.ArchiveError(f"{a.MANIFEST} was altered: its authentication code is wrong")
    members = manifest["members"]
    listed, present = set(members), set(files) - {a.MANIFEST}
    if present - listed:
        extra = sorted(present - listed)[0]
        raise a.ArchiveError(f"{extra} is not in the manifest: the archive was altered")
    if listed - present:
        missing = sorted(listed - present)[0]
        raise a.ArchiveError(f"{missing} is missing: the archive is truncated or was altered")
    for name in sorted(listed):
        expected = members[name]
        info = files[name]
        if info.size != expected.get("size"):
            raise a.ArchiveError(
                f"{name} has {info.size} bytes, the manifest says {expected.get('size')}: "
                "the archive is corrupted or was altered"
            )
        digest = _sha256_of(tar, info)
        if not hmac.compare_digest(digest, str(expected.get("sha256"))):
            raise a.ArchiveError(
                f"{name} does not match its checksum: the archive is corrupted or was altered"
            )
        if progress:
            progress(name)
    return Verified(tar, manifest, keys)


def _sha256_of(tar: tarfile.TarFile, info: tarfile.TarInfo) -> str:
    import hashlib

    sha = hashlib.sha256()
    try:
        f = tar.extractfile(info)
        for chunk in a.read_chunks(f, 1024 * 1024):  # type: ignore[arg-type]
            sha.update(chunk)
    except (tarfile.TarError, OSError) as e:
        raise a.ArchiveError(
            f"{info.name} cannot be read ({e}): the archive is truncated"
        ) from None
    return sha.hexdigest()


def check_version(backup: str, software: str) -> str | None:
    """None when the backup restores on this software as it is; a warning across patch
    versions; VersionRefused across minor or major versions."""
    try:
        made, here = Version.parse(backup), Version.parse(software)
    except VersionError as e:
        raise VersionRefused(f"the backup's version is not understood ({e})") from None
    if (made.major, made.minor) != (here.major, here.minor):
        raise VersionRefused(
            f"this backup was made by Wharf {made} and this is Wharf {here}: backups restore "
            f"only on the same minor version. Install Wharf {made.major}.{made.minor}.x (for "
            f"example {made}) to restore it, then `wharf upgrade` from there"
        )
    if made != here:
        return (
            f"the backup was made by Wharf {made} and this is Wharf {here} (another patch "
            "version of the same minor): restoring it anyway, at your own risk"
        )
    return None


# -- loading --------------------------------------------------------------------------------


def _migrate(conn: Connection, revision: str) -> None:
    """The schema, inside the caller's transaction (both stores run DDL transactionally), so
    that a failed restore leaves not even empty tables behind."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def _put_back_running_jobs(store: MetadataStore, conn: Connection) -> int:
    """Jobs that were running when the backup was taken belonged to workers of the old
    cluster: handled as a stale worker's (retried while retries are left, else errored)."""
    from wharf.jobs.store import CANCELED, ERRORED, RUNNING, WAITING, JobStore

    jobs = JobStore(store)
    rows = conn.execute(
        select(t.jobs.c.id, t.jobs.c.retries_left, t.jobs.c.cancel_requested).where(
            t.jobs.c.state == RUNNING
        )
    ).all()
    now = utcnow()
    for row in rows:
        if row.cancel_requested:
            values: dict[str, Any] = {"state": CANCELED, "ended_at": now}
            note = "it had been canceled"
        elif row.retries_left > 0:
            values = {
                "state": WAITING,
                "retries_left": row.retries_left - 1,
                "worker_id": None,
                "scheduled_at": now,
            }
            note = f"will retry ({row.retries_left - 1} retries left)"
        else:
            values = {"state": ERRORED, "ended_at": now}
            note = "no retries left"
        conn.execute(update(t.jobs).where(t.jobs.c.id == row.id).values(**values))
        jobs._log(conn, row.id, [f"restored from a backup taken while it was running; {note}"])
    return len(rows)


def _restore_sequences(conn: Connection, recorded: dict[str, int]) -> None:
    """Move every id counter past the highest id the old cluster handed out (kept in the
    manifest) and past every restored id."""
    for table in a.tables():
        key = list(table.primary_key.columns)
        if len(key) != 1 or not isinstance(key[0].type, Integer):
            continue
        highest = conn.execute(select(func.coalesce(func.max(key[0]), 0))).scalar_one()
        value = max(int(highest), int(recorded.get(table.name, 0)))
        if conn.dialect.name == "postgresql":
            sequence = func.pg_get_serial_sequence(table.name, key[0].name)
            if value > 0:
                conn.execute(select(func.setval(sequence, value, True)))
            continue
        if not table.kwargs.get("sqlite_autoincrement") or value == 0:
            continue  # SQLite hands out max(id) + 1: nothing to keep
        found = conn.execute(
            text("SELECT seq FROM sqlite_sequence WHERE name = :n"), {"n": table.name}
        ).scalar()
        if found is None:
            conn.execute(
                text("INSERT INTO sqlite_sequence (name, seq) VALUES (:n, :v)"),
                {"n": table.name, "v": value},
            )
        else:
            conn.execute(
                text("UPDATE sqlite_sequence SET seq = :v WHERE name = :n"),
                {"n": table.name, "v": max(value, int(found))},
            )


@dataclass
class LoadReport:
    rows: dict[str, int]
    requeued_jobs: int

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def load(
    verified: Verified,
    target: MetadataStore,
    *,
    adjust: Callable[[Connection], None] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> LoadReport:
    """Create the schema and every row of the backup in `target` (which must be empty), then
    `adjust(conn)` (the restore's own changes), all in one transaction."""
    manifest = verified.manifest
    by_table: dict[str, list[str]] = {}
    known = {table.name for table in a.tables()}
    for name, info in manifest["members"].items():
        table = info.get("table")
        if table is None:
            continue
        if table not in known:
            raise a.ArchiveError(f"{name}: table {table!r} is unknown to this Wharf")
        by_table.setdefault(table, []).append(name)
    revision = manifest["store"]["schemaRevision"]
    counts: dict[str, int] = {}
    with target.engine.connect() as conn, conn.begin():
        _migrate(conn, revision)
        for table in a.tables():
            if table.name in a.NOT_RESTORED:
                continue
            decode = a.row_decoder(table)
            count = 0
            for name in sorted(by_table.get(table.name, [])):
                expected = manifest["members"][name].get("rows")
                batch: list[dict[str, Any]] = []
                in_member = 0
                for line in verified.member_lines(name):
                    batch.append(decode(line))
                    if len(batch) >= INSERT_ROWS:
                        conn.execute(table.insert(), batch)
                        in_member += len(batch)
                        batch = []
                        if progress:
                            progress(table.name, count + in_member)
                if batch:
                    conn.execute(table.insert(), batch)
                    in_member += len(batch)
                if expected is not None and in_member != expected:
                    raise a.ArchiveError(
                        f"{name} holds {in_member} rows, the manifest says {expected}"
                    )
                count += in_member
            counts[table.name] = count
        conn.execute(update(t.uploads).values(lease_until=None, lease_token=None))
        requeued = _put_back_running_jobs(target, conn)
        _restore_sequences(conn, manifest["store"].get("sequences") or {})
        if adjust is not None:
            adjust(conn)
    return LoadReport(counts, requeued)


def drop_everything(target: MetadataStore) -> None:
    """Undo a restore whose load committed but whose later steps failed (PostgreSQL)."""
    with target.engine.connect() as conn, conn.begin():
        t.metadata.drop_all(conn, checkfirst=True)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
