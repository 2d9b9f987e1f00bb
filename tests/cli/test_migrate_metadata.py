"""`wharf migrate-metadata --to postgresql://...`: an embedded installation moves to
PostgreSQL without losing anything (a real PostgreSQL; see tests/metadata_db.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests import metadata_db
from tests.api.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    canonical,
    index_manifest,
    push_artifact,
    push_image,
    sha256,
)
from tests.conftest import WharfServer, free_port, start_server

API = "/api/v0"
ACCEPT = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}


def migrate(data_dir, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wharf",
            "migrate-metadata",
            "--data-dir",
            str(data_dir),
            "--to",
            target,
            *extra,
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )


def test_embedded_installation_moves_to_postgresql(tmp_path):
    data_dir = tmp_path / "data"
    embedded = start_server(tmp_path, db_url=f"sqlite:///{data_dir / 'wharf.db'}")
    try:
        with embedded.client() as admin:
            amd = push_image(admin, "admin/app", "amd64", platform=("linux", "amd64"))
            arm = push_image(admin, "admin/app", "arm64", platform=("linux", "arm64"))
            index = canonical(index_manifest([amd.descriptor(), arm.descriptor()]))
            r = admin.put(
                "/v2/admin/app/manifests/v1", content=index, headers={"Content-Type": OCI_INDEX}
            )
            assert r.status_code == 201, r.text
            signature, _ = push_artifact(
                admin, "admin/app", amd.descriptor(), "application/vnd.example.sig"
            )
            for body in (
                {"name": "alice", "password": "alice-password"},
                {"name": "acme", "isOrg": True},
            ):
                assert admin.post(f"{API}/accounts", json=body).status_code == 201
            assert admin.post(f"{API}/accounts/acme/teams", json={"name": "devs"}).is_success
            assert admin.put(f"{API}/accounts/acme/teams/devs/members/alice").is_success
            assert admin.post(f"{API}/repositories/acme", json={"name": "web"}).is_success
            r = admin.put(
                f"{API}/repositories/acme/web/teamAccess/devs", json={"accessLevel": "read-write"}
            )
            assert r.is_success
            with httpx.Client(base_url=embedded.url, auth=("alice", "alice-password")) as alice:
                pat = alice.post(f"{API}/api_tokens", json={"tokenLabel": "ci"}).json()["token"]
            before = {
                tag: admin.get(f"/v2/admin/app/manifests/{tag}", headers=ACCEPT)
                for tag in ("amd64", "arm64", "v1")
            }
            referrers = admin.get(f"/v2/admin/app/referrers/{amd.digest}").json()
    finally:
        embedded.stop()

    target = metadata_db.new_database()
    done = migrate(data_dir, target)
    assert done.returncode == 0, done.stderr
    assert "counts verified" in done.stdout
    assert "manifests" in done.stdout
    # A second copy into the now non-empty target is refused (exit 3), unless asked for.
    again = migrate(data_dir, target)
    assert again.returncode == 3, again.stdout + again.stderr
    assert "not empty" in again.stderr and "--overwrite" in again.stderr
    assert migrate(data_dir, target, "--overwrite").returncode == 0

    moved = WharfServer(data_dir, free_port(), embedded.admin_password, db_url=target)
    moved.start()
    try:
        with moved.client() as admin:
            for tag, response in before.items():
                r = admin.get(f"/v2/admin/app/manifests/{tag}", headers=ACCEPT)
                assert r.status_code == 200
                assert r.content == response.content
                assert (
                    r.headers["docker-content-digest"] == response.headers["docker-content-digest"]
                )
            for layer in amd.layers + arm.layers:
                assert admin.get(f"/v2/admin/app/blobs/{sha256(layer)}").content == layer
            assert admin.get(f"/v2/admin/app/referrers/{amd.digest}").json() == referrers
            assert signature
            assert admin.get("/v2/admin/app/tags/list").json()["tags"] == ["amd64", "arm64", "v1"]
            # New rows get new ids (the sequences moved past the copied ones).
            r = admin.post(f"{API}/accounts", json={"name": "bob", "password": "bob-password"})
            assert r.status_code == 201, r.text
        for secret in ("alice-password", pat):
            with httpx.Client(base_url=moved.url, auth=("alice", secret)) as alice:
                assert alice.get("/v2/").status_code == 200
                assert alice.post("/v2/acme/web/blobs/uploads/").status_code == 202
                assert alice.post("/v2/admin/app/blobs/uploads/").status_code == 403
    finally:
        moved.stop()


def test_migrate_refuses_a_missing_installation_and_a_non_postgresql_target(tmp_path):
    r = migrate(tmp_path / "nothing", "postgresql://postgres@127.0.0.1/x")
    assert r.returncode == 1
    assert "no installation" in r.stderr
    r = migrate(tmp_path / "nothing", "mysql://x")
    assert r.returncode == 2
    assert "postgresql://" in r.stderr
