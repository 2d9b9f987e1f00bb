"""The bootstrapper end to end on PostgreSQL with shared blob storage: install, join two
more replicas, upgrade through a synthetic version history replica by replica while the
others keep serving, remove, destroy. Images pushed at the start pull back byte-identical
through every replica at every stage (skopeo, over HTTPS with the cluster's CA)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time

import pytest

from tests import metadata_db
from tests.api.helpers import push_image
from tests.bootstrap.helpers import Replica, install_args, wharf
from tests.conftest import free_port

pytestmark = pytest.mark.once


def status(config) -> dict:
    r = wharf("status", "--json", "--config", config)
    return json.loads(r.stdout)


def skopeo_pull(replica: Replica, password: str, ref: str, dest) -> None:
    certs = dest.parent / f"certs-{secrets.token_hex(3)}"
    certs.mkdir()
    shutil.copy(replica.data_dir / "tls" / "ca.crt", certs / "ca.crt")
    host = replica.url.removeprefix("https://")
    r = subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-cert-dir",
            str(certs),
            "--src-creds",
            f"admin:{password}",
            f"docker://{host}/{ref}",
            f"oci:{dest}:x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr


def check_image(replica: Replica, password: str, image, tmp_path) -> None:
    with replica.client(auth=("admin", password)) as c:
        r = c.get("/v2/admin/app/manifests/v1", headers={"Accept": image.media_type})
        assert r.status_code == 200 and r.content == image.body
        for layer in image.layers:
            digest = "sha256:" + __import__("hashlib").sha256(layer).hexdigest()
            assert c.get(f"/v2/admin/app/blobs/{digest}").content == layer


def test_install_join_upgrade_remove_destroy(tmp_path):
    version = tmp_path / "installed-version"
    version.write_text("1.0.0\n")
    password = secrets.token_urlsafe(12)
    env = {
        "WHARF_RELEASE_HISTORY": "tests.bootstrap.synthetic_history",
        "WHARF_TEST_SOFTWARE_VERSION_FILE": str(version),
        "WHARF_ADMIN_PASSWORD": password,
    }
    db = metadata_db.new_database()
    storage = f"file://{tmp_path / 'shared-blobs'}"
    a_dir, b_dir, c_dir = (tmp_path / n for n in ("a", "b", "c"))
    r = wharf(*install_args(a_dir, db), "--storage", storage, env=env)
    assert r.returncode == 0, r.stderr
    a_id = (a_dir / "replica-id").read_text().strip()
    replicas = {"a": Replica(a_dir, env)}
    try:
        replicas["a"].start()
        with replicas["a"].client(auth=("admin", password)) as c:
            image = push_image(c, "admin/app", "v1", layer_size=64 * 1024)

        # Two more replicas join; the second join makes the count odd again.
        for name, data in (("b", b_dir), ("c", c_dir)):
            r = wharf(
                "join",
                "--existing-replica-id",
                a_id,
                "--db",
                db,
                "--data-dir",
                data,
                "--http-port",
                free_port(),
                "--https-port",
                free_port(),
                "--bind-address",
                "127.0.0.1",
                env=env,
            )
            assert r.returncode == 0, r.stderr
            assert ("odd number" in r.stderr) == (name == "b")
            assert (data / "tls" / "ca.crt").read_text() == (a_dir / "tls" / "ca.crt").read_text()
            replicas[name] = Replica(data, env)
            replicas[name].start()
        ids = {n: (r.data_dir / "replica-id").read_text().strip() for n, r in replicas.items()}
        report = status(a_dir / "wharf.toml")
        assert {r["id"] for r in report["replicas"]} == set(ids.values())
        assert all(r["healthy"] and r["version"] == "1.0.0" for r in report["replicas"])
        assert report["cluster"]["version"] == "1.0.0"
        skopeo_pull(replicas["c"], password, "admin/app:v1", tmp_path / "pulled-c")

        # A replica may not start on software the cluster has not been upgraded to.
        version.write_text("1.0.2\n")
        replicas["c"].stop()
        refused = wharf("serve", "--config", c_dir / "wharf.toml", env=env)
        assert refused.returncode == 3 and "run `wharf upgrade`" in refused.stderr

        for target in ("1.0.2", "1.1.0", "2.0.0"):
            version.write_text(target + "\n")
            pid = replicas["a"].proc.pid
            r = wharf("upgrade", "--config", a_dir / "wharf.toml", env=env)
            assert r.returncode == 0, r.stdout + r.stderr
            assert f"the cluster now runs {target}" in r.stdout
            assert f"replica {ids['a']} runs {target}" in r.stdout
            assert replicas["a"].proc.pid == pid and replicas["a"].proc.poll() is None
            if replicas["b"].proc.poll() is None:  # still on the old version, still serving
                assert f"replica {ids['b']}" in r.stdout and "still runs" in r.stdout
                check_image(replicas["b"], password, image, tmp_path)
            check_image(replicas["a"], password, image, tmp_path)
            for name in ("b", "c"):
                if replicas[name].proc.poll() is None:
                    r = wharf(
                        "upgrade", "--config", replicas[name].data_dir / "wharf.toml", env=env
                    )
                    assert r.returncode == 0, r.stdout + r.stderr
                    assert f"already runs {target}" in r.stdout
                    assert f"runs {target}" in r.stdout
                else:
                    replicas[name].start()
            report = status(a_dir / "wharf.toml")
            assert report["cluster"]["version"] == target and not report["cluster"]["upgrade"]
            assert sorted(r["version"] for r in report["replicas"]) == [target] * 3
            for replica in replicas.values():
                check_image(replica, password, image, tmp_path)

        # 1.1.0 brought background migrations: they ran as a job, on some replica.
        with replicas["b"].client(auth=("admin", password)) as c:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                jobs = c.get("/api/v0/jobs", params={"action": "metadatastoremigration"}).json()
                if jobs and jobs[0]["state"] == "done":
                    break
                time.sleep(0.5)
            assert jobs[0]["state"] == "done", jobs
        skopeo_pull(replicas["b"], password, "admin/app:v1", tmp_path / "pulled-b")

        # Remove C: it stops by itself, may not come back, and its data can be destroyed.
        r = wharf("remove", "--replica-id", ids["c"], "--config", a_dir / "wharf.toml")
        assert r.returncode == 0, r.stderr
        assert "2 remain" in r.stdout and "odd number" in r.stderr
        replicas["c"].proc.wait(30)
        back = wharf("serve", "--config", c_dir / "wharf.toml", env=env)
        assert back.returncode == 3 and "was removed from the cluster" in back.stderr
        r = wharf("destroy", "--replica-id", ids["c"], "--force", "--config", c_dir / "wharf.toml")
        assert r.returncode == 0, r.stderr
        assert not c_dir.exists() and (tmp_path / "shared-blobs").is_dir()
        assert "kept the shared metadata store" in r.stdout
        assert {x["id"] for x in status(a_dir / "wharf.toml")["replicas"]} == {ids["a"], ids["b"]}

        # The last healthy replica cannot be removed.
        replicas["b"].stop()
        time.sleep(0.5)
        r = wharf("remove", "--replica-id", ids["b"], "--config", a_dir / "wharf.toml")
        assert r.returncode == 0, r.stderr  # B is stopped; A serves
        r = wharf("remove", "--replica-id", ids["a"], "--config", a_dir / "wharf.toml")
        assert r.returncode == 3 and "only replica" in r.stderr
        check_image(replicas["a"], password, image, tmp_path)
    finally:
        for replica in replicas.values():
            replica.stop()
