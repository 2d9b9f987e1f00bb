"""Which errors are environmental faults (answered 507/503, logged as one line) and which are
bugs (500 and a traceback): the cases the server tests cannot stage on this machine (a disk
quota needs quota support in the kernel's tmpfs), and the bugs that must stay bugs.
The SQLite errors are real ones, raised by SQLite itself."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import psycopg
import pytest
from psycopg import errors as pg
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from wharf.faults import fault_of
from wharf.storage.base import StorageError


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "full"),
        (OSError(errno.EROFS, "Read-only file system"), "read-only"),
        (OSError(errno.EIO, "Input/output error"), "unavailable"),
        (StorageError("S3 bucket b: SlowDown"), "unavailable"),
    ],
)
def test_storage_faults(error: BaseException, kind: str) -> None:
    fault = fault_of(error)
    assert fault is not None and fault.kind == kind and fault.where == "storage"


def test_a_full_sqlite_database_is_a_fault_and_a_missing_table_a_bug(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'db'}")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE t (x TEXT)"))
        conn.execute(text("PRAGMA max_page_count = 2"))
        with pytest.raises(OperationalError) as full:
            conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": "x" * 100_000})
        with pytest.raises(OperationalError) as missing:
            conn.execute(text("SELECT * FROM no_such_table"))
    engine.dispose()
    fault = fault_of(full.value)
    assert fault is not None and (fault.kind, fault.where) == ("full", "database")
    assert fault_of(full.value.orig) == fault  # raw sqlite3 errors too (the fast read path)
    assert fault_of(missing.value) is None


def test_a_read_only_sqlite_database_is_a_fault(tmp_path: Path) -> None:
    path = tmp_path / "db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as e:
        conn.execute("INSERT INTO t VALUES (1)")
    fault = fault_of(e.value)
    assert fault is not None and fault.kind == "read-only"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (psycopg.OperationalError("connection failed: Connection refused"), "unavailable"),
        (pg.AdminShutdown("terminating connection due to administrator command"), "unavailable"),
        (pg.CannotConnectNow("the database system is starting up"), "unavailable"),
        (pg.TooManyConnections("sorry, too many clients already"), "unavailable"),
        (pg.DiskFull("could not extend file"), "full"),
        (pg.ReadOnlySqlTransaction("cannot execute INSERT in a read-only tx"), "read-only"),
        # Ours: deadlocks, canceled statements, NOWAIT locks, bad SQL, constraint violations.
        (pg.DeadlockDetected("deadlock detected"), None),
        (pg.QueryCanceled("canceling statement due to statement timeout"), None),
        (pg.LockNotAvailable("could not obtain lock"), None),
        (pg.UndefinedTable("relation does not exist"), None),
        (pg.UniqueViolation("duplicate key"), None),
    ],
)
def test_postgresql_faults_and_bugs(error: BaseException, kind: str | None) -> None:
    fault = fault_of(error)
    assert (fault.kind if fault else None) == kind


@pytest.mark.parametrize(
    "error",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory"),
        PermissionError(errno.EACCES, "Permission denied"),
        ValueError("a bug"),
        KeyError("a bug"),
    ],
)
def test_bugs_are_not_faults(error: BaseException) -> None:
    assert fault_of(error) is None
