"""Garbage collection runs as a job on a real server's job worker; tests enqueue jobs straight
into the server's metadata store and wait for the worker to finish them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import WharfServer, start_server
from wharf.jobs.store import FINISHED, Job, JobStore
from wharf.metadata.store import MetadataStore


class GCHarness:
    def __init__(self, server: WharfServer) -> None:
        self.server = server
        self.store = MetadataStore(server.db_url)
        self.jobs = JobStore(self.store)

    def run(self, action: str = "onlinegc", timeout: float = 120, **parameters) -> Job:
        job = self.jobs.create(action, parameters)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.jobs.get(job.id)
            assert current is not None
            if current.state in FINISHED:
                return current
            time.sleep(0.2)
        raise AssertionError(f"job {job.id} did not finish: {self.jobs.logs(job.id)}")

    def gc(self, **parameters) -> tuple[Job, list[str]]:
        parameters.setdefault("graceMinutes", 0)
        job = self.run("onlinegc", **parameters)
        lines = [entry["data"] for entry in self.jobs.logs(job.id)]
        assert job.state == "done", lines
        return job, lines

    def count(self, table: str) -> int:
        return self.store.count(table)

    def stored_blobs(self) -> set[str]:
        root = self.server.data_dir / "storage" / "blobs"
        return {f"{p.parent.parent.parent.name}:{p.parent.name}" for p in root.glob("*/*/*/data")}


@pytest.fixture
def harness(tmp_path) -> Iterator[GCHarness]:
    server = start_server(tmp_path)
    h = GCHarness(server)
    try:
        yield h
    finally:
        h.store.dispose()
        server.stop()
