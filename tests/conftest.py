"""Shared fixtures: a real `wharf serve` process on a free loopback port.

Tests talk to it over HTTP exactly as clients do; nothing is mocked.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import metadata_db
from tests.storage_servers import azure_server, gcs_server, s3_server  # noqa: F401

ADMIN_USER = "admin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WharfServer:
    """A running `wharf serve` process."""

    data_dir: Path
    port: int
    admin_password: str
    workers: int = 1
    extra_args: list[str] = field(default_factory=list)
    db_url: str = ""  # the metadata store; set by start_server (see tests/metadata_db.py)
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the process
    proc: subprocess.Popen | None = None
    log_path: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def admin_user(self) -> str:
        return ADMIN_USER

    @property
    def auth(self) -> tuple[str, str]:
        return (ADMIN_USER, self.admin_password)

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        env["WHARF_ADMIN_PASSWORD"] = self.admin_password
        self.log_path = self.data_dir.parent / f"wharf-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wharf",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--http-addr",
                self.host,
                "--workers",
                str(self.workers),
                *(["--db", self.db_url] if self.db_url else []),
                *self.extra_args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wharf exited early:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"wharf did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self, *, auth: bool = True) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, auth=self.auth if auth else None, timeout=60, follow_redirects=False
        )


def start_server(tmp: Path, **kwargs) -> WharfServer:
    data_dir = tmp / "data"
    kwargs.setdefault("db_url", metadata_db.server_db_url(data_dir))
    server = WharfServer(
        data_dir=data_dir, port=free_port(), admin_password=secrets.token_urlsafe(16), **kwargs
    )
    server.start()
    return server


def pytest_sessionfinish(session, exitstatus) -> None:
    metadata_db.drop_databases()


def pytest_collection_modifyitems(config, items) -> None:
    # Tests of the embedded store itself (its file, its defaults) do not run against
    # PostgreSQL, and tests that build their own PostgreSQL cluster whatever the pass run in
    # the PostgreSQL pass only (when the whole suite runs twice, scripts/test): they are
    # deselected, so the run says how many.
    other = "embedded_only" if metadata_db.backend() != "sqlite" else None
    others = [other] if other else []
    if metadata_db.backend() == "sqlite" and os.environ.get("WHARF_TEST_BOTH_PASSES"):
        others = ["postgresql_cluster", "once"]
    if not others:
        return
    selected = [i for i in items if not any(i.get_closest_marker(o) for o in others)]
    deselected = [i for i in items if any(i.get_closest_marker(o) for o in others)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


@pytest.fixture(scope="session")
def wharf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    """One registry shared by a whole test session (tests use distinct repository names)."""
    server = start_server(tmp_path_factory.mktemp("wharf"))
    yield server
    server.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[WharfServer]:
    """A registry of a test's own, for tests that restart or kill it."""
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def client(wharf_server: WharfServer) -> Iterator[httpx.Client]:
    with wharf_server.client() as c:
        yield c


@pytest.fixture
def anon(wharf_server: WharfServer) -> Iterator[httpx.Client]:
    with wharf_server.client(auth=False) as c:
        yield c


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to the test."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    return f"test/{base}-{secrets.token_hex(3)}"
