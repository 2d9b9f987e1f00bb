"""Interchangeable replicas: three `wharf serve` processes share one PostgreSQL database and
one blob store; any request may land on any of them."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
import sys
import time

import httpx
import pytest

from tests import metadata_db
from tests.api.helpers import OCI_MANIFEST, push_image
from tests.conftest import WharfServer, free_port

pytestmark = pytest.mark.postgresql_cluster

MiB = 1 << 20


@pytest.fixture
def cluster(tmp_path):
    db = metadata_db.new_database()
    storage = tmp_path / "shared-storage"
    password = secrets.token_urlsafe(16)
    servers = []
    try:
        for name in ("a", "b", "c"):
            server = WharfServer(
                data_dir=tmp_path / name / "data",
                port=free_port(),
                admin_password=password,
                db_url=db,
                extra_args=["--storage", f"file://{storage}"],
            )
            (tmp_path / name).mkdir()
            server.start()
            servers.append(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_a_chunked_upload_crosses_three_replicas(cluster):
    a, b, c = cluster
    data = os.urandom(3 * MiB + 123)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    first, second = data[: 2 * MiB], data[2 * MiB :]
    with a.client() as ca, b.client() as cb, c.client() as cc:
        r = ca.post("/v2/admin/spread/blobs/uploads/")
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        r = cb.patch(
            location,
            content=first,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"0-{len(first) - 1}",
            },
        )
        assert r.status_code == 202, r.text
        r = cc.get(location)
        assert r.status_code == 204
        assert r.headers["Range"] == f"0-{len(first) - 1}"
        r = cc.put(
            location,
            params={"digest": digest},
            content=second,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{len(first)}-{len(data) - 1}",
            },
        )
        assert r.status_code == 201, r.text
        for client in (ca, cb, cc):
            r = client.get(f"/v2/admin/spread/blobs/{digest}")
            assert r.status_code == 200
            assert r.content == data


def test_what_one_replica_accepts_the_others_serve_at_once(cluster):
    a, b, c = cluster
    with a.client() as ca, b.client() as cb, c.client() as cc:
        image = push_image(ca, "admin/shared", "v1")
        for client in (cb, cc):
            r = client.get("/v2/admin/shared/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200
            assert r.content == image.body
            assert client.get("/v2/admin/shared/tags/list").json()["tags"] == ["v1"]
        # A tag moved through B is seen through A and C.
        moved = push_image(cb, "admin/shared", "v1")
        for client in (ca, cc):
            r = client.get("/v2/admin/shared/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.content == moved.body

        # Access control changed on one replica applies on the others within about a second.
        password = "carol-password"
        assert ca.post("/api/v0/accounts", json={"name": "carol", "password": password}).is_success
        with httpx.Client(base_url=c.url, auth=("carol", password), timeout=30) as carol:
            assert carol.get("/v2/admin/shared/tags/list").status_code == 404
            r = cb.patch("/api/v0/repositories/admin/shared", json={"visibility": "public"})
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 5
            while carol.get("/v2/admin/shared/tags/list").status_code != 200:
                assert time.monotonic() < deadline, "the visibility change did not reach C"
                time.sleep(0.2)
            assert ca.patch("/api/v0/accounts/carol", json={"isActive": False}).is_success
            deadline = time.monotonic() + 5
            while carol.get("/v2/").status_code != 401:
                assert time.monotonic() < deadline, "the deactivation did not reach C"
                time.sleep(0.2)


def test_every_replica_reports_itself(cluster):
    a, b, _ = cluster
    ids = {(s.data_dir / "replica-id").read_text().strip() for s in cluster}
    assert len(ids) == 3
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    with a.client() as ca:
        report = ca.get("/api/v0/meta/cluster_status").json()
        assert {r["id"] for r in report["replicas"]} == ids
        assert all(r["healthy"] for r in report["replicas"])
        assert report["database"]["dialect"] == "postgresql"
        assert report["storage"]["healthy"] is True
        assert {r["address"] for r in report["replicas"]} == {s.url for s in cluster}
        with httpx.Client(base_url=a.url, timeout=30) as anon:
            assert anon.get("/api/v0/meta/cluster_status").status_code == 401
    status = ["status", "--json", "--data-dir", str(b.data_dir), "--db", b.db_url]
    out = subprocess.run(
        [sys.executable, "-m", "wharf", *status, "--storage", b.extra_args[1]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert {r["id"] for r in json.loads(out.stdout)["replicas"]} == ids
