"""`wharf join`: a replica joins a cluster that shares a PostgreSQL metadata store, and is
refused, with a reason, when it cannot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import metadata_db
from tests.conftest import WharfServer, free_port, start_server

pytestmark = pytest.mark.postgresql_cluster


def wharf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def first(tmp_path):
    storage = f"file://{tmp_path / 'shared'}"
    server = start_server(
        tmp_path, db_url=metadata_db.new_database(), extra_args=["--storage", storage]
    )
    yield server, storage
    server.stop()


def test_join_refuses_the_embedded_store(tmp_path):
    r = wharf("join", "--existing-replica-id", "0123456789ab", "--data-dir", str(tmp_path / "r"))
    assert r.returncode == 3
    assert "embedded SQLite" in r.stderr and "migrate-metadata" in r.stderr
    assert not (tmp_path / "r").exists()


def test_a_replica_joins_and_serves(tmp_path, first):
    server, storage = first
    peer = (server.data_dir / "replica-id").read_text().strip()
    second_dir = tmp_path / "second" / "data"
    common = ["--db", server.db_url, "--data-dir", str(second_dir)]

    r = wharf("join", "--existing-replica-id", "ffffffffffff", "--storage", storage, *common)
    assert r.returncode == 3 and peer in r.stderr, r.stderr
    other = "file:///somewhere/else"
    r = wharf("join", "--existing-replica-id", peer, "--storage", other, *common)
    assert r.returncode == 3 and storage in r.stderr, r.stderr  # not the cluster's storage

    r = wharf("join", "--existing-replica-id", peer, *common)  # takes the cluster's storage
    assert r.returncode == 0, r.stderr
    new_id = (second_dir / "replica-id").read_text().strip()
    assert new_id in r.stdout and new_id != peer
    assert "odd number" in r.stderr  # two replicas
    config = second_dir / "wharf.toml"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert f'storage = "{storage}"' in config.read_text()
    # Joining twice into one data directory is refused.
    again = wharf("join", "--existing-replica-id", peer, "--storage", storage, *common)
    assert again.returncode == 3 and new_id in again.stderr

    second = WharfServer(
        second_dir,
        free_port(),
        server.admin_password,
        extra_args=["--config", str(config)],
    )
    # The port comes from the flag the fixture adds after the config file.
    second.start()
    try:
        r = wharf("status", "--json", "--config", str(config))
        assert r.returncode == 0, r.stderr
        ids = {x["id"] for x in json.loads(r.stdout)["replicas"]}
        assert ids == {peer, new_id}
        with second.client() as c:
            assert c.get("/v2/").status_code == 200  # the cluster's admin, from the shared store
    finally:
        second.stop()


def test_join_refuses_a_cluster_on_replica_local_storage(tmp_path):
    server = start_server(tmp_path, db_url=metadata_db.new_database())  # default storage
    try:
        peer = (server.data_dir / "replica-id").read_text().strip()
        r = wharf(
            "join",
            "--existing-replica-id",
            peer,
            "--db",
            server.db_url,
            "--data-dir",
            str(tmp_path / "second"),
        )
        assert r.returncode == 3, r.stderr
        assert "shared storage" in r.stderr and "wharf reconfigure --storage" in r.stderr
    finally:
        server.stop()
