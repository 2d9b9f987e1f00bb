"""The post-upgrade background migration (`metadatastoremigration`) on a running registry:
queued by `wharf upgrade` with two retries, failing three times ends errored, and an
operator re-runs it with POST /api/v0/jobs; the backfill it performs is visible in the
store, and the tags API reports the same sizes before and after."""

from __future__ import annotations

import time

from sqlalchemy import select, update

from tests.api.helpers import push_image
from tests.bootstrap.helpers import wharf
from tests.conftest import start_server
from wharf.metadata import schema as t
from wharf.metadata.identity import IdentityStore
from wharf.metadata.store import MetadataStore


def wait_for(c, job_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = c.get(f"/api/v0/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_failing_migration_is_retried_twice_then_rerun_by_an_operator(tmp_path):
    version = tmp_path / "installed-version"
    version.write_text("1.0.2\n")
    env = {
        "WHARF_RELEASE_HISTORY": "tests.bootstrap.synthetic_history",
        "WHARF_TEST_SOFTWARE_VERSION_FILE": str(version),
    }
    server = start_server(tmp_path, env=env)
    store = MetadataStore(server.db_url)
    try:
        with server.client() as c:
            for i in range(3):
                push_image(c, "admin/sized", f"v{i}", layer_size=1000 + i)
            before = {
                x["name"]: x["size"] for x in c.get("/api/v0/repositories/admin/sized/tags").json()
            }
        # As if pushed before the release that records image sizes.
        with store._write() as conn:
            conn.execute(update(t.manifests).values(image_size=None))
        IdentityStore(store).set_setting("synthetic_failures", 3)
        version.write_text("1.1.0\n")
        r = wharf("upgrade", "--data-dir", server.data_dir, "--db", server.db_url, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "start background migrations" in r.stdout and "runs 1.1.0" in r.stdout
        with server.client() as c:
            jobs = c.get("/api/v0/jobs", params={"action": "metadatastoremigration"}).json()
            assert len(jobs) == 1 and jobs[0]["createdBy"] == "wharf upgrade"
            failed = wait_for(c, jobs[0]["id"], {"errored", "done"})
            assert failed["state"] == "errored" and failed["retriesLeft"] == 0
            log = c.get(f"/api/v0/jobs/{failed['id']}/logs").json()
            text = "\n".join(line["data"] for line in log)
            assert text.count("synthetic failure") == 3 and "will retry" in text
            with store.engine.connect() as conn:
                assert set(conn.execute(select(t.manifests.c.image_size)).scalars()) == {None}
            sizes = {
                x["name"]: x["size"] for x in c.get("/api/v0/repositories/admin/sized/tags").json()
            }
            assert sizes == before  # computed while the column is not filled in
            # The operator's re-run.
            r = c.post("/api/v0/jobs", json={"action": "metadatastoremigration"})
            assert r.status_code == 202, r.text
            done = wait_for(c, r.json()["id"], {"errored", "done"})
            assert done["state"] == "done", done
            sizes = {
                x["name"]: x["size"] for x in c.get("/api/v0/repositories/admin/sized/tags").json()
            }
            assert sizes == before
        with store.engine.connect() as conn:
            filled = dict(
                conn.execute(select(t.manifests.c.digest, t.manifests.c.image_size)).all()
            )
        assert len(filled) == 3 and None not in filled.values()
        assert sorted(filled.values()) == sorted(before.values())
    finally:
        store.dispose()
        server.stop()
