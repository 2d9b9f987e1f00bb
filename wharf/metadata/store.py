"""The metadata store: repositories, blobs, manifests, tags, uploads and users.

One implementation over SQLAlchemy Core serves SQLite (the embedded default) and, later,
PostgreSQL. Methods are blocking and short; the HTTP layer calls them from worker threads.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    URL,
    ColumnElement,
    Connection,
    Dialect,
    Engine,
    Executable,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from wharf.metadata import schema as t
from wharf.metadata.models import Manifest, Referrer, Repository, Upload, User

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x57484152_0001  # PostgreSQL advisory lock key: "WHAR", 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back naive ones, stored as UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def database_url(url: str, environ: Mapping[str, str] | None = None) -> URL:
    """The SQLAlchemy URL for a `--db` URL: `postgresql://` uses psycopg 3, and the password,
    when the URL has none, comes from WHARF_DB_PASSWORD (never from the command line)."""
    env = os.environ if environ is None else environ
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
        if parsed.password is None and env.get("WHARF_DB_PASSWORD"):
            parsed = parsed.set(password=env["WHARF_DB_PASSWORD"])
    elif parsed.drivername != "sqlite":
        raise ValueError(
            f"unsupported metadata store {parsed.drivername!r}: use sqlite:///path or "
            "postgresql://user@host/db"
        )
    return parsed


def create_db_engine(url: str) -> Engine:
    parsed = database_url(url)
    if parsed.drivername == "sqlite":
        engine = create_engine(parsed, pool_size=8, max_overflow=16, pool_pre_ping=False)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    # Several replicas share the server: a modest pool per process, checked before use so a
    # database restart or failover costs one retry, not an error.
    return create_engine(
        parsed,
        pool_size=5,
        max_overflow=10,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={"connect_timeout": 10, "application_name": "wharf"},
    )


def _sqlite_on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # Take transaction control from pysqlite so that writers can BEGIN IMMEDIATE: a deferred
    # transaction that later writes can fail with "database is locked" instead of waiting.
    dbapi_connection.isolation_level = None
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_on_begin(conn: Connection) -> None:
    write = conn.get_execution_options().get("wharf_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class _Prepared:
    """A query compiled once for the engine's dialect and run on a raw DBAPI cursor.

    The hot read paths (every pull) use these: building and compiling a Core statement costs
    ~100 us per call, executing the compiled SQL ~10 us.
    """

    __slots__ = ("order", "sql")

    def __init__(self, stmt: Executable, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = str(compiled)
        self.order = compiled.positiontup if compiled.positional else None

    def params(self, values: dict[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        return tuple(values[k] for k in self.order) if self.order is not None else values


def _manifest_by_tag() -> Executable:
    return (
        select(
            t.manifests.c.id, t.manifests.c.digest, t.manifests.c.media_type, t.manifests.c.content
        )
        .select_from(t.tags)
        .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
        .join(t.manifests, t.manifests.c.id == t.tags.c.manifest_id)
        .where(t.repositories.c.name == bindparam("repository"), t.tags.c.name == bindparam("tag"))
    )


def _manifest_by_digest(column: ColumnElement[Any]) -> Executable:
    return (
        select(t.manifests.c.id, t.manifests.c.media_type, t.manifests.c.content)
        .join(t.repositories, t.repositories.c.id == t.manifests.c.repository_id)
        .where(t.repositories.c.name == bindparam("repository"), column == bindparam("digest"))
    )


def _blob_size() -> Executable:
    return (
        select(t.blobs.c.size)
        .join(t.repository_blobs, t.repository_blobs.c.digest == t.blobs.c.digest)
        .join(t.repositories, t.repositories.c.id == t.repository_blobs.c.repository_id)
        .where(
            t.repositories.c.name == bindparam("repository"),
            t.blobs.c.digest == bindparam("digest"),
        )
    )


def _upload() -> Executable:
    return (
        select(t.uploads.c.id, t.uploads.c.repository_id, t.uploads.c.size)
        .join(t.repositories, t.repositories.c.id == t.uploads.c.repository_id)
        .where(
            t.uploads.c.id == bindparam("upload_id"),
            t.repositories.c.name == bindparam("repository"),
        )
    )


_QUERIES: dict[str, Callable[[], Executable]] = {
    "upload": _upload,
    "manifest_by_tag": _manifest_by_tag,
    "manifest_by_sha256": lambda: _manifest_by_digest(t.manifests.c.sha256),
    "manifest_by_sha512": lambda: _manifest_by_digest(t.manifests.c.sha512),
    "blob_size": _blob_size,
    "repository": lambda: select(
        t.repositories.c.id,
        t.repositories.c.name,
        t.repositories.c.visibility,
        t.repositories.c.namespace,
    ).where(t.repositories.c.name == bindparam("name")),
    "user": lambda: select(
        t.accounts.c.id,
        t.accounts.c.name,
        t.accounts.c.password_hash,
        t.accounts.c.is_admin,
        t.accounts.c.is_active,
        t.accounts.c.source,
    ).where(t.accounts.c.name == bindparam("username"), t.accounts.c.is_org.is_(False)),
}


class MetadataStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._dialect = self.engine.dialect.name
        self._prepared = {k: _Prepared(q(), self.engine.dialect) for k, q in _QUERIES.items()}
        # SQLite reads of one indexed row take microseconds and never wait for writers (WAL),
        # so callers may run them on the event loop instead of paying for a thread hop.
        self.fast_reads = self._dialect == "sqlite"
        # The embedded store serves exactly one replica (PostgreSQL serves several).
        self.embedded = self._dialect == "sqlite"
        self._local = threading.local()
        self._write_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (idempotent). Replicas never call this when they
        start: only `wharf install` (a new cluster) and `wharf upgrade` change the schema."""
        # Imported here: alembic (~11 MiB) is needed once at start, not in every worker.
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.connect() as conn:
            if self._dialect == "sqlite":
                # WAL mode persists in the file; set it once outside any transaction.
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            else:
                # Replicas starting together would race through the same migrations: the
                # first takes the cluster-wide lock, the others wait and then find nothing
                # left to do. A session lock, released below or when the connection drops.
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                if self._dialect != "sqlite":
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                    conn.commit()

    def lock_repository(self, conn: Connection, repository_id: int) -> None:
        """Serialise writers of one repository's tags and manifests across replicas for the
        rest of this transaction: a row lock on PostgreSQL. SQLite transactions that write
        are already serialised (one writer at a time)."""
        if self._dialect == "postgresql":
            conn.execute(
                select(t.repositories.c.id)
                .where(t.repositories.c.id == repository_id)
                .with_for_update()
            )

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[Connection]:
        """A write transaction. `durable=False` is for state whose loss in a power failure
        is harmless (upload-session bookkeeping): on SQLite it commits without an fsync,
        still atomically. A durable commit later flushes it to disk anyway."""
        if not self.embedded:
            with self.engine.connect() as conn, conn.begin():
                yield conn
            return
        # SQLite has one writer at a time and makes the others poll with sleeps of up to
        # 100 ms; queueing this process's writers on a mutex first keeps that for the rare
        # contention between processes.
        with self._write_lock, self.engine.connect() as conn:
            # On the DBAPI connection: through SQLAlchemy the PRAGMA would open a transaction,
            # inside which SQLite refuses to change it.
            raw = conn.connection.driver_connection
            if not durable:
                raw.execute("PRAGMA synchronous=NORMAL")
            try:
                with conn.execution_options(wharf_write=True).begin():
                    yield conn
            finally:
                if not durable:
                    raw.execute("PRAGMA synchronous=FULL")

    def _fetch_one(self, query: str, **values: Any) -> Any:
        prepared = self._prepared[query]
        if self.fast_reads:
            # One long-lived connection per thread, in autocommit mode: no pool round trip.
            raw = getattr(self._local, "conn", None)
            if raw is None:
                raw = self._local.conn = self._connect_unpooled()
            cursor = raw.cursor()
            try:
                cursor.execute(prepared.sql, prepared.params(values))
                return cursor.fetchone()
            finally:
                cursor.close()
        with self.engine.connect() as conn:
            return conn.exec_driver_sql(prepared.sql, prepared.params(values)).first()

    def _connect_unpooled(self) -> Any:
        # Outside the pool, so that threads holding one can never starve pooled checkouts.
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        conn = self.engine.dialect.connect(*cargs, **cparams)
        _sqlite_on_connect(conn, None)
        return conn

    def _insert(self, table):  # type: ignore[no-untyped-def]
        return (postgresql if self._dialect == "postgresql" else sqlite).insert(table)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- users ------------------------------------------------------------------------------

    def get_user(self, username: str) -> User | None:
        row = self._fetch_one("user", username=username)
        return User(row[0], row[1], row[2], bool(row[3]), bool(row[4]), row[5]) if row else None

    def create_user(self, username: str, password_hash: str | None, *, is_admin: bool) -> User:
        now = utcnow()
        with self._write() as conn:
            conn.execute(
                t.accounts.insert().values(
                    name=username,
                    is_org=False,
                    full_name="",
                    password_hash=password_hash,
                    is_admin=is_admin,
                    is_active=True,
                    source="local",
                    created_at=now,
                    updated_at=now,
                )
            )
        user = self.get_user(username)
        assert user is not None
        return user

    # -- repositories -----------------------------------------------------------------------

    def get_repository(self, name: str) -> Repository | None:
        row = self._fetch_one("repository", name=name)
        return Repository(*row) if row else None

    def ensure_repository(self, name: str) -> Repository:
        repo = self.get_repository(name)
        if repo:
            return repo
        return self.create_repository(name, if_missing=True)

    def create_repository(
        self,
        name: str,
        *,
        visibility: str = "private",
        short_description: str = "",
        long_description: str = "",
        if_missing: bool = False,
    ) -> Repository:
        """Create a repository; raises `AlreadyExists` unless `if_missing` (then returns it)."""
        with self._write() as conn:
            created = conn.execute(
                self._insert(t.repositories)
                .values(
                    name=name,
                    namespace=name.split("/", 1)[0],
                    visibility=visibility,
                    short_description=short_description,
                    long_description=long_description,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing()
                .returning(t.repositories.c.id)
            ).scalar()
            if created is None and not if_missing:
                raise AlreadyExists(name)
            row = conn.execute(select(t.repositories).where(t.repositories.c.name == name)).one()
        return Repository(row.id, row.name, row.visibility, row.namespace)

    def list_repositories(self, n: int | None, last: str | None) -> list[str]:
        q = select(t.repositories.c.name).order_by(t.repositories.c.name)
        if last:
            q = q.where(t.repositories.c.name > last)
        if n is not None:
            q = q.limit(n)
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    # -- blobs ------------------------------------------------------------------------------

    def blob_size_in_repository(self, repository: str, digest: str) -> int | None:
        """Size of a blob if it is linked into the repository."""
        row = self._fetch_one("blob_size", repository=repository, digest=digest)
        return row[0] if row else None

    def repositories_linking(self, digest: str) -> list[str]:
        q = (
            select(t.repositories.c.name)
            .join(t.repository_blobs, t.repository_blobs.c.repository_id == t.repositories.c.id)
            .where(t.repository_blobs.c.digest == digest)
        )
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    def link_blob(self, repository_id: int, digest: str, size: int) -> None:
        with self._write() as conn:
            self._link_blob(conn, repository_id, digest, size)

    def _link_blob(self, conn: Connection, repository_id: int, digest: str, size: int) -> None:
        now = utcnow()
        self._touch_blob(conn, digest, size)
        conn.execute(
            self._insert(t.repository_blobs)
            .values(repository_id=repository_id, digest=digest, created_at=now)
            .on_conflict_do_nothing()
        )

    def _touch_blob(self, conn: Connection, digest: str, size: int) -> None:
        now = utcnow()
        conn.execute(
            self._insert(t.blobs)
            .values(digest=digest, size=size, created_at=now, touched_at=now)
            .on_conflict_do_update(index_elements=[t.blobs.c.digest], set_={"touched_at": now})
        )

    def mount_blob(self, repository_id: int, digest: str) -> bool:
        """Link an existing blob into a repository (touching it); False if it is gone."""
        now = utcnow()
        with self._write() as conn:
            touched = conn.execute(
                update(t.blobs).where(t.blobs.c.digest == digest).values(touched_at=now)
            ).rowcount
            if not touched:
                return False
            conn.execute(
                self._insert(t.repository_blobs)
                .values(repository_id=repository_id, digest=digest, created_at=now)
                .on_conflict_do_nothing()
            )
        return True

    def unlink_blob(self, repository: str, digest: str) -> bool:
        repo = self.get_repository(repository)
        if repo is None:
            return False
        with self._write() as conn:
            result = conn.execute(
                delete(t.repository_blobs).where(
                    t.repository_blobs.c.repository_id == repo.id,
                    t.repository_blobs.c.digest == digest,
                )
            )
        return result.rowcount > 0

    def blob_sizes_in_repository(
        self, repository_id: int, digests: Iterable[str]
    ) -> dict[str, int]:
        digests = list(set(digests))
        if not digests:
            return {}
        q = (
            select(t.blobs.c.digest, t.blobs.c.size)
            .join(t.repository_blobs, t.repository_blobs.c.digest == t.blobs.c.digest)
            .where(
                t.repository_blobs.c.repository_id == repository_id,
                t.blobs.c.digest.in_(digests),
            )
        )
        with self._read() as conn:
            return {row.digest: row.size for row in conn.execute(q)}

    # -- uploads ----------------------------------------------------------------------------

    def create_upload(self, upload_id: str, repository_id: int) -> None:
        now = utcnow()
        with self._write(durable=False) as conn:
            conn.execute(
                t.uploads.insert().values(
                    id=upload_id,
                    repository_id=repository_id,
                    size=0,
                    created_at=now,
                    updated_at=now,
                )
            )

    def get_upload(self, upload_id: str, repository: str) -> Upload | None:
        row = self._fetch_one("upload", upload_id=upload_id, repository=repository)
        return Upload(*row) if row else None

    def lease_upload(self, upload_id: str, seconds: float) -> str | None:
        """Take the right to append to an upload: a token, or None if another request has it.

        The lease expires by itself, so a process that died while holding it blocks the
        upload for at most `seconds`."""
        now = utcnow()
        token = secrets.token_hex(16)
        with self._write(durable=False) as conn:
            result = conn.execute(
                update(t.uploads)
                .where(
                    t.uploads.c.id == upload_id,
                    (t.uploads.c.lease_until.is_(None)) | (t.uploads.c.lease_until < now),
                )
                .values(lease_until=now + timedelta(seconds=seconds), lease_token=token)
            )
        return token if result.rowcount else None

    def renew_upload_lease(self, upload_id: str, token: str, seconds: float) -> bool:
        with self._write(durable=False) as conn:
            result = conn.execute(
                update(t.uploads)
                .where(t.uploads.c.id == upload_id, t.uploads.c.lease_token == token)
                .values(lease_until=utcnow() + timedelta(seconds=seconds))
            )
        return result.rowcount > 0

    def release_upload(self, upload_id: str, token: str, size: int) -> bool:
        """Record the upload's new size and give up the lease, if it is still ours (nobody
        took it over: a lease that ran out but was not taken is still ours); False if not."""
        with self._write(durable=False) as conn:
            result = conn.execute(
                update(t.uploads)
                .where(t.uploads.c.id == upload_id, t.uploads.c.lease_token == token)
                .values(size=size, lease_until=None, lease_token=None, updated_at=utcnow())
            )
        return result.rowcount > 0

    def idle_uploads(self, idle_since: datetime) -> list[str]:
        """Upload sessions that received nothing since `idle_since` and that no request is
        writing to (a snapshot: `delete_idle_upload` checks again)."""
        u = t.uploads.c
        with self._read() as conn:
            return list(
                conn.execute(select(u.id).where(_idle_upload(idle_since, utcnow()))).scalars()
            )

    def delete_idle_upload(self, upload_id: str, idle_since: datetime) -> bool:
        """Delete the session if it is still idle and unleased: a request that leases it
        meanwhile keeps it (and a request whose lease ran out finds it gone and fails)."""
        with self._write() as conn:
            result = conn.execute(
                delete(t.uploads).where(
                    t.uploads.c.id == upload_id, _idle_upload(idle_since, utcnow())
                )
            )
        return result.rowcount > 0

    def clear_upload_leases(self) -> None:
        """Forget every lease: only for a store no running process uses (start of a lone
        replica), where any lease is left over from a process that died."""
        with self._write() as conn:
            conn.execute(update(t.uploads).values(lease_until=None, lease_token=None))

    def complete_upload(
        self,
        upload_id: str,
        repository_id: int,
        digest: str,
        size: int,
        place: Callable[[], None] = lambda: None,
        token: str | None = None,
    ) -> None:
        """Record the verified blob, link it into the repository and end the session, at once.

        With `token`, only while that lease holds the session (else LeaseLost, and nothing
        changes): ending the session first locks its row, so no request can take the upload
        over while its bytes are placed.

        `place` puts the blob's bytes at their content address; it runs after the blob's row
        is written (and so locked) and before the commit, which is what keeps garbage
        collection from deleting the object of a blob that is being pushed again."""
        with self._write() as conn:
            ended = delete(t.uploads).where(t.uploads.c.id == upload_id)
            if token is not None:
                ended = ended.where(t.uploads.c.lease_token == token)
            if not conn.execute(ended).rowcount and token is not None:
                raise LeaseLost(upload_id)
            self._touch_blob(conn, digest, size)
            place()
            self._link_blob(conn, repository_id, digest, size)

    def delete_upload(self, upload_id: str, token: str | None = None) -> bool:
        """Delete an upload session; with `token`, only while that lease holds it."""
        query = delete(t.uploads).where(t.uploads.c.id == upload_id)
        if token is not None:
            query = query.where(t.uploads.c.lease_token == token)
        with self._write() as conn:
            result = conn.execute(query)
        return result.rowcount > 0

    # -- manifests and tags -----------------------------------------------------------------

    def get_manifest_by_tag(self, repository: str, tag: str) -> Manifest | None:
        row = self._fetch_one("manifest_by_tag", repository=repository, tag=tag)
        return Manifest(row[0], row[1], row[2], bytes(row[3])) if row else None

    def get_manifest_by_digest(self, repository: str, digest: str) -> Manifest | None:
        query = "manifest_by_sha512" if digest.startswith("sha512:") else "manifest_by_sha256"
        row = self._fetch_one(query, repository=repository, digest=digest)
        return Manifest(row[0], digest, row[1], bytes(row[2])) if row else None

    def manifest_sizes(self, repository_id: int, digests: Iterable[str]) -> dict[str, int]:
        """The length of each of these manifests the repository holds, by digest."""
        wanted = set(digests)
        found: dict[str, int] = {}
        for column, prefix in (
            (t.manifests.c.sha256, "sha256:"),
            (t.manifests.c.sha512, "sha512:"),
        ):
            some = [d for d in wanted if d.startswith(prefix)]
            if not some:
                continue
            q = select(column, t.manifests.c.size).where(
                t.manifests.c.repository_id == repository_id, column.in_(some)
            )
            with self._read() as conn:
                found.update({digest: size for digest, size in conn.execute(q)})
        return found

    def put_manifest(
        self,
        repository_id: int,
        *,
        digest: str,
        sha256: str,
        sha512: str,
        media_type: str,
        content: bytes,
        artifact_type: str | None,
        subject: str | None,
        annotations: dict[str, str] | None,
        references: Iterable[tuple[str, str]],
        tags: Iterable[str] = (),
        author: str | None = None,
        required_blobs: Iterable[str] = (),
        required_manifests: Iterable[str] = (),
    ) -> str:
        """Store a manifest (once per repository) and point the given tags at it.

        The blobs and child manifests it needs are checked again inside the transaction, under
        locks garbage collection also takes (blob rows, the repository row), so a collection
        running concurrently either sees this manifest's references or has already removed
        what it needs, and then the push is refused (MissingReference).

        Returns the digest the repository knows it by: the one it was first pushed under."""
        now = utcnow()
        with self._write() as conn:
            self.lock_repository(conn, repository_id)
            self._check_references(conn, repository_id, required_blobs, required_manifests)
            # Concurrent pushes of one manifest: exactly one insert wins, the others find it.
            manifest_id = conn.execute(
                self._insert(t.manifests)
                .values(
                    repository_id=repository_id,
                    digest=digest,
                    sha256=sha256,
                    sha512=sha512,
                    media_type=media_type,
                    size=len(content),
                    image_size=image_size(media_type, content),
                    content=content,
                    artifact_type=artifact_type,
                    subject=subject,
                    annotations=json.dumps(annotations) if annotations else None,
                    created_at=now,
                )
                # Any conflict (sha256 or sha512 unique key): PostgreSQL reports whichever
                # it meets first, so no single arbiter index would do.
                .on_conflict_do_nothing()
                .returning(t.manifests.c.id)
            ).scalar()
            if manifest_id is not None:
                refs = [
                    {"manifest_id": manifest_id, "kind": kind, "digest": ref}
                    for kind, ref in set(references)
                ]
                if refs:
                    conn.execute(t.manifest_references.insert(), refs)
            else:
                manifest_id, digest = conn.execute(
                    select(t.manifests.c.id, t.manifests.c.digest).where(
                        t.manifests.c.repository_id == repository_id,
                        t.manifests.c.sha256 == sha256,
                    )
                ).one()
            for tag in tags:
                stmt = self._insert(t.tags).values(
                    repository_id=repository_id,
                    name=tag,
                    manifest_id=manifest_id,
                    updated_at=now,
                    created_at=now,
                    author=author,
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[t.tags.c.repository_id, t.tags.c.name],
                        set_={"manifest_id": manifest_id, "updated_at": now, "author": author},
                    )
                )
            return digest

    def _check_references(
        self,
        conn: Connection,
        repository_id: int,
        blobs: Iterable[str],
        manifests: Iterable[str],
    ) -> None:
        blobs, manifests = sorted(set(blobs)), sorted(set(manifests))
        if blobs:
            q = (
                select(t.blobs.c.digest)
                .join(t.repository_blobs, t.repository_blobs.c.digest == t.blobs.c.digest)
                .where(
                    t.repository_blobs.c.repository_id == repository_id,
                    t.blobs.c.digest.in_(blobs),
                )
            )
            if self._dialect == "postgresql":
                q = q.with_for_update(read=True, of=t.blobs)
            found = set(conn.execute(q).scalars())
            missing = [d for d in blobs if d not in found]
            if missing:
                raise MissingReference(missing[0])
        if manifests:
            m = t.manifests.c
            found = set()
            for row in conn.execute(
                select(m.digest, m.sha256, m.sha512).where(
                    m.repository_id == repository_id,
                    or_(m.digest.in_(manifests), m.sha256.in_(manifests), m.sha512.in_(manifests)),
                )
            ):
                found.update(row)
            missing = [d for d in manifests if d not in found]
            if missing:
                raise MissingReference(missing[0])

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete a manifest and every tag pointing at it."""
        manifest = self.get_manifest_by_digest(repository, digest)
        if manifest is None:
            return False
        with self._write() as conn:
            owner = conn.execute(
                select(t.manifests.c.repository_id).where(t.manifests.c.id == manifest.id)
            ).scalar()
            if owner is None:
                return False
            self.lock_repository(conn, owner)
            conn.execute(delete(t.tags).where(t.tags.c.manifest_id == manifest.id))
            conn.execute(
                delete(t.manifest_references).where(
                    t.manifest_references.c.manifest_id == manifest.id
                )
            )
            result = conn.execute(delete(t.manifests).where(t.manifests.c.id == manifest.id))
        return result.rowcount > 0

    def delete_tag(self, repository: str, tag: str) -> bool:
        repo = self.get_repository(repository)
        if repo is None:
            return False
        with self._write() as conn:
            self.lock_repository(conn, repo.id)
            result = conn.execute(
                delete(t.tags).where(t.tags.c.repository_id == repo.id, t.tags.c.name == tag)
            )
        return result.rowcount > 0

    def list_tags(self, repository_id: int, n: int | None, last: str | None) -> list[str]:
        q = (
            select(t.tags.c.name)
            .where(t.tags.c.repository_id == repository_id)
            .order_by(t.tags.c.name)
        )
        if last:
            q = q.where(t.tags.c.name > last)
        if n is not None:
            q = q.limit(n)
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    def referrers(self, repository: str, subject: str, artifact_type: str | None) -> list[Referrer]:
        conditions = [t.repositories.c.name == repository, t.manifests.c.subject == subject]
        if artifact_type is not None:
            conditions.append(t.manifests.c.artifact_type == artifact_type)
        q = (
            select(
                t.manifests.c.digest,
                t.manifests.c.media_type,
                t.manifests.c.size,
                t.manifests.c.artifact_type,
                t.manifests.c.annotations,
            )
            .join(t.repositories, t.repositories.c.id == t.manifests.c.repository_id)
            .where(and_(*conditions))
            .order_by(t.manifests.c.created_at, t.manifests.c.id)
        )
        with self._read() as conn:
            return [Referrer(*row) for row in conn.execute(q)]

    def sample_blobs(self, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` stored blobs (digest, size), chosen at random."""
        with self._read() as conn:
            rows = conn.execute(
                select(t.blobs.c.digest, t.blobs.c.size).order_by(func.random()).limit(limit)
            ).all()
        return [(row.digest, row.size) for row in rows]

    def count(self, table_name: str) -> int:
        with self._read() as conn:
            return conn.execute(
                select(func.count()).select_from(t.metadata.tables[table_name])
            ).scalar_one()


MAX_IMAGE_SIZE = 2**63 - 1


def image_size(media_type: str, content: bytes) -> int:
    """Bytes of an image: the manifest, its config and its layers (an index: itself)."""
    size = len(content)
    try:
        doc = json.loads(content)
    except ValueError:
        return size
    if not isinstance(doc, dict):
        return size
    for part in [doc.get("config"), *list(doc.get("layers") or [])]:
        if isinstance(part, dict) and isinstance(part.get("size"), int):
            size += part["size"]
    # Pushes are refused past it since 0.2.1; a manifest stored before must still fit the
    # BigInteger column (the 0.2.0 backfill fills it in).
    return min(size, MAX_IMAGE_SIZE)


def _idle_upload(idle_since: datetime, now: datetime) -> ColumnElement[bool]:
    u = t.uploads.c
    return and_(u.updated_at < idle_since, or_(u.lease_until.is_(None), u.lease_until < now))


class LeaseLost(Exception):
    """The request no longer holds the upload's write lease."""


class MissingReference(Exception):
    """A manifest needs a blob or manifest the repository does not have (any more)."""


class AlreadyExists(Exception):
    """A unique name is taken."""
