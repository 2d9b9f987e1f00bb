"""Failures of what Wharf runs on rather than of Wharf: a full or read-only disk, a metadata
database or an object store that cannot be reached.

Recognised here, once, for every HTTP layer and background loop: they are answered with a
clear status (507 or 503) and logged as one line, since a traceback says nothing an operator
can act on. Anything not recognised is a bug, answered 500 with its traceback logged.
"""

from __future__ import annotations

import errno
import logging
import sqlite3
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from wharf.storage.base import StorageError

Kind = Literal["full", "read-only", "unavailable"]
RETRY_AFTER = "10"  # seconds, with a 503: long enough for a database failover or restart

# Exception types that may be faults: an HTTP layer routes these to `fault_of`.
CANDIDATES = (OSError, SQLAlchemyError, sqlite3.Error, StorageError)

_DISK = {
    errno.ENOSPC: ("full", "no space left on device"),
    errno.EDQUOT: ("full", "disk quota exceeded"),
    errno.EROFS: ("read-only", "read-only file system"),
    errno.EIO: ("unavailable", "input/output error"),
}
# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE: dict[int, Kind] = {
    13: "full",  # SQLITE_FULL: its disk is full
    8: "read-only",  # SQLITE_READONLY
    5: "unavailable",  # SQLITE_BUSY: still locked after the busy timeout
    10: "unavailable",  # SQLITE_IOERR
    14: "unavailable",  # SQLITE_CANTOPEN
}  # not SQLITE_CORRUPT: nothing to wait for, and its traceback is worth having
# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_FULL = {"53100"}  # disk_full
_PG_READ_ONLY = {"25006"}  # read_only_sql_transaction: a standby, or default_transaction_read_only
# Operational errors that our own SQL causes: deadlocks and serialisation failures (class 40),
# a canceled statement, a NOWAIT lock not available. Bugs or races, not outages.
_PG_OURS = ("40", "57014", "55P03")

CLIENT_MESSAGES = {
    ("full", "storage"): "the registry's storage is full; an administrator must free space",
    ("full", "database"): "the registry's metadata database is out of space; an administrator "
    "must free space",
    ("read-only", "storage"): "the registry's storage is read-only",
    ("read-only", "database"): "the registry's metadata database is read-only",
    ("unavailable", "storage"): "the registry's storage is unavailable; try again later",
    ("unavailable", "database"): "the registry's metadata database is unavailable; try again later",
}


@dataclass(frozen=True)
class Fault:
    kind: Kind
    where: Literal["storage", "database"]
    detail: str  # for the log: what the OS, driver or server said (never a credential)

    @property
    def message(self) -> str:
        """For the client: what is wrong, without the server's internals."""
        return CLIENT_MESSAGES[(self.kind, self.where)]

    def __str__(self) -> str:
        return f"{self.message} ({_first_line(self.detail)})"  # one line, whatever the SDK said


def fault_of(error: BaseException) -> Fault | None:
    """The environmental failure behind `error`, or None when it is a bug."""
    if isinstance(error, StorageError):
        return Fault(error.kind, "storage", str(error))
    if isinstance(error, PoolTimeout):
        return Fault("unavailable", "database", "no free database connection in time")
    orig: BaseException = error
    if isinstance(error, DBAPIError):
        orig = error.orig
        if error.connection_invalidated:
            return Fault("unavailable", "database", _first_line(orig))
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        kind = _SQLITE.get(code & 0xFF) if code is not None else None
        return Fault(kind, "database", f"SQLite: {orig}") if kind else None
    if type(orig).__module__.startswith("psycopg"):  # not imported: SQLite workers lack it
        return _postgresql(orig)
    if isinstance(orig, OSError) and orig.errno in _DISK:
        kind, what = _DISK[orig.errno]
        where = f": {orig.filename}" if orig.filename else ""
        return Fault(kind, "storage", f"{what}{where}")  # type: ignore[arg-type]
    return None


def _postgresql(error: BaseException) -> Fault | None:
    state = getattr(error, "sqlstate", None) or ""
    detail = f"PostgreSQL: {_first_line(error)}"
    if state in _PG_FULL:
        return Fault("full", "database", detail)
    if state in _PG_READ_ONLY:
        return Fault("read-only", "database", detail)
    # OperationalError covers a refused, reset or lost connection (often with no SQLSTATE),
    # a server shutting down, out of resources; but also what our own SQL can cause.
    operational = any(
        c.__name__ in ("OperationalError", "InterfaceError") and c.__module__.startswith("psycopg")
        for c in type(error).__mro__
    )
    if operational and not state.startswith(_PG_OURS):
        return Fault("unavailable", "database", detail)
    return None


def _first_line(error: BaseException | str) -> str:
    text = str(error).strip()
    if text:
        return text.splitlines()[0]
    return type(error).__name__ if isinstance(error, BaseException) else ""


def log_failure(logger: logging.Logger, what: str, error: BaseException) -> Fault | None:
    """Log a failure: one line for a fault, the traceback for a bug. Returns the fault."""
    fault = fault_of(error)
    if fault is None:
        logger.error(what, exc_info=error)
    else:
        logger.error("%s: %s", what, fault)
    return fault
