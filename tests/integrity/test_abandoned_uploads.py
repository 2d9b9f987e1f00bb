"""Abandoned upload sessions are collected with their bytes (issue 13, item 9): by garbage
collection once idle for longer than its grace (graceMinutes: 0 collects every idle one), and
by the daily `uploadcleanup` job once idle for longer than the uploadExpiryMinutes setting. An
upload that a request is writing to is never collected."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import httpx
from integrity_util import Trickle, digest_of, patch_chunk, start_upload, upload_files
from sqlalchemy import update

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, utcnow

API = "/api/v0"


def run_job(c: httpx.Client, action: str, **parameters) -> list[str]:
    r = c.post(f"{API}/jobs", json={"action": action, "parameters": parameters})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = c.get(f"{API}/jobs/{job_id}").json()
        if job["state"] in ("done", "errored", "canceled"):
            lines = [x["data"] for x in c.get(f"{API}/jobs/{job_id}/logs").json()]
            assert job["state"] == "done", lines
            return lines
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def abandon(c: httpx.Client, repo: str, count: int) -> list[tuple[str, str]]:
    """Upload sessions left behind: half empty, half with a chunk."""
    sessions = []
    for i in range(count):
        location, upload_id = start_upload(c, repo)
        if i % 2:
            assert patch_chunk(c, location, secrets.token_bytes(1000), 0).status_code == 202
        sessions.append((location, upload_id))
    return sessions


def stored(server, upload_id: str) -> bool:
    return (server.data_dir / "storage" / "uploads" / upload_id).exists()


def test_gc_with_no_grace_collects_abandoned_uploads_but_not_a_live_one(server, repo) -> None:
    with server.client() as c:
        abandoned = abandon(c, repo, 40)
        assert all(stored(server, u) for _, u in abandoned[1::2])
        live_location, _ = start_upload(c, repo)
        blob = secrets.token_bytes(64)
        live = Trickle(server, "PATCH", live_location, len(blob), {})
        live.send(blob[:32])  # being written while GC runs: its request holds the lease
        time.sleep(0.5)

        lines = run_job(c, "onlinegc", graceMinutes=0)
        assert any("uploadsDeleted=40" in line for line in lines), lines

        for location, upload_id in abandoned:
            r = c.get(location)
            assert r.status_code == 404, r.text
            assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
            assert not stored(server, upload_id)

        live.send(blob[32:])
        status, body = live.response()
        assert status == 202, body
        r = c.put(live_location, params={"digest": digest_of(blob)})
        assert r.status_code == 201, r.text
    assert upload_files(server.data_dir) == []


def test_gc_keeps_uploads_younger_than_its_grace(server, repo) -> None:
    with server.client() as c:
        kept = abandon(c, repo, 4)
        lines = run_job(c, "onlinegc", graceMinutes=5)
        assert any("uploadsDeleted=0" in line for line in lines), lines
        for location, _ in kept:
            assert c.get(location).status_code == 204


def test_upload_cleanup_follows_the_expiry_setting(server, repo) -> None:
    with server.client() as c:
        r = c.get(f"{API}/meta/settings")
        assert r.json()["uploadExpiryMinutes"] == 24 * 60
        r = c.get(f"{API}/crons/uploadcleanup")
        assert r.status_code == 200, r.text
        assert r.json()["schedule"] == "30 3 * * *"
        r = c.post(f"{API}/meta/settings", json={"uploadExpiryMinutes": 10})
        assert r.status_code == 202, r.text

        old = abandon(c, repo, 6)
        fresh = abandon(c, repo, 2)
        # Time passes for the old ones: they were last written 11 minutes ago.
        store = MetadataStore(server.db_url)
        try:
            with store._write() as conn:
                conn.execute(
                    update(t.uploads)
                    .where(t.uploads.c.id.in_([u for _, u in old]))
                    .values(updated_at=utcnow() - timedelta(minutes=11))
                )
        finally:
            store.dispose()

        lines = run_job(c, "uploadcleanup")
        assert any("deleted 6 idle for over 10 min" in line for line in lines), lines
        for location, upload_id in old:
            assert c.get(location).status_code == 404
            assert not stored(server, upload_id)
        for location, _ in fresh:
            assert c.get(location).status_code == 204

        r = c.post(f"{API}/meta/settings", json={"uploadExpiryMinutes": 0})
        assert r.status_code == 400, r.text
