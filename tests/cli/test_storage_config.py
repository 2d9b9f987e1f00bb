"""Choosing and changing the cluster's blob storage: the recorded storage, `wharf reconfigure
--storage` (never a silent loss), the reference registry's YAML in and out, and `wharf
install` of a PostgreSQL + S3 cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import httpx
import pytest

from tests import metadata_db
from tests.api.helpers import push_blob
from tests.conftest import WharfServer, free_port, start_server


def wharf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wharf", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def where(server: WharfServer) -> list[str]:
    return ["--data-dir", str(server.data_dir), "--db", server.db_url]


def test_a_replica_is_refused_on_other_storage_than_the_clusters(tmp_path):
    server = start_server(tmp_path, extra_args=["--storage", f"file://{tmp_path / 'one'}"])
    server.stop()
    other = tmp_path / "two"
    r = wharf(
        "serve",
        *where(server),
        "--http-addr",
        f"127.0.0.1:{free_port()}",
        "--storage",
        f"file://{other}",
        env={"WHARF_ADMIN_PASSWORD": server.admin_password},
    )
    assert r.returncode == 3, r.stderr
    assert "unpullable" in r.stderr and "wharf reconfigure --storage" in r.stderr
    assert str(tmp_path / "one") in r.stderr


def test_reconfigure_moves_storage_only_when_the_blobs_are_there(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    server = start_server(tmp_path, extra_args=["--storage", f"file://{old}"])
    with server.client() as c:
        blobs = [push_blob(c, "team/app", os.urandom(5000 + i)) for i in range(3)]
    server.stop()

    r = wharf("reconfigure", *where(server), "--storage", f"file://{new}")
    assert r.returncode == 3, r.stderr
    assert "holds 3 blobs" in r.stderr and "--storage-migrated" in r.stderr

    r = wharf("reconfigure", *where(server), "--storage", f"file://{new}", "--storage-migrated")
    assert r.returncode == 3 and "missing" in r.stderr, r.stderr

    shutil.copytree(old, new, dirs_exist_ok=True)  # the operator copies the blobs
    r = wharf("reconfigure", *where(server), "--storage", f"file://{new}", "--storage-migrated")
    assert r.returncode == 0, r.stderr
    assert "all present" in r.stdout

    shutil.rmtree(old)
    # Started without --storage, the replica takes the cluster's (new) storage.
    again = WharfServer(server.data_dir, free_port(), server.admin_password, db_url=server.db_url)
    again.start()
    try:
        with again.client() as c:
            for digest in blobs:
                assert c.get(f"/v2/team/app/blobs/{digest}").status_code == 200
    finally:
        again.stop()
    # With the old storage named explicitly, it is refused.
    stale = WharfServer(
        server.data_dir,
        free_port(),
        server.admin_password,
        db_url=server.db_url,
        extra_args=["--storage", f"file://{old}"],
    )
    with pytest.raises(RuntimeError, match="unpullable"):
        stale.start()


def test_reconfigure_an_empty_registry_needs_no_copy(tmp_path):
    server = start_server(tmp_path)
    server.stop()
    target = tmp_path / "elsewhere"
    r = wharf("reconfigure", *where(server), "--storage", f"file://{target}")
    assert r.returncode == 0, r.stderr
    r = wharf("reconfigure", *where(server), "--storage", f"file://{target}")
    assert r.returncode == 0 and "nothing to change" in r.stdout
    r = wharf("storage", "export-yaml", *where(server))
    assert r.returncode == 0
    assert f"rootdirectory: {target}" in r.stdout


def test_reconfigure_refuses_storage_that_does_not_work(tmp_path, s3_server):
    server = start_server(tmp_path)
    server.stop()
    url = s3_server.url("x").replace("wharf-", "no-such-bucket-")
    r = wharf("reconfigure", *where(server), "--storage", url, env=s3_server.env)
    assert r.returncode == 1 and "does not work" in r.stderr, r.stderr


def test_yaml_storage_with_credentials_serves_from_s3(tmp_path, s3_server):
    """A reference-registry YAML file brings S3 settings and keys; the keys go to a 0600 file,
    never to output, and the replica pushes and pulls with them (no AWS_* in its env)."""
    server = start_server(tmp_path)
    server.stop()
    bucket = s3_server.bucket_of(s3_server.url())
    secret = "s3cr3t-" + os.urandom(4).hex()
    config = tmp_path / "config.yml"
    config.write_text(
        textwrap.dedent(
            f"""\
            version: 0.1
            storage:
              s3:
                bucket: {bucket}
                region: us-east-1
                regionendpoint: {s3_server.endpoint}
                forcepathstyle: true
                rootdirectory: /registry
                accesskey: testing
                secretkey: {secret}
                chunksize: 5242880
              cache:
                blobdescriptor: inmemory
            http:
              addr: :5000
            """
        )
    )
    r = wharf("reconfigure", *where(server), "--storage-yaml", str(config))
    assert r.returncode == 0, r.stderr
    assert secret not in r.stdout + r.stderr
    assert "storage.s3.chunksize" in r.stderr and "storage.cache" in r.stderr
    creds = server.data_dir / "storage.env"
    assert oct(creds.stat().st_mode & 0o777) == "0o600"
    assert f"AWS_SECRET_ACCESS_KEY={secret}" in creds.read_text()

    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    assert "AWS_ACCESS_KEY_ID" not in clean_env
    again = WharfServer(server.data_dir, free_port(), server.admin_password, db_url=server.db_url)
    again.start()
    try:
        data = os.urandom(70_000)
        with again.client() as c:
            digest = push_blob(c, "yaml/app", data)
            assert c.get(f"/v2/yaml/app/blobs/{digest}").content == data
        keys = [
            o["Key"]
            for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="registry/")[
                "Contents"
            ]
        ]
        assert any(k.endswith(digest.split(":")[1] + "/data") for k in keys), keys
        r = wharf("storage", "export-yaml", *where(server))
        assert r.returncode == 0 and secret not in r.stdout
        assert f"bucket: {bucket}" in r.stdout and "rootdirectory: /registry" in r.stdout
    finally:
        again.stop()


def test_redirected_pulls_go_to_the_object_store(tmp_path, s3_server):
    url = s3_server.url("reg") + "&redirect=true"
    server = start_server(tmp_path, extra_args=["--storage", url])
    server.stop()
    server = WharfServer(
        server.data_dir,
        server.port,
        server.admin_password,
        db_url=server.db_url,
        extra_args=["--storage", url],
    )
    os.environ.update(s3_server.env)  # the server process inherits it
    try:
        server.start()
        data = os.urandom(100_000)
        with server.client() as c:
            digest = push_blob(c, "r/app", data)
            r = c.get(f"/v2/r/app/blobs/{digest}")
            assert r.status_code == 307
            location = r.headers["location"]
            assert "X-Amz-Signature" in location
            assert httpx.get(location).content == data
            assert c.head(f"/v2/r/app/blobs/{digest}").status_code == 200  # HEAD: no redirect
    finally:
        server.stop()
        for name in s3_server.env:
            os.environ.pop(name, None)


@pytest.mark.postgresql_cluster
def test_install_a_postgresql_and_s3_cluster(tmp_path, s3_server):
    db = metadata_db.new_database()
    storage = s3_server.url("cluster")
    env = {**s3_server.env, "WHARF_ADMIN_PASSWORD": "install-pw-" + os.urandom(4).hex()}
    first = tmp_path / "first"
    port = free_port()
    r = wharf(
        "install",
        "--non-interactive",
        "--db",
        db,
        "--storage",
        storage,
        "--data-dir",
        str(first),
        "--plain-http",
        "--http-port",
        str(port),
        "--bind-address",
        "127.0.0.1",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    rid = (first / "replica-id").read_text().strip()
    assert rid in r.stdout and len(rid) == 12
    assert "wharf serve --config" in r.stdout
    # A second install on the same database is refused: that is what join is for.
    r = wharf("install", "--db", db, "--storage", storage, "--data-dir", str(tmp_path / "x"))
    assert r.returncode == 3 and "wharf join" in r.stderr and rid in r.stderr
    # The same data directory twice is refused too.
    r = wharf("install", "--db", db, "--storage", storage, "--data-dir", str(first))
    assert r.returncode == 3 and "already holds an installation" in r.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "wharf", "serve", "--config", str(first / "wharf.toml")],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        auth = ("admin", env["WHARF_ADMIN_PASSWORD"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", auth=auth).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=auth) as c:
            digest = push_blob(c, "inst/app", b"installed")
            assert c.get(f"/v2/inst/app/blobs/{digest}").content == b"installed"
    finally:
        proc.terminate()
        proc.wait(10)
