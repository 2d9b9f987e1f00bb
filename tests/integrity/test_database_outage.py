"""The PostgreSQL metadata store becomes unreachable (its connections cut, new ones refused):
every API says so with 503 and a clear message in its own error format, the log has one line
per failure (no traceback, background loops included), and everything works again as soon
as the database is back, without a restart."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator

import httpx
import pytest
from integrity_util import OCTET, digest_of, push_blob
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import metadata_db
from tests.conftest import start_server

pytestmark = pytest.mark.postgresql_cluster  # a PostgreSQL database in either pass


def _admin(sql: str, **params: str) -> None:
    url = metadata_db.admin_url().replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


@contextlib.contextmanager
def database_down(db_url: str) -> Iterator[None]:
    """No connection to the server's database: the open ones are cut, new ones refused."""
    name = make_url(db_url).database
    _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
    try:
        _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name",
            name=name,
        )
        yield
    finally:
        _admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")


def assert_unavailable(r: httpx.Response, code: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    (error,) = r.json()["errors"]
    assert error["code"] == code
    assert error["message"] == ("the registry's metadata database is unavailable; try again later")


def test_database_outage_answers_503_everywhere_and_recovers(servers, repo: str) -> None:
    server = metadata_db_server(servers)
    blob = os.urandom(64 * 1024)
    with server.client() as c:
        earlier = push_blob(c, repo, os.urandom(1024))
        with database_down(server.db_url):
            # Credentials already verified (cached) and fresh ones alike.
            r = c.get(f"/v2/{repo}/blobs/{earlier}")
            assert_unavailable(r, "UNAVAILABLE")
            r = c.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": digest_of(blob)},
                content=blob,
                headers=OCTET,
            )
            assert_unavailable(r, "UNAVAILABLE")
            with server.client() as fresh:
                fresh.auth = httpx.BasicAuth(server.admin_user, "not-the-password")
                assert_unavailable(fresh.get("/v2/"), "UNAVAILABLE")
            r = c.get("/auth/token", params={"scope": f"repository:{repo}:pull"})
            assert_unavailable(r, "UNAVAILABLE")
            r = c.get("/api/v0/accounts")
            assert_unavailable(r, "SERVICE_UNAVAILABLE")
            # The job worker's poll loop meets the outage too, and says so in one line.
            wait_for_log(server, "poll failed: the registry's metadata database is unavailable")
        # Back: no restart needed.
        assert c.get(f"/v2/{repo}/blobs/{earlier}").status_code == 200
        push_blob(c, repo, blob)
        assert c.get("/auth/token", params={"scope": f"repository:{repo}:pull"}).is_success
        assert c.get("/api/v0/accounts").status_code == 200
    server.stop()
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert log.count("metadata database is unavailable") >= 5, log[-4000:]


def metadata_db_server(servers):  # type: ignore[no-untyped-def]
    server = start_server(servers.tmp, db_url=metadata_db.new_database())
    servers.started.append(server)
    return server


def wait_for_log(server, text: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while text not in server.log_path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.1)
