"""The job worker every serving process of every replica runs, and the actions it knows.

A worker polls the metadata store about once a second: it turns due crons into jobs, reclaims
jobs whose worker stopped heartbeating, and claims one due job at a time, which runs in a
thread while a second thread heartbeats it every few seconds. Cancellation and duration
limits are seen between an action's steps (`ctx.stopped()`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from wharf.faults import log_failure
from wharf.jobs.store import CANCELED, DONE, ERRORED, Job, JobStore

log = logging.getLogger(__name__)


def _seconds_from_env(name: str, default: float, high: float) -> float:
    """A duration from the environment; the default (with a warning) when it is not a number
    of seconds in (0, high]: a typo must not stop every worker of the replica."""
    value = os.environ.get(name)
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= high:
        log.warning(
            "%s=%r is not a duration in (0, %g] seconds; using %g", name, value, high, default
        )
        return default
    return seconds


POLL_SECONDS = 1.0
# A running job whose worker has not heartbeaten it for this long is reclaimed (retried, or
# errored without retries left), and a worker this long silent is listed as stale.
# WHARF_JOB_STALE_SECONDS changes it (tests shorten it); the heartbeat (at most a sixth of it,
# WHARF_JOB_HEARTBEAT_SECONDS up to half of it) and the housekeeping (reclaims, crons: a
# third of it, at most 10 s) follow, so that a live worker is never taken for dead.
STALE_AFTER = timedelta(seconds=_seconds_from_env("WHARF_JOB_STALE_SECONDS", 30.0, 86_400))
HEARTBEAT_SECONDS = _seconds_from_env(
    "WHARF_JOB_HEARTBEAT_SECONDS",
    min(5.0, STALE_AFTER.total_seconds() / 6),
    STALE_AFTER.total_seconds() / 2,
)
HOUSEKEEPING_SECONDS = min(10.0, STALE_AFTER.total_seconds() / 3)
DEFAULT_CRONS = {  # daily, in UTC
    "jobhistorycleanup": "0 3 * * *",
    "uploadcleanup": "30 3 * * *",
}


class JobCanceled(Exception):
    pass


@dataclass
class JobContext:
    job: Job
    jobs: JobStore
    services: Any
    deadline: float | None = None
    canceled: threading.Event = field(default_factory=threading.Event)
    shutdown: threading.Event = field(default_factory=threading.Event)

    def log(self, line: str) -> None:
        self.jobs.append_log(self.job.id, [line])

    def stopped(self) -> bool:
        """True once the job was canceled or its duration limit passed."""
        if self.canceled.is_set() or self.shutdown.is_set():
            return True
        return self.deadline is not None and time.monotonic() > self.deadline


# -- actions --------------------------------------------------------------------------------


def _bool(params: dict[str, Any], name: str, default: bool) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise ValueError(f"parameter {name!r} must be true or false")
    return value


def _int(params: dict[str, Any], name: str, default: int, low: int = 0, high: int = 10**6) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"parameter {name!r} must be an integer from {low} to {high}")
    return value


def _gc_params(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "dryRun": _bool(params, "dryRun", False),
        "deleteUntagged": _bool(params, "deleteUntagged", True),
        "graceMinutes": _int(params, "graceMinutes", 60, 0, 7 * 24 * 60),
        "maxDurationMinutes": _int(params, "maxDurationMinutes", 0, 0, 24 * 60),
    }


def run_gc(ctx: JobContext) -> None:
    from wharf.jobs.gc import GarbageCollector

    p = _gc_params(ctx.job.parameters)
    if p["maxDurationMinutes"]:
        ctx.deadline = time.monotonic() + 60 * p["maxDurationMinutes"]
    collector = GarbageCollector(
        ctx.services.store, ctx.services.storage, log=ctx.log, stopped=ctx.stopped
    )
    report = collector.run(
        dry_run=p["dryRun"],
        delete_untagged=p["deleteUntagged"],
        grace=timedelta(minutes=p["graceMinutes"]),
        upload_expiry=timedelta(minutes=ctx.services.policy.settings().uploadExpiryMinutes),
    )
    summary = report.to_dict()
    ctx.log(("dry run: " if p["dryRun"] else "") + " ".join(f"{k}={v}" for k, v in summary.items()))
    if not report.complete:
        if ctx.canceled.is_set() or ctx.shutdown.is_set():
            raise JobCanceled
        ctx.log("stopped at its duration limit; the next run continues")


def run_ldap_sync(ctx: JobContext) -> None:
    counts = ctx.services.directory.sync(None)
    ctx.log("ldap sync: " + " ".join(f"{k}={v}" for k, v in sorted(counts.items())))


def run_history_cleanup(ctx: JobContext) -> None:
    settings = ctx.services.policy.settings()
    deleted = ctx.jobs.prune(
        timedelta(days=settings.jobHistoryMaxAgeDays), settings.jobHistoryMaxCount
    )
    ctx.log(
        f"deleted {deleted} finished jobs (older than {settings.jobHistoryMaxAgeDays} days "
        f"or beyond the newest {settings.jobHistoryMaxCount})"
    )


def run_upload_cleanup(ctx: JobContext) -> None:
    from wharf.jobs.gc import GarbageCollector, Report

    minutes = ctx.services.policy.settings().uploadExpiryMinutes
    collector = GarbageCollector(
        ctx.services.store, ctx.services.storage, log=ctx.log, stopped=ctx.stopped
    )
    collector.delete_abandoned_uploads(timedelta(minutes=minutes), Report())
    if ctx.stopped():
        raise JobCanceled


def run_metadata_migration(ctx: JobContext) -> None:
    """The background migrations an upgrade left to do (wharf.upgrade.background)."""
    from wharf.upgrade.background import run_pending

    complete = run_pending(ctx.services.store, ctx.services.identities, ctx.log, ctx.stopped)
    if not complete:
        raise JobCanceled


def run_sleep(ctx: JobContext) -> None:
    """A diagnostic action: proves workers claim, heartbeat, log and cancel."""
    seconds = _int(ctx.job.parameters, "seconds", 1, 0, 3600)
    fail = _bool(ctx.job.parameters, "fail", False)
    end = time.monotonic() + seconds
    ctx.log(f"sleeping {seconds} s")
    while time.monotonic() < end:
        if ctx.stopped():
            raise JobCanceled
        time.sleep(min(0.2, max(end - time.monotonic(), 0)))
    if fail:
        raise RuntimeError("failed on purpose (fail=true)")
    ctx.log("awake")


@dataclass(frozen=True)
class Action:
    run: Callable[[JobContext], None]
    check: Callable[[dict[str, Any]], Any]
    description: str


ACTIONS: dict[str, Action] = {
    "onlinegc": Action(
        run_gc,
        _gc_params,
        "garbage collection, online: unreferenced blobs and untagged manifests",
    ),
    "ldapsync": Action(run_ldap_sync, lambda p: p, "synchronise users and teams with LDAP"),
    "jobhistorycleanup": Action(
        run_history_cleanup, lambda p: p, "delete old job records (the retention settings)"
    ),
    "uploadcleanup": Action(
        run_upload_cleanup,
        lambda p: p,
        "delete upload sessions idle for longer than the uploadExpiryMinutes setting",
    ),
    "metadatastoremigration": Action(
        run_metadata_migration,
        lambda p: p,
        "background data migrations after an upgrade (garbage collection waits for it)",
    ),
    "sleep": Action(
        run_sleep,
        lambda p: (_int(p, "seconds", 1, 0, 3600), _bool(p, "fail", False)),
        "diagnostic: sleep for `seconds`, then succeed (or fail with fail=true)",
    ),
}


def check_parameters(action: str, parameters: dict[str, Any]) -> None:
    """ValueError (with the reason) for an unknown action or bad parameters."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})")
    if not isinstance(parameters, dict):
        raise ValueError("parameters must be an object")
    # No action takes more: a nested value would only be stored, and one nested deep enough
    # would fail every listing that serialises it.
    if not all(v is None or isinstance(v, str | int | float | bool) for v in parameters.values()):
        raise ValueError("parameter values are strings, numbers, true/false or null")
    ACTIONS[action].check(parameters)


