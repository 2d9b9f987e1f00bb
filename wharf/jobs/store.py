"""Jobs, logs, crons and workers in the metadata store.

Claiming is safe under concurrency on both stores: on PostgreSQL a claim locks the oldest due
job with `FOR UPDATE SKIP LOCKED` inside a transaction that holds a cluster-wide advisory lock
(so the exclusion rules between actions, "one GC at a time", cannot race); on SQLite write
transactions are serialised anyway.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, text, update

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, aware, utcnow

WAITING, RUNNING, DONE, ERRORED, CANCELED = "waiting", "running", "done", "errored", "canceled"
STATES = (WAITING, RUNNING, DONE, ERRORED, CANCELED)
FINISHED = (DONE, ERRORED, CANCELED)
CLAIM_LOCK = 0x57484152_0002  # PostgreSQL advisory lock key for claims
RETRY_DELAY = timedelta(seconds=5)

# An action does not start while a job of a conflicting action runs (anywhere in the cluster).
CONFLICTS: dict[str, frozenset[str]] = {
    "onlinegc": frozenset({"onlinegc", "metadatastoremigration"}),
    "metadatastoremigration": frozenset({"metadatastoremigration", "onlinegc"}),
}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return aware(value).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Job:
    id: str
    action: str
    parameters: dict[str, Any]
    state: str
    worker_id: str | None
    retries_left: int
    scheduled_at: datetime
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    heartbeat_at: datetime | None
    cancel_requested: bool
    cron: str | None
    created_by: str | None
    log_lines: int

    @classmethod
    def from_row(cls, row: Any) -> Job:
        m = row._mapping
        return cls(**{**dict(m), "parameters": json.loads(m["parameters"])})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "action": self.action,
            "parameters": self.parameters,
            "state": self.state,
            "workerID": self.worker_id,
            "retriesLeft": self.retries_left,
            "scheduledAt": _iso(self.scheduled_at),
            "createdAt": _iso(self.created_at),
            "startedAt": _iso(self.started_at),
            "endedAt": _iso(self.ended_at),
            "heartbeatAt": _iso(self.heartbeat_at),
            "cancelRequested": self.cancel_requested,
            "cron": self.cron,
            "createdBy": self.created_by,
            "logLines": self.log_lines,
        }


@dataclass(frozen=True)
class Cron:
    action: str
    schedule: str
    parameters: dict[str, Any]
    retries: int
    next_run: datetime
    last_job_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "schedule": self.schedule,
            "parameters": self.parameters,
            "retries": self.retries,
            "nextRun": _iso(self.next_run),
            "lastJobID": self.last_job_id,
        }


def next_run(schedule: str, after: datetime) -> datetime:
    """The first time after `after` (UTC) that a cron schedule fires; ValueError if invalid."""
    from croniter import croniter

    if not croniter.is_valid(schedule):
        raise ValueError(f"invalid cron schedule {schedule!r} (five fields, in UTC)")
    return croniter(schedule, after).get_next(datetime)


class JobStore:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- jobs -------------------------------------------------------------------------------

    def create(
        self,
        action: str,
        parameters: dict[str, Any] | None = None,
        *,
        retries: int = 0,
        scheduled_at: datetime | None = None,
        created_by: str | None = None,
        cron: str | None = None,
        conn: Connection | None = None,
    ) -> Job:
        now = utcnow()
        values = {
            "id": str(uuid.uuid4()),
            "action": action,
            "parameters": json.dumps(parameters or {}),
            "state": WAITING,
            "retries_left": retries,
            "scheduled_at": scheduled_at or now,
            "created_at": now,
            "cancel_requested": False,
            "cron": cron,
            "created_by": created_by,
            "log_lines": 0,
        }
        if conn is not None:
            conn.execute(t.jobs.insert().values(values))
        else:
            with self.store._write() as c:
                c.execute(t.jobs.insert().values(values))
        job = self.get(values["id"]) if conn is None else None
        return job or Job.from_row(_Row(values))

    def get(self, job_id: str) -> Job | None:
        with self.store._read() as conn:
            row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        return Job.from_row(row) if row else None

    def list(
        self,
        *,
        action: str | None = None,
        worker: str | None = None,
        running: bool | None = None,
        states: Iterable[str] | None = None,
        start: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> list[Job]:
        """Newest first. `start` is the id of the first job of the page (KeyError if there
        is no such job): the page holds it and the jobs created before it."""
        q = select(t.jobs)
        if start is not None:
            with self.store._read() as conn:
                first = conn.execute(
                    select(t.jobs.c.created_at, t.jobs.c.id).where(t.jobs.c.id == start)
                ).first()
            if first is None:
                raise KeyError(start)
            q = q.where(
                or_(
                    t.jobs.c.created_at < first.created_at,
                    and_(t.jobs.c.created_at == first.created_at, t.jobs.c.id <= first.id),
                )
            )
        if action:
            q = q.where(t.jobs.c.action == action)
        if worker:
            q = q.where(t.jobs.c.worker_id == worker)
        if running is True:
            q = q.where(t.jobs.c.state == RUNNING)
        elif running is False:
            q = q.where(t.jobs.c.state != RUNNING)
        if states:
            q = q.where(t.jobs.c.state.in_(list(states)))
        q = q.order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc()).offset(offset).limit(limit)
        with self.store._read() as conn:
            return [Job.from_row(r) for r in conn.execute(q)]

    def claim(self, worker_id: str, actions: Iterable[str]) -> Job | None:
        """Start the oldest due waiting job of these actions whose conflicting actions are not
        running; None if there is none."""
        now = utcnow()
        actions = list(actions)
        due = (
            select(t.jobs.c.id)
            .where(
                t.jobs.c.state == WAITING,
                t.jobs.c.scheduled_at <= now,
                t.jobs.c.action.in_(actions),
            )
            .limit(1)
        )
        with self.store._read() as conn:  # the usual answer, without a write transaction
            if conn.execute(due).first() is None:
                return None
        with self.store._write() as conn:
            if self.store._dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK})
            running = set(
                conn.execute(select(t.jobs.c.action).where(t.jobs.c.state == RUNNING)).scalars()
            )
            blocked = {a for a, conflicts in CONFLICTS.items() if conflicts & running}
            allowed = [a for a in actions if a not in blocked]
            if not allowed:
                return None
            q = (
                select(t.jobs.c.id)
                .where(
                    t.jobs.c.state == WAITING,
                    t.jobs.c.scheduled_at <= now,
                    t.jobs.c.action.in_(allowed),
                )
                .order_by(t.jobs.c.scheduled_at, t.jobs.c.created_at)
                .limit(1)
            )
            if self.store._dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            job_id = conn.execute(q).scalar()
            if job_id is None:
                return None
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id)
                .values(
                    state=RUNNING,
                    worker_id=worker_id,
                    started_at=now,
                    heartbeat_at=now,
                    ended_at=None,
                )
            )
            row = conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).first()
        return Job.from_row(row)

    def heartbeat(self, job_id: str, worker_id: str) -> bool:
        """Refresh a running job's heartbeat; True if it should go on (not canceled, and
        still ours: a job reclaimed from a worker thought dead must stop)."""
        with self.store._write(durable=False) as conn:
            result = conn.execute(
                update(t.jobs)
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.worker_id == worker_id,
                    t.jobs.c.state == RUNNING,
                )
                .values(heartbeat_at=utcnow())
            )
            if result.rowcount == 0:
                return False
            canceled = conn.execute(
                select(t.jobs.c.cancel_requested).where(t.jobs.c.id == job_id)
            ).scalar()
        return not canceled

    def finish(self, job_id: str, worker_id: str, state: str, error: str | None = None) -> str:
        """End a run: done, canceled, or failed (`state=errored`), which is retried while
        retries are left. Returns the job's new state."""
        now = utcnow()
        with self.store._write() as conn:
            row = conn.execute(
                select(
                    t.jobs.c.retries_left,
                    t.jobs.c.worker_id,
                    t.jobs.c.state,
                    t.jobs.c.cancel_requested,
                ).where(t.jobs.c.id == job_id)
            ).first()
            if row is None or row.worker_id != worker_id or row.state != RUNNING:
                return row.state if row else ERRORED  # reclaimed meanwhile: not ours to end
            values: dict[str, Any] = {"ended_at": now, "state": state}
            # A job asked to stop is not run again, whatever its retries.
            if state == ERRORED and row.retries_left > 0 and not row.cancel_requested:
                values = {
                    "state": WAITING,
                    "retries_left": row.retries_left - 1,
                    "scheduled_at": now + RETRY_DELAY,
                    "worker_id": None,
                }
            conn.execute(update(t.jobs).where(t.jobs.c.id == job_id).values(**values))
            if error:
                self._log(conn, job_id, [f"error: {error}"])
            if values["state"] == WAITING:
                self._log(conn, job_id, [f"will retry ({row.retries_left - 1} retries left)"])
            return str(values["state"])

    def requeue(self, job_id: str, worker_id: str) -> bool:
        """Put a running job back to waiting, retries unchanged (its worker is shutting down
        and stopped it cleanly)."""
        with self.store._write() as conn:
            moved = conn.execute(
                update(t.jobs)
                .where(
                    t.jobs.c.id == job_id,
                    t.jobs.c.worker_id == worker_id,
                    t.jobs.c.state == RUNNING,
                )
                .values(state=WAITING, worker_id=None, scheduled_at=utcnow())
            ).rowcount
            if moved:
                self._log(conn, job_id, [f"worker {worker_id} shut down; waiting for another"])
        return bool(moved)

    def cancel(self, job_id: str) -> Job | None:
        """A waiting job is canceled at once; a running one is asked to stop (its worker sees
        it at the next heartbeat). Finished jobs are left as they are."""
        with self.store._write() as conn:
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id, t.jobs.c.state == WAITING)
                .values(state=CANCELED, ended_at=utcnow())
            )
            conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == job_id, t.jobs.c.state == RUNNING)
                .values(cancel_requested=True)
            )
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Delete a job that is not running (with its logs)."""
        with self.store._write() as conn:
            # The job first: a running job (refused) keeps its logs.
            deleted = conn.execute(
                delete(t.jobs).where(t.jobs.c.id == job_id, t.jobs.c.state != RUNNING)
            ).rowcount
            if deleted:
                conn.execute(delete(t.job_logs).where(t.job_logs.c.job_id == job_id))
        return deleted > 0

    def reclaim(self, stale_after: timedelta) -> list[str]:
        """Running jobs whose worker stopped heartbeating: retried if retries are left, else
        errored. Returns their ids."""
        cutoff = utcnow() - stale_after
        reclaimed = []
        with self.store._write() as conn:
            rows = conn.execute(
                select(
                    t.jobs.c.id,
                    t.jobs.c.worker_id,
                    t.jobs.c.retries_left,
                    t.jobs.c.cancel_requested,
                ).where(t.jobs.c.state == RUNNING, t.jobs.c.heartbeat_at < cutoff)
            ).all()
            for row in rows:
                if row.cancel_requested:
                    values: dict[str, Any] = {"state": CANCELED, "ended_at": utcnow()}
                    note = "it had been canceled"
                elif row.retries_left > 0:
                    values = {
                        "state": WAITING,
                        "retries_left": row.retries_left - 1,
                        "worker_id": None,
                        "scheduled_at": utcnow(),
                    }
                    note = f"will retry ({row.retries_left - 1} retries left)"
                else:
                    values = {"state": ERRORED, "ended_at": utcnow()}
                    note = "no retries left"
                # Only if it is still the same stale run: on PostgreSQL another worker may
                # have reclaimed it (and a third claimed it) since the select above.
                moved = conn.execute(
                    update(t.jobs)
                    .where(
                        t.jobs.c.id == row.id,
                        t.jobs.c.state == RUNNING,
                        t.jobs.c.worker_id == row.worker_id,
                        t.jobs.c.heartbeat_at < cutoff,
                    )
                    .values(**values)
                ).rowcount
                if not moved:
                    continue
                self._log(conn, row.id, [f"worker {row.worker_id} stopped heartbeating; {note}"])
                reclaimed.append(row.id)
        return reclaimed

    def running_actions(self) -> set[str]:
        with self.store._read() as conn:
            return set(
                conn.execute(select(t.jobs.c.action).where(t.jobs.c.state == RUNNING)).scalars()
            )

    def prune(self, max_age: timedelta, max_count: int) -> int:
        """Delete finished jobs older than max_age, and the oldest beyond max_count."""
        cutoff = utcnow() - max_age
        with self.store._write() as conn:
            keep = (
                select(t.jobs.c.id)
                .where(t.jobs.c.state.in_(FINISHED))
                .order_by(t.jobs.c.created_at.desc(), t.jobs.c.id.desc())
                .limit(max_count)
            )
            doomed = select(t.jobs.c.id).where(
                t.jobs.c.state.in_(FINISHED),
                or_(t.jobs.c.created_at < cutoff, t.jobs.c.id.not_in(keep.scalar_subquery())),
            )
            ids = list(conn.execute(doomed).scalars())
            for i in range(0, len(ids), 500):
                batch = ids[i : i + 500]
                conn.execute(delete(t.job_logs).where(t.job_logs.c.job_id.in_(batch)))
                conn.execute(delete(t.jobs).where(t.jobs.c.id.in_(batch)))
        return len(ids)

    # -- logs -------------------------------------------------------------------------------

    def _log(self, conn: Connection, job_id: str, lines: list[str]) -> None:
        # FOR UPDATE (PostgreSQL; SQLite serialises writers anyway): a worker and a reclaim
        # logging to one job at once would otherwise both take the next line number.
        start = conn.execute(
            select(t.jobs.c.log_lines).where(t.jobs.c.id == job_id).with_for_update()
        ).scalar()
        if start is None:
            return
        now = utcnow()
        conn.execute(
            t.job_logs.insert(),
            [
                {"job_id": job_id, "line": start + i + 1, "at": now, "text": line}
                for i, line in enumerate(lines)
            ],
        )
        conn.execute(
            update(t.jobs).where(t.jobs.c.id == job_id).values(log_lines=start + len(lines))
        )

    def append_log(self, job_id: str, lines: list[str]) -> None:
        if lines:
            with self.store._write(durable=False) as conn:
                self._log(conn, job_id, lines)

    def logs(self, job_id: str, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        with self.store._read() as conn:
            rows = conn.execute(
                select(t.job_logs.c.line, t.job_logs.c.at, t.job_logs.c.text)
                .where(t.job_logs.c.job_id == job_id, t.job_logs.c.line > after)
                .order_by(t.job_logs.c.line)
                .limit(limit)
            ).all()
        return [{"line": r.line, "time": _iso(r.at), "data": r.text} for r in rows]

    # -- crons ------------------------------------------------------------------------------

    def set_cron(
        self, action: str, schedule: str, parameters: dict[str, Any], retries: int = 0
    ) -> Cron:
        now = utcnow()
        values = {
            "schedule": schedule,
            "parameters": json.dumps(parameters),
            "retries": retries,
            "next_run": next_run(schedule, now),
            "updated_at": now,
        }
        with self.store._write() as conn:
            conn.execute(
                self.store._insert(t.crons)
                .values(action=action, created_at=now, **values)
                .on_conflict_do_update(index_elements=[t.crons.c.action], set_=values)
            )
        cron = self.get_cron(action)
        assert cron is not None
        return cron

    def set_cron_if_missing(self, action: str, schedule: str, parameters: dict[str, Any]) -> None:
        now = utcnow()
        with self.store._write() as conn:
            conn.execute(
                self.store._insert(t.crons)
                .values(
                    action=action,
                    schedule=schedule,
                    parameters=json.dumps(parameters),
                    retries=0,
                    next_run=next_run(schedule, now),
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
            )

    def get_cron(self, action: str) -> Cron | None:
        with self.store._read() as conn:
            row = conn.execute(select(t.crons).where(t.crons.c.action == action)).first()
        return _cron(row) if row else None

    def list_crons(self) -> list[Cron]:
        with self.store._read() as conn:
            return [_cron(r) for r in conn.execute(select(t.crons).order_by(t.crons.c.action))]

    def delete_cron(self, action: str) -> bool:
        with self.store._write() as conn:
            return conn.execute(delete(t.crons).where(t.crons.c.action == action)).rowcount > 0

    def schedule_due_crons(self) -> list[Job]:
        """Turn every cron that is due into a job, exactly once across all workers: the cron's
        next run moves forward in the same transaction, only if nobody moved it first."""
        now = utcnow()
        created = []
        with self.store._read() as conn:
            due = conn.execute(select(t.crons).where(t.crons.c.next_run <= now)).all()
        for row in due:
            with self.store._write() as conn:
                moved = conn.execute(
                    update(t.crons)
                    .where(t.crons.c.action == row.action, t.crons.c.next_run == row.next_run)
                    .values(next_run=next_run(row.schedule, now))
                ).rowcount
                if not moved:
                    continue
                job = self.create(
                    row.action,
                    json.loads(row.parameters),
                    retries=row.retries,
                    cron=row.action,
                    created_by="cron",
                    conn=conn,
                )
                conn.execute(
                    update(t.crons).where(t.crons.c.action == row.action).values(last_job_id=job.id)
                )
                created.append(job)
        return created

    # -- workers ----------------------------------------------------------------------------

    def register_worker(self, worker_id: str, replica_id: str, hostname: str, pid: int) -> None:
        now = utcnow()
        values = {
            "replica_id": replica_id,
            "hostname": hostname,
            "pid": pid,
            "started_at": now,
            "heartbeat_at": now,
        }
        with self.store._write() as conn:
            conn.execute(
                self.store._insert(t.job_workers)
                .values(id=worker_id, **values)
                .on_conflict_do_update(index_elements=[t.job_workers.c.id], set_=values)
            )

    def beat_worker(self, worker_id: str) -> None:
        with self.store._write(durable=False) as conn:
            conn.execute(
                update(t.job_workers)
                .where(t.job_workers.c.id == worker_id)
                .values(heartbeat_at=utcnow())
            )

    def list_workers(self, stale_after: timedelta) -> list[dict[str, Any]]:
        cutoff = utcnow() - stale_after
        with self.store._read() as conn:
            rows = conn.execute(select(t.job_workers).order_by(t.job_workers.c.id)).all()
            running = dict(
                conn.execute(
                    select(t.jobs.c.worker_id, func.count())
                    .where(t.jobs.c.state == RUNNING)
                    .group_by(t.jobs.c.worker_id)
                ).all()
            )
        out = []
        for r in rows:
            healthy = aware(r.heartbeat_at) >= cutoff
            out.append(
                {
                    "id": r.id,
                    "replicaID": r.replica_id,
                    "hostname": r.hostname,
                    "pid": r.pid,
                    "startedAt": _iso(r.started_at),
                    "heartbeatAt": _iso(r.heartbeat_at),
                    "status": "running" if healthy else "stale",
                    "runningJobs": running.get(r.id, 0),
                }
            )
        return out

    def forget_stale_workers(self, older_than: timedelta) -> int:
        cutoff = utcnow() - older_than
        with self.store._write() as conn:
            return conn.execute(
                delete(t.job_workers).where(
                    and_(t.job_workers.c.heartbeat_at < cutoff),
                )
            ).rowcount


def _cron(row: Any) -> Cron:
    return Cron(
        action=row.action,
        schedule=row.schedule,
        parameters=json.loads(row.parameters),
        retries=row.retries,
        next_run=row.next_run,
        last_job_id=row.last_job_id,
    )


class _Row:
    """Lets Job.from_row read a plain dict (a job created inside the caller's transaction)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self._mapping = {
            "worker_id": None,
            "started_at": None,
            "ended_at": None,
            "heartbeat_at": None,
            **values,
        }
