"""JobStore directly against the metadata store of the pass (SQLite, or a fresh PostgreSQL
database): claims under concurrency, the conflict rule, reclaims, logs, crons, retention.

Concurrent callers each get a MetadataStore of their own (their own connections, as separate
processes or replicas have), so exclusion comes from the database, not from one process's
locks."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from tests import metadata_db
from wharf.jobs.store import CANCELED, DONE, ERRORED, RUNNING, WAITING, JobStore
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, utcnow


@pytest.fixture
def stores(tmp_path) -> Iterator[Callable[[], JobStore]]:
    """stores() -> a JobStore on its own MetadataStore, all on one database."""
    (tmp_path / "data").mkdir()
    url = metadata_db.server_db_url(tmp_path / "data")
    opened: list[MetadataStore] = []

    def new() -> JobStore:
        store = MetadataStore(url)
        if not opened:
            store.migrate()
        opened.append(store)
        return JobStore(store)

    yield new
    for store in opened:
        store.dispose()


def _in_threads(n: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            work(i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors


def test_each_job_is_claimed_exactly_once_by_concurrent_workers(stores):
    jobs = stores()
    made = {jobs.create("sleep", {"seconds": 0}).id for _ in range(50)}
    workers = [stores() for _ in range(8)]
    claimed: list[list[str]] = [[] for _ in workers]

    def claim_all(i: int) -> None:
        while (job := workers[i].claim(f"w{i}", ["sleep"])) is not None:
            assert job.state == RUNNING and job.worker_id == f"w{i}"
            claimed[i].append(job.id)

    _in_threads(len(workers), claim_all)
    every = [job_id for ids in claimed for job_id in ids]
    assert Counter(every) == Counter(made)  # all 50, none twice
    assert sum(1 for ids in claimed if ids) > 1, "the claims did not overlap at all"
    for i, ids in enumerate(claimed):
        for job_id in ids:
            job = jobs.get(job_id)
            assert job is not None and job.state == RUNNING and job.worker_id == f"w{i}"


def test_an_onlinegc_waits_while_a_conflicting_action_runs(stores):
    a, b = stores(), stores()
    gc1 = a.create("onlinegc")
    assert a.claim("w1", ["onlinegc", "sleep"]).id == gc1.id
    gc2 = a.create("onlinegc")
    sleep = a.create("sleep")
    # Another worker skips the second GC but takes work of other actions.
    assert b.claim("w2", ["onlinegc"]) is None
    assert b.claim("w2", ["onlinegc", "sleep"]).id == sleep.id
    assert b.get(gc2.id).state == WAITING
    assert a.finish(gc1.id, "w1", DONE) == DONE
    assert b.claim("w2", ["onlinegc"]).id == gc2.id
    assert b.finish(gc2.id, "w2", DONE) == DONE

    # A metadata store migration blocks GC the same way, and GC blocks it.
    migration = a.create("metadatastoremigration")
    gc3 = a.create("onlinegc")
    assert a.claim("w1", ["metadatastoremigration"]).id == migration.id
    assert b.claim("w2", ["onlinegc"]) is None
    a.finish(migration.id, "w1", DONE)
    assert b.claim("w2", ["onlinegc"]).id == gc3.id
    a.create("metadatastoremigration")
    assert a.claim("w1", ["metadatastoremigration"]) is None


def test_only_due_jobs_are_claimed_oldest_first(stores):
    jobs = stores()
    later = jobs.create("sleep", scheduled_at=utcnow() + timedelta(hours=1))
    first = jobs.create("sleep")
    second = jobs.create("sleep")
    assert jobs.claim("w", ["sleep"]).id == first.id
    assert jobs.claim("w", ["sleep"]).id == second.id
    assert jobs.claim("w", ["sleep"]) is None
    assert jobs.get(later.id).state == WAITING
    assert jobs.claim("w", ["ldapsync"]) is None


def _age_heartbeat(jobs: JobStore, job_id: str, seconds: int) -> None:
    with jobs.store._write() as conn:
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_reclaim_retries_errors_or_cancels_a_dead_workers_jobs(stores):
    jobs = stores()
    retry = jobs.create("sleep", retries=1)
    last = jobs.create("sleep")
    asked = jobs.create("sleep", retries=5)
    alive = jobs.create("sleep", retries=1)
    for job in (retry, last, asked, alive):
        assert jobs.claim("dead", ["sleep"]) is not None
    jobs.cancel(asked.id)
    for job in (retry, last, asked):
        _age_heartbeat(jobs, job.id, 60)

    # Two workers reclaim at once: each stale run is reclaimed exactly once.
    others = [stores(), stores()]
    results: list[list[str]] = [[], []]

    def reclaim(i: int) -> None:
        results[i] = others[i].reclaim(timedelta(seconds=30))

    _in_threads(2, reclaim)
    assert sorted(results[0] + results[1]) == sorted([retry.id, last.id, asked.id])

    got = jobs.get(retry.id)
    assert (got.state, got.retries_left, got.worker_id) == (WAITING, 0, None)
    assert jobs.get(last.id).state == ERRORED
    assert jobs.get(asked.id).state == CANCELED
    assert jobs.get(alive.id).state == RUNNING
    notes = [x["data"] for x in jobs.logs(retry.id)]
    assert notes == ["worker dead stopped heartbeating; will retry (0 retries left)"]
    assert [x["data"] for x in jobs.logs(last.id)] == [
        "worker dead stopped heartbeating; no retries left"
    ]
    # The dead worker, should it come back, learns the job is no longer its own.
    assert jobs.heartbeat(retry.id, "dead") is False
    assert jobs.finish(retry.id, "dead", DONE) == WAITING
    assert jobs.heartbeat(alive.id, "dead") is True


def test_a_failed_run_is_retried_unless_it_was_canceled(stores):
    jobs = stores()
    job = jobs.create("sleep", retries=2)
    jobs.claim("w", ["sleep"])
    assert jobs.finish(job.id, "w", ERRORED, "boom") == WAITING
    got = jobs.get(job.id)
    assert got.retries_left == 1 and got.scheduled_at is not None
    asked = jobs.create("sleep", retries=2)
    jobs.claim("w", ["sleep"])  # the due one; `job` waits for its retry delay
    assert jobs.cancel(asked.id).cancel_requested is True
    assert jobs.heartbeat(asked.id, "w") is False  # tells the worker to stop
    assert jobs.finish(asked.id, "w", ERRORED, "stopped badly") == ERRORED
    assert jobs.get(asked.id).retries_left == 2


def test_a_running_job_is_not_deleted_and_keeps_its_logs(stores):
    jobs = stores()
    job = jobs.create("sleep")
    jobs.claim("w", ["sleep"])
    jobs.append_log(job.id, ["one", "two"])
    assert jobs.delete(job.id) is False
    assert [x["data"] for x in jobs.logs(job.id)] == ["one", "two"]
    jobs.finish(job.id, "w", DONE)
    assert jobs.delete(job.id) is True
    assert jobs.get(job.id) is None and jobs.logs(job.id) == []
    assert jobs.delete(job.id) is False


def test_concurrent_log_writers_number_lines_without_gaps(stores):
    job = stores().create("sleep")
    writers = [stores() for _ in range(4)]

    def write(i: int) -> None:
        for n in range(25):
            writers[i].append_log(job.id, [f"{i}:{n}"])

    _in_threads(len(writers), write)
    lines = writers[0].logs(job.id)
    assert [x["line"] for x in lines] == list(range(1, 101))
    assert sorted(x["data"] for x in lines) == sorted(
        f"{i}:{n}" for i in range(4) for n in range(25)
    )
    assert writers[0].get(job.id).log_lines == 100
    assert [x["line"] for x in writers[0].logs(job.id, after=98)] == [99, 100]


def test_list_pages_by_job_id_newest_first(stores):
    jobs = stores()
    made = [jobs.create("sleep").id for _ in range(5)]
    jobs.create("ldapsync")
    assert [j.id for j in jobs.list(action="sleep")] == list(reversed(made))
    assert [j.id for j in jobs.list(action="sleep", start=made[2], limit=2)] == [made[2], made[1]]
    with pytest.raises(KeyError):
        jobs.list(start="nosuch")


def test_a_due_cron_makes_one_job_across_workers(stores):
    jobs = stores()
    jobs.set_cron("sleep", "* * * * *", {"seconds": 0}, retries=2)
    with jobs.store._write() as conn:
        conn.execute(update(t.crons).values(next_run=utcnow() - timedelta(seconds=1)))
    others = [stores() for _ in range(4)]
    made: list[list] = [[] for _ in others]

    def schedule(i: int) -> None:
        made[i] = others[i].schedule_due_crons()

    _in_threads(len(others), schedule)
    created = [job for jobs_made in made for job in jobs_made]
    assert len(created) == 1
    job = jobs.get(created[0].id)
    assert job.cron == "sleep" and job.retries_left == 2 and job.parameters == {"seconds": 0}
    cron = jobs.get_cron("sleep")
    assert cron.last_job_id == job.id
    assert jobs.schedule_due_crons() == []  # next run moved on


def test_prune_keeps_unfinished_and_the_newest_finished(stores):
    jobs = stores()
    finished = []
    for _ in range(4):
        job = jobs.create("sleep")
        jobs.claim("w", ["sleep"])
        jobs.append_log(job.id, ["x"])
        jobs.finish(job.id, "w", DONE)
        finished.append(job.id)
    waiting = jobs.create("sleep", scheduled_at=utcnow() + timedelta(days=1))
    old = jobs.create("sleep")
    jobs.cancel(old.id)
    with jobs.store._write() as conn:  # canceled long ago
        conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == old.id)
            .values(created_at=utcnow() - timedelta(days=40))
        )
    assert jobs.prune(timedelta(days=30), 2) == 3  # the old one, and 2 beyond the newest 2
    left = {j.id for j in jobs.list()}
    assert left == {waiting.id, finished[2], finished[3]}
    assert jobs.logs(finished[0]) == []