# -- the worker -----------------------------------------------------------------------------


class JobWorker:
    def __init__(self, services: Any, replica_id: str) -> None:
        self.services = services
        self.jobs = JobStore(services.store)
        self.replica_id = replica_id
        self.id = f"{replica_id}-{os.getpid()}"
        self._current: JobContext | None = None
        self._executing: asyncio.Future[str] | None = None
        self._stopping = False

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start)
        last_housekeeping = 0.0
        while True:
            try:
                if time.monotonic() - last_housekeeping > HOUSEKEEPING_SECONDS:
                    last_housekeeping = time.monotonic()
                    await loop.run_in_executor(None, self._housekeeping)
                if self._stopping:
                    return
                job = await loop.run_in_executor(None, self.jobs.claim, self.id, list(ACTIONS))
                if job is not None and self._stopping:
                    await loop.run_in_executor(None, self.jobs.requeue, job.id, self.id)
                    return
                if job is not None:
                    self._executing = loop.run_in_executor(None, self.execute, job)
                    await self._executing
                    continue  # there may be more waiting
            except asyncio.CancelledError:
                # The process is shutting down: a running job stops at its next step and
                # goes back to waiting, for this replica's next start or another worker.
                if self._current is not None:
                    self._current.shutdown.set()
                raise
            except Exception as e:
                log_failure(log, f"job worker {self.id}: poll failed", e)
            await asyncio.sleep(POLL_SECONDS)

    async def stop(self, timeout: float = 10.0) -> None:
        """Before the process exits: a running job stops at its next step and goes back to
        waiting (within `timeout`; else it is reclaimed once its heartbeat is stale)."""
        self._stopping = True
        if self._current is not None:
            self._current.shutdown.set()
        if self._executing is not None and not self._executing.done():
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._executing), timeout)

    def _start(self) -> None:
        self.jobs.register_worker(self.id, self.replica_id, socket.gethostname(), os.getpid())
        for action, schedule in DEFAULT_CRONS.items():
            self.jobs.set_cron_if_missing(action, schedule, {})

    def _housekeeping(self) -> None:
        self.jobs.beat_worker(self.id)
        for job_id in self.jobs.reclaim(STALE_AFTER):
            log.warning("job %s: its worker stopped heartbeating; reclaimed", job_id)
        self.jobs.schedule_due_crons()
        self.jobs.forget_stale_workers(timedelta(days=1))

    def execute(self, job: Job) -> str:
        """Run a claimed job to its end; returns the state it ended in."""
        ctx = self._current = JobContext(job, self.jobs, self.services)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(job, ctx, stop), daemon=True)
        beat.start()
        ctx.log(f"started on worker {self.id}")
        state, error = DONE, None
        try:
            ACTIONS[job.action].run(ctx)
        except JobCanceled:
            state = CANCELED
            if ctx.shutdown.is_set() and not ctx.canceled.is_set():
                stop.set()
                beat.join()
                self._current = None
                self.jobs.requeue(job.id, self.id)
                return "waiting"
            ctx.log("canceled")
        except Exception as e:
            state, error = ERRORED, f"{type(e).__name__}: {e}"
            log.warning("job %s (%s) failed:\n%s", job.id, job.action, traceback.format_exc())
        finally:
            stop.set()
            beat.join()
            self._current = None
        if state == DONE:
            ctx.log("done")
        return self.jobs.finish(job.id, self.id, state, error)

    def _heartbeat(self, job: Job, ctx: JobContext, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                if not self.jobs.heartbeat(job.id, self.id):
                    ctx.canceled.set()
                # The poll loop (and its worker heartbeat) waits while a job runs: without
                # this a worker busy with a long job would be listed as stale.
                self.jobs.beat_worker(self.id)
            except Exception as e:
                log_failure(log, f"job {job.id}: heartbeat failed", e)
