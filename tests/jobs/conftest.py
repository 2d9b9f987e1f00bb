"""Fixtures of the job tests: a registry of their own with two job workers and a short
stale/heartbeat period (WHARF_JOB_STALE_SECONDS=6: heartbeats every second, housekeeping
every two), an admin client, and helpers to create and wait for jobs over the API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import WharfServer, start_server

API = "/api/v0"
FAST_JOBS = {"WHARF_JOB_STALE_SECONDS": "6"}


@pytest.fixture(scope="session")
def jobs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    server = start_server(tmp_path_factory.mktemp("wharf-jobs"), workers=2, env=dict(FAST_JOBS))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin(jobs_server: WharfServer) -> Iterator[httpx.Client]:
    with jobs_server.client() as c:
        yield c


def create_job(client: httpx.Client, action: str = "sleep", **body: Any) -> dict[str, Any]:
    r = client.post(f"{API}/jobs", json={"action": action, **body})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["action"] == action and job["state"] == "waiting", job
    return job


def get_job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    r = client.get(f"{API}/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_job(
    client: httpx.Client, job_id: str, states: tuple[str, ...], timeout: float = 30
) -> dict[str, Any]:
    """Poll a job until it is in one of `states`; its last state."""
    deadline = time.monotonic() + timeout
    while True:
        job = get_job(client, job_id)
        if job["state"] in states:
            return job
        assert time.monotonic() < deadline, f"job still {job['state']} after {timeout} s: {job}"
        time.sleep(0.2)


def log_lines(client: httpx.Client, job_id: str, after: int = 0) -> list[dict[str, Any]]:
    r = client.get(f"{API}/jobs/{job_id}/logs", params={"after": after})
    assert r.status_code == 200, r.text
    return r.json()


def texts(client: httpx.Client, job_id: str) -> list[str]:
    return [line["data"] for line in log_lines(client, job_id)]
