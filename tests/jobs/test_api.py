"""The jobs API (/api/v0/jobs, /crons, /workers) against a real two-worker `wharf serve`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.access.helpers import api_error, create_user
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, utcnow

from .conftest import API, create_job, get_job, log_lines, texts, wait_job

FAR = (datetime.now(UTC) + timedelta(days=365)).isoformat()


def _endpoints(job_id: str) -> list[tuple[str, str, dict | None]]:
    return [
        ("GET", "/jobs", None),
        ("POST", "/jobs", {"action": "sleep", "parameters": {"seconds": 0}}),
        ("GET", f"/jobs/{job_id}", None),
        ("GET", f"/jobs/{job_id}/logs", None),
        ("POST", f"/jobs/{job_id}/cancel", None),
        ("DELETE", f"/jobs/{job_id}", None),
        ("GET", "/crons", None),
        ("POST", "/crons", {"action": "sleep", "schedule": "* * * * *"}),
        ("GET", "/crons/jobhistorycleanup", None),
        ("DELETE", "/crons/jobhistorycleanup", None),
        ("GET", "/workers", None),
    ]


def _ids(admin) -> list[str]:
    return [j["id"] for j in admin.get(f"{API}/jobs", params={"pageSize": 1000}).json()]


def test_only_system_admins_use_the_jobs_api(admin, jobs_server):
    waiting = create_job(admin, scheduledAt=FAR)
    before = _ids(admin)
    user = create_user(admin)
    anonymous = jobs_server.client(auth=False)
    try:
        for method, path, body in _endpoints(waiting["id"]):
            r = user.client.request(method, API + path, json=body)
            api_error(r, 403, "NOT_AUTHORIZED")
            r = anonymous.request(method, API + path, json=body)
            api_error(r, 401, "NOT_AUTHENTICATED")
            assert r.headers["www-authenticate"].startswith("Basic"), (method, path)
    finally:
        user.close()
        anonymous.close()
    # Nothing was created, canceled or deleted by the refused calls.
    assert get_job(admin, waiting["id"])["state"] == "waiting"
    assert _ids(admin) == before
    assert admin.get(f"{API}/crons/jobhistorycleanup").status_code == 200
    assert admin.get(f"{API}/crons/sleep").status_code == 404
    assert admin.delete(f"{API}/jobs/{waiting['id']}").status_code == 204


def test_a_job_runs_and_its_log_is_line_numbered(admin):
    job = create_job(admin, parameters={"seconds": 1})
    assert job["parameters"] == {"seconds": 1} and job["createdBy"] == "admin"
    assert job["workerID"] is None and job["retriesLeft"] == 0 and job["startedAt"] is None
    running = wait_job(admin, job["id"], ("running", "done"))
    assert running["workerID"]
    lines = log_lines(admin, job["id"])
    assert lines[0]["line"] == 1 and lines[0]["data"] == f"started on worker {running['workerID']}"
    done = wait_job(admin, job["id"], ("done", "errored", "canceled"))
    assert done["state"] == "done", done
    assert done["startedAt"] <= done["endedAt"] and done["endedAt"] is not None
    lines = log_lines(admin, job["id"])
    assert [x["line"] for x in lines] == list(range(1, len(lines) + 1))
    assert [x["data"] for x in lines] == [
        f"started on worker {done['workerID']}",
        "sleeping 1 s",
        "awake",
        "done",
    ]
    assert done["logLines"] == 4
    assert all(x["time"].endswith("Z") for x in lines)
    # `after` gives the lines after a line (what a follower asks for), and the job's state.
    r = admin.get(f"{API}/jobs/{job['id']}/logs", params={"after": 2})
    assert r.status_code == 200
    assert [x["line"] for x in r.json()] == [3, 4]
    assert r.headers["X-Job-State"] == "done"
    assert admin.get(f"{API}/jobs/{job['id']}/logs", params={"after": 4}).json() == []
    assert [x["line"] for x in admin.get(f"{API}/jobs/{job['id']}/logs?limit=1").json()] == [1]


def test_logs_stream_while_the_job_runs(admin):
    job = create_job(admin, parameters={"seconds": 3})
    wait_job(admin, job["id"], ("running",))
    deadline = time.monotonic() + 5
    while len(lines := log_lines(admin, job["id"])) < 2:  # "started", "sleeping 3 s"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = admin.get(f"{API}/jobs/{job['id']}/logs", params={"after": lines[-1]["line"]})
    assert r.headers["X-Job-State"] == "running" and r.json() == []
    wait_job(admin, job["id"], ("done",))
    rest = log_lines(admin, job["id"], after=lines[-1]["line"])
    assert [x["data"] for x in rest] == ["awake", "done"]


def test_scheduled_job_waits_for_its_time_in_utc(admin):
    local = datetime.now(UTC).astimezone(timezone(timedelta(hours=2))) + timedelta(seconds=3)
    job = create_job(admin, parameters={"seconds": 0}, scheduledAt=local.isoformat())
    scheduled = datetime.fromisoformat(job["scheduledAt"])
    assert job["scheduledAt"].endswith("Z")
    assert abs(scheduled - local) < timedelta(milliseconds=1)
    time.sleep(1.5)
    assert get_job(admin, job["id"])["state"] == "waiting"
    done = wait_job(admin, job["id"], ("done",), timeout=15)
    assert datetime.fromisoformat(done["startedAt"]) >= scheduled


def test_list_is_newest_first_and_paginated(admin):
    made = [create_job(admin, parameters={"seconds": 0}, scheduledAt=FAR)["id"] for _ in range(5)]
    try:
        seen: list[str] = []
        start = None
        pages = 0
        while len(seen) < 5:
            params = {"pageSize": 2, **({"pageStart": start} if start else {})}
            r = admin.get(f"{API}/jobs", params=params)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page) == 2
            seen += [j["id"] for j in page]
            start = r.headers["X-Next-Page-Start"]
            pages += 1
        assert pages == 3
        assert seen[:5] == list(reversed(made))  # the newest jobs, newest first
        # The key of a page is the id of its first job.
        r = admin.get(f"{API}/jobs", params={"pageSize": 3, "pageStart": made[2]})
        assert [j["id"] for j in r.json()] == [made[2], made[1], made[0]]
        everything = admin.get(f"{API}/jobs", params={"pageSize": 1000})
        assert "X-Next-Page-Start" not in everything.headers
        created = [j["createdAt"] for j in everything.json()]
        assert created == sorted(created, reverse=True)
        r = admin.get(f"{API}/jobs", params={"pageStart": "no-such-job"})
        assert "no-such-job" in api_error(r, 400, "INVALID_PARAMETERS")
        api_error(admin.get(f"{API}/jobs", params={"pageSize": 0}), 400, "INVALID_PARAMETERS")
    finally:
        for job_id in made:
            assert admin.delete(f"{API}/jobs/{job_id}").status_code == 204


def test_list_filters(admin):
    later = create_job(admin, "ldapsync", scheduledAt=FAR)
    long = create_job(admin, parameters={"seconds": 30})
    try:
        running = wait_job(admin, long["id"], ("running",))
        r = admin.get(f"{API}/jobs", params={"action": "ldapsync", "pageSize": 1000})
        assert later["id"] in [j["id"] for j in r.json()]
        assert {j["action"] for j in r.json()} == {"ldapsync"}

        r = admin.get(f"{API}/jobs", params={"running": "true", "pageSize": 1000})
        assert long["id"] in [j["id"] for j in r.json()]
        assert {j["state"] for j in r.json()} == {"running"}
        r = admin.get(f"{API}/jobs", params={"running": "false", "pageSize": 1000})
        ids = [j["id"] for j in r.json()]
        assert later["id"] in ids and long["id"] not in ids
        assert "running" not in {j["state"] for j in r.json()}

        worker = running["workerID"]
        r = admin.get(f"{API}/jobs", params={"worker": worker, "pageSize": 1000})
        assert long["id"] in [j["id"] for j in r.json()]
        assert {j["workerID"] for j in r.json()} == {worker}
        r = admin.get(f"{API}/jobs", params={"worker": "nobody-1", "action": "sleep"})
        assert r.json() == []
    finally:
        admin.post(f"{API}/jobs/{long['id']}/cancel")
        admin.delete(f"{API}/jobs/{later['id']}")
        wait_job(admin, long["id"], ("canceled", "done"))


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"action": "nosuch"}, "unknown action 'nosuch'"),
        ({"action": "sleep", "parameters": {"seconds": "ten"}}, "'seconds'"),
        ({"action": "sleep", "parameters": {"seconds": 99999}}, "'seconds'"),
        ({"action": "sleep", "parameters": {"fail": "yes"}}, "'fail'"),
        ({"action": "onlinegc", "parameters": {"graceMinutes": -1}}, "'graceMinutes'"),
        ({"action": "sleep", "parameters": [1]}, "parameters"),
        ({"action": "sleep", "retries": -1}, "retries"),
        ({"action": "sleep", "retries": "2"}, "retries"),
        ({"action": "sleep", "scheduledAt": "tomorrow"}, "scheduledAt"),
        ({"action": "sleep", "priority": 1}, "priority"),
        ({"parameters": {}}, "action"),
    ],
)
def test_invalid_jobs_are_refused(admin, body, says):
    before = _ids(admin)
    r = admin.post(f"{API}/jobs", json=body)
    assert says in api_error(r, 400, "INVALID_PARAMETERS")
    assert _ids(admin) == before


def test_invalid_json_is_refused(admin):
    r = admin.post(f"{API}/jobs", content=b"{nope", headers={"Content-Type": "application/json"})
    api_error(r, 400, "INVALID_JSON")


def test_unknown_jobs_are_404(admin):
    for method, path in (
        ("GET", "/jobs/nosuch"),
        ("GET", "/jobs/nosuch/logs"),
        ("POST", "/jobs/nosuch/cancel"),
        ("DELETE", "/jobs/nosuch"),
    ):
        api_error(admin.request(method, API + path), 404, "NO_SUCH_JOB")


def test_cancel_and_delete(admin):
    # A waiting job is canceled at once.
    waiting = create_job(admin, scheduledAt=FAR)
    r = admin.post(f"{API}/jobs/{waiting['id']}/cancel")
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "canceled" and r.json()["endedAt"]
    assert "already ended (canceled)" in api_error(
        admin.post(f"{API}/jobs/{waiting['id']}/cancel"), 409, "JOB_FINISHED"
    )

    # A running one cannot be deleted; it is asked to stop and ends canceled within seconds.
    job = create_job(admin, parameters={"seconds": 60})
    wait_job(admin, job["id"], ("running",))
    api_error(admin.delete(f"{API}/jobs/{job['id']}"), 409, "JOB_RUNNING")
    assert log_lines(admin, job["id"]), "a refused delete must keep the logs"
    asked = time.monotonic()
    r = admin.post(f"{API}/jobs/{job['id']}/cancel")
    assert r.status_code == 202
    assert r.json()["cancelRequested"] is True and r.json()["state"] == "running"
    ended = wait_job(admin, job["id"], ("canceled", "done", "errored"), timeout=10)
    assert ended["state"] == "canceled", ended
    assert time.monotonic() - asked < 5, "cancel took longer than a few heartbeats"
    assert texts(admin, job["id"])[-1] == "canceled"
    assert ended["endedAt"] is not None

    # Finished jobs are deleted with their logs.
    for job_id in (waiting["id"], job["id"]):
        r = admin.delete(f"{API}/jobs/{job_id}")
        assert r.status_code == 204, r.text
        api_error(admin.get(f"{API}/jobs/{job_id}"), 404, "NO_SUCH_JOB")
        api_error(admin.get(f"{API}/jobs/{job_id}/logs"), 404, "NO_SUCH_JOB")


# -- crons ------------------------------------------------------------------------------------


def test_the_history_cleanup_cron_exists_by_default(admin):
    r = admin.get(f"{API}/crons")
    assert r.status_code == 200
    crons = {c["action"]: c for c in r.json()}
    cron = crons["jobhistorycleanup"]
    assert cron["schedule"] == "0 3 * * *"
    assert cron["nextRun"].endswith("T03:00:00Z")
    assert admin.get(f"{API}/crons/jobhistorycleanup").json() == cron


def test_crons_crud_and_validation(admin):
    r = admin.post(
        f"{API}/crons",
        json={"action": "ldapsync", "schedule": "30 4 * * 1", "parameters": {}, "retries": 1},
    )
    assert r.status_code == 201, r.text
    cron = r.json()
    assert cron["action"] == "ldapsync" and cron["schedule"] == "30 4 * * 1"
    assert cron["retries"] == 1 and cron["lastJobID"] is None
    next_run = datetime.fromisoformat(cron["nextRun"])
    assert next_run.weekday() == 0 and (next_run.hour, next_run.minute) == (4, 30)  # UTC
    assert next_run > datetime.now(UTC)
    try:
        assert admin.get(f"{API}/crons/ldapsync").json() == cron
        assert "ldapsync" in [c["action"] for c in admin.get(f"{API}/crons").json()]
        # One schedule per action: posting again replaces it.
        r = admin.post(f"{API}/crons", json={"action": "ldapsync", "schedule": "0 * * * *"})
        assert r.status_code == 200, r.text
        assert r.json()["schedule"] == "0 * * * *" and r.json()["retries"] == 0
        assert [c["action"] for c in admin.get(f"{API}/crons").json()].count("ldapsync") == 1

        for body, says in (
            ({"action": "ldapsync", "schedule": "61 * * * *"}, "schedule"),
            ({"action": "ldapsync", "schedule": "every day"}, "schedule"),
            ({"action": "nosuch", "schedule": "* * * * *"}, "unknown action"),
            (
                {"action": "sleep", "schedule": "* * * * *", "parameters": {"seconds": -1}},
                "'seconds'",
            ),
            ({"action": "ldapsync", "schedule": "* * * * *", "retries": 1000}, "retries"),
            ({"action": "ldapsync"}, "schedule"),
        ):
            r = admin.post(f"{API}/crons", json=body)
            assert says in api_error(r, 400, "INVALID_PARAMETERS"), body
        assert admin.get(f"{API}/crons/ldapsync").json()["schedule"] == "0 * * * *"
        assert admin.get(f"{API}/crons/sleep").status_code == 404
    finally:
        assert admin.delete(f"{API}/crons/ldapsync").status_code == 204
    api_error(admin.get(f"{API}/crons/ldapsync"), 404, "NO_SUCH_CRON")
    api_error(admin.delete(f"{API}/crons/ldapsync"), 404, "NO_SUCH_CRON")


def _make_due(db_url: str, action: str) -> None:
    """Move a cron's next run into the past, directly in the metadata store (instead of
    waiting for the minute to turn)."""
    store = MetadataStore(db_url)
    try:
        with store._write() as conn:
            moved = conn.execute(
                update(t.crons)
                .where(t.crons.c.action == action)
                .values(next_run=utcnow() - timedelta(seconds=1))
            ).rowcount
        assert moved == 1
    finally:
        store.dispose()


def test_a_due_cron_fires_once(admin, jobs_server):
    r = admin.post(
        f"{API}/crons",
        json={"action": "sleep", "schedule": "* * * * *", "parameters": {"seconds": 0}},
    )
    assert r.status_code == 201, r.text
    try:
        _make_due(jobs_server.db_url, "sleep")
        deadline = time.monotonic() + 15
        while not (cron := admin.get(f"{API}/crons/sleep").json())["lastJobID"]:
            assert time.monotonic() < deadline, "the due cron did not fire"
            time.sleep(0.2)
        job = wait_job(admin, cron["lastJobID"], ("done", "errored"))
        assert job["state"] == "done"
        assert job["cron"] == "sleep" and job["createdBy"] == "cron"
        assert job["parameters"] == {"seconds": 0}
        # Its next run moved to the next minute, and both workers made one job, not two.
        next_run = datetime.fromisoformat(cron["nextRun"])
        assert next_run > datetime.fromisoformat(job["createdAt"])
        assert next_run.second == 0
        by_cron = [
            j
            for j in admin.get(f"{API}/jobs", params={"action": "sleep", "pageSize": 50}).json()
            if j["cron"] == "sleep"
        ]
        assert [j["id"] for j in by_cron] == [job["id"]]
    finally:
        assert admin.delete(f"{API}/crons/sleep").status_code == 204


# -- workers ----------------------------------------------------------------------------------


def test_workers_are_the_servers_processes(admin, jobs_server):
    r = admin.get(f"{API}/workers")
    assert r.status_code == 200
    workers = [w for w in r.json() if w["status"] == "running"]
    assert len(workers) == 2, r.json()
    replica = (Path(jobs_server.data_dir) / "replica-id").read_text().strip()
    for w in workers:
        assert w["replicaID"] == replica
        assert w["id"] == f"{replica}-{w['pid']}"
        # Each is a worker process of the server (forked by its supervisor).
        status = Path(f"/proc/{w['pid']}/status").read_text()
        assert f"PPid:\t{jobs_server.proc.pid}\n" in status
        seen = datetime.fromisoformat(w["heartbeatAt"])
        assert datetime.now(UTC) - seen < timedelta(seconds=10)
        assert w["runningJobs"] == 0


def test_a_busy_worker_is_listed_running_with_its_job(admin):
    job = create_job(admin, parameters={"seconds": 30})
    try:
        running = wait_job(admin, job["id"], ("running",))
        time.sleep(7)  # longer than the stale period (6 s): it must keep heartbeating
        workers = {w["id"]: w for w in admin.get(f"{API}/workers").json()}
        busy = workers[running["workerID"]]
        assert busy["status"] == "running" and busy["runningJobs"] == 1
        assert get_job(admin, job["id"])["state"] == "running"  # not reclaimed either
        assert sum(x.startswith("started on worker") for x in texts(admin, job["id"])) == 1
    finally:
        admin.post(f"{API}/jobs/{job['id']}/cancel")
        wait_job(admin, job["id"], ("canceled",))


def test_openapi_describes_the_jobs_api(admin):
    paths = admin.get(f"{API}/openapi.json").json()["paths"]
    assert {"get", "post"} <= set(paths[f"{API}/jobs"])
    assert {"get", "delete"} <= set(paths[f"{API}/jobs/{{job_id}}"])
    assert {"get", "post"} <= set(paths[f"{API}/crons"])
    assert {"get", "delete"} <= set(paths[f"{API}/crons/{{action}}"])
    assert "get" in paths[f"{API}/workers"]
    assert "post" in paths[f"{API}/jobs/{{job_id}}/cancel"]
    assert "get" in paths[f"{API}/jobs/{{job_id}}/logs"]
