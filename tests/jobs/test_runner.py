"""The job workers of real `wharf serve` processes: exclusive claims, reclaiming a killed
worker's job, retries, cancellation and the history clean-up."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import pytest

from tests.conftest import start_server

from .conftest import API, FAST_JOBS, create_job, get_job, texts, wait_job


def test_two_workers_never_run_the_same_job(admin):
    made = [create_job(admin, parameters={"seconds": i % 2})["id"] for i in range(20)]
    jobs = [wait_job(admin, job_id, ("done", "errored", "canceled"), timeout=60) for job_id in made]
    assert {j["state"] for j in jobs} == {"done"}
    runs: Counter[str] = Counter()
    for job in jobs:
        started = [x for x in texts(admin, job["id"]) if x.startswith("started on worker")]
        assert started == [f"started on worker {job['workerID']}"], (job, started)
        runs[job["workerID"]] += 1
    assert sum(runs.values()) == 20
    assert len(runs) == 2, f"both workers should have taken jobs: {runs}"


@pytest.fixture
def own_server(tmp_path):
    server = start_server(tmp_path, workers=2, env=dict(FAST_JOBS))
    yield server
    server.stop()


def test_a_killed_workers_job_is_reclaimed_by_another(own_server):
    with own_server.client() as admin:
        job = create_job(admin, parameters={"seconds": 4}, retries=1)
        running = wait_job(admin, job["id"], ("running",))
        victim = running["workerID"]
        pid = int(victim.rsplit("-", 1)[1])
        assert pid != own_server.proc.pid  # a worker process, not the supervisor
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
    # A new client: the old one's kept-alive connection may have been the dead worker's.
    with own_server.client() as admin:
        # Reclaimed once its heartbeat is older than the stale period (6 s here), then run to
        # the end by a live worker (the survivor, or the one that replaced the dead).
        ended = wait_job(admin, job["id"], ("done", "errored", "canceled"), timeout=30)
        assert time.monotonic() - killed > 4
        assert ended["state"] == "done", ended
        assert ended["workerID"] != victim
        assert ended["retriesLeft"] == 0
        lines = texts(admin, job["id"])
        assert f"worker {victim} stopped heartbeating; will retry (0 retries left)" in lines
        started = [x for x in lines if x.startswith("started on worker")]
        assert started == [f"started on worker {victim}", f"started on worker {ended['workerID']}"]
        assert lines[-1] == "done"
        workers = {w["id"]: w for w in admin.get(f"{API}/workers").json()}
        assert workers[victim]["status"] == "stale"
        assert workers[ended["workerID"]]["status"] == "running"


def test_a_failing_job_runs_once_per_retry_then_errors(admin):
    job = create_job(admin, parameters={"seconds": 0, "fail": True}, retries=2)
    assert job["retriesLeft"] == 2
    ended = wait_job(admin, job["id"], ("errored", "done", "canceled"), timeout=30)
    assert ended["state"] == "errored" and ended["retriesLeft"] == 0
    lines = texts(admin, job["id"])
    assert sum(x.startswith("started on worker") for x in lines) == 3, lines
    assert lines.count("error: RuntimeError: failed on purpose (fail=true)") == 3, lines
    assert [x for x in lines if x.startswith("will retry")] == [
        "will retry (1 retries left)",
        "will retry (0 retries left)",
    ]
    assert "done" not in lines


def test_a_canceled_running_job_stops_within_seconds(admin):
    job = create_job(admin, parameters={"seconds": 60}, retries=3)
    wait_job(admin, job["id"], ("running",))
    asked = time.monotonic()
    r = admin.post(f"{API}/jobs/{job['id']}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["cancelRequested"] is True
    ended = wait_job(admin, job["id"], ("canceled", "done", "errored"), timeout=10)
    assert ended["state"] == "canceled", ended
    assert time.monotonic() - asked < 4, "cancel took longer than a few heartbeats (1 s here)"
    assert ended["retriesLeft"] == 3  # a canceled job is not retried
    assert texts(admin, job["id"])[-1] == "canceled"
    time.sleep(1.5)
    assert get_job(admin, job["id"])["state"] == "canceled"


def test_history_cleanup_keeps_the_newest_finished_jobs(tmp_path):
    server = start_server(tmp_path, env=dict(FAST_JOBS))
    try:
        with server.client() as admin:
            r = admin.post(f"{API}/meta/settings", json={"jobHistoryMaxCount": 3})
            assert r.status_code == 202, r.text
            finished = [create_job(admin, parameters={"seconds": 0})["id"] for _ in range(5)]
            for job_id in finished:
                wait_job(admin, job_id, ("done",))
            waiting = create_job(admin, scheduledAt="2999-01-01T00:00:00Z")
            cleanup = create_job(admin, "jobhistorycleanup")
            done = wait_job(admin, cleanup["id"], ("done", "errored"))
            assert done["state"] == "done", texts(admin, cleanup["id"])
            assert any(
                x.startswith("deleted 2 finished jobs") for x in texts(admin, cleanup["id"])
            ), texts(admin, cleanup["id"])
            left = [j["id"] for j in admin.get(f"{API}/jobs", params={"pageSize": 100}).json()]
            # The clean-up itself, the waiting job (never pruned) and the newest 3 finished.
            assert left == [cleanup["id"], waiting["id"], *reversed(finished[2:])]
            for job_id in finished[:2]:
                assert admin.get(f"{API}/jobs/{job_id}").status_code == 404
    finally:
        server.stop()


def test_stopping_a_replica_puts_its_running_job_back(tmp_path):
    """SIGTERM with a job running: the process stops within seconds (the job stops at its
    next step) and the job waits for another worker, its retries untouched."""
    from wharf.jobs.store import JobStore
    from wharf.metadata.store import MetadataStore

    server = start_server(tmp_path)
    try:
        with server.client() as admin:
            job = create_job(admin, parameters={"seconds": 600})
            running = wait_job(admin, job["id"], ("running",))
        stopping = time.monotonic()
        server.proc.terminate()
        server.proc.wait(20)
        assert time.monotonic() - stopping < 10
    finally:
        server.stop()
    store = MetadataStore(server.db_url)
    try:
        after = JobStore(store).get(job["id"])
        lines = [x["data"] for x in JobStore(store).logs(job["id"])]
    finally:
        store.dispose()
    assert after is not None and after.state == "waiting", (after, lines)
    assert after.retries_left == running["retriesLeft"]
    assert f"worker {running['workerID']} shut down; waiting for another" in lines
