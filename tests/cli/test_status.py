"""`wharf status`: replicas, the metadata store and the blob storage, for people and scripts."""

from __future__ import annotations

import json
import subprocess
import sys


def status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wharf", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_of_a_running_installation(fresh_server):
    where = ["--data-dir", str(fresh_server.data_dir), "--db", fresh_server.db_url]
    r = status("--json", *where)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    replica_id = (fresh_server.data_dir / "replica-id").read_text().strip()
    assert [x["id"] for x in report["replicas"]] == [replica_id]
    assert report["replicas"][0]["healthy"] is True
    assert report["replicas"][0]["address"] == fresh_server.url
    assert report["database"]["healthy"] is True
    assert report["storage"]["healthy"] is True
    assert report["healthy"] is True
    human = status(*where)
    assert human.returncode == 0
    assert replica_id in human.stdout and "healthy" in human.stdout


def test_status_without_an_installation(tmp_path):
    r = status("--data-dir", str(tmp_path / "none"))
    assert r.returncode == 1
    assert "no installation" in r.stderr
