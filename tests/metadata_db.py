"""Which metadata store the test servers use.

`WHARF_TEST_DB=postgresql` runs every test server on PostgreSQL: each server gets a fresh
database of its own (created here, dropped when the session ends). The server is reached at
`WHARF_TEST_PG` (default postgresql://postgres@127.0.0.1:5432/postgres); when nothing answers
there, a private PostgreSQL cluster is started in a temporary directory with Debian's
binaries and stopped at exit. Unset (the default): the embedded SQLite store.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_created: list[str] = []
_admin_url: str | None = None


def backend() -> str:
    value = os.environ.get("WHARF_TEST_DB", "sqlite").lower()
    if value not in ("sqlite", "postgresql"):
        raise RuntimeError(f"WHARF_TEST_DB must be sqlite or postgresql, not {value!r}")
    return value


def _reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 2):
            pass
    except OSError:
        return False
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _start_private_cluster() -> str:
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise RuntimeError(
            "no PostgreSQL reachable at WHARF_TEST_PG and no initdb to start one "
            "(scripts/install-test-deps installs postgresql)"
        )
    bindir = Path(bins[-1]).parent
    work = Path(tempfile.mkdtemp(prefix="wharf-pg-"))
    user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(work, "postgres")
        user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = work / "data"
    subprocess.run(
        [*user, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(work / "log"),
            "-o",
            f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off",
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    atexit.register(
        lambda: subprocess.run(
            [*user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def admin_url() -> str:
    global _admin_url
    if _admin_url is None:
        url = os.environ.get("WHARF_TEST_PG", DEFAULT_ADMIN_URL)
        _admin_url = url if _reachable(url) else _start_private_cluster()
    return _admin_url


def _admin(sql: str) -> None:
    engine = create_engine(
        admin_url().replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def new_database() -> str:
    """A fresh, empty PostgreSQL database for one test server; its URL."""
    name = f"wharf_test_{secrets.token_hex(6)}"
    _admin(f"CREATE DATABASE {name}")
    _created.append(name)
    return str(make_url(admin_url()).set(database=name).render_as_string(hide_password=False))


def drop_databases() -> None:
    while _created:
        name = _created.pop()
        for _ in range(20):  # a server that was just stopped may still be disconnecting
            try:
                _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                break
            except Exception:
                time.sleep(0.25)


def server_db_url(data_dir: Path) -> str:
    """The --db URL for a new test server: a new PostgreSQL database, or its own SQLite."""
    if backend() == "postgresql":
        return new_database()
    return f"sqlite:///{(data_dir / 'wharf.db').resolve()}"


def dump(db_url: str) -> bytes:
    """Everything a metadata store holds, as bytes (to search for secrets): the SQLite files,
    or a data-only pg_dump."""
    if db_url.startswith("sqlite:///"):
        path = Path(db_url.removeprefix("sqlite:///"))
        parts = [path, path.with_name(path.name + "-wal")]
        return b"".join(p.read_bytes() for p in parts if p.exists())
    return subprocess.run(
        ["pg_dump", "--data-only", "--dbname", db_url],
        check=True,
        capture_output=True,
    ).stdout


def query_setting(db_url: str, key: str) -> str | None:
    """A raw value of the settings table (JSON text), read outside the server."""
    url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text("SELECT value FROM settings WHERE key = :key"), {"key": key}
            ).scalar()
    finally:
        engine.dispose()
