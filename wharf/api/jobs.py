"""/api/v0/jobs, /api/v0/crons and /api/v0/workers: background jobs (system admins only).

Every replica's serving processes run a job worker (`wharf.jobs.runner`); these handlers
only read and write the jobs, logs and crons in the metadata store. No action is scoped to
a repository yet, so everything here is for system administrators.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from wharf.api import models as m
from wharf.api import schemas as S
from wharf.api.deps import MAX_INT, ApiError, Page, client, identity, page, paged, services
from wharf.auth.identity import Identity
from wharf.jobs import runner
from wharf.jobs.store import FINISHED, RUNNING, JobStore, next_run
from wharf.management.accounts import require_admin

router = APIRouter(prefix="/api/v0", tags=["jobs"])
Actor = Depends(identity)
MAX_RETRIES = 100


# Documented as an enum; checked by the runner (400 naming the known ones).
_ACTION = {"enum": sorted(runner.ACTIONS)}


class NewJob(m.Body):
    action: str = Field(
        max_length=64, description="One of the actions the workers know", json_schema_extra=_ACTION
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(0, ge=0, le=MAX_RETRIES, description="Runs after a failed one")
    scheduledAt: str | None = Field(
        None,
        max_length=64,
        description="ISO 8601 time to start at, not before (default now)",
        json_schema_extra={"format": "date-time"},
    )


class NewCron(m.Body):
    action: str = Field(max_length=64, json_schema_extra=_ACTION)
    schedule: str = Field(
        min_length=1, max_length=128, description="Five-field cron expression, in UTC"
    )
    parameters: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(0, ge=0, le=MAX_RETRIES)


def _admin_jobs(request: Request, actor: Identity) -> JobStore:
    require_admin(actor)
    return JobStore(services(request).store)


def _audit(request: Request, actor: Identity, action: str, target: str, **details: Any) -> None:
    services(request).audit.record(
        action, target, actor=actor.username, client=client(request), details=details or None
    )


def _check(action: str, parameters: dict[str, Any]) -> None:
    try:
        runner.check_parameters(action, parameters)
    except ValueError as e:
        raise ApiError(400, "INVALID_PARAMETERS", str(e)) from None


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 time, in UTC (a time without an offset is taken as UTC)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            400, "INVALID_PARAMETERS", f"{name} must be an ISO 8601 time, like 2030-01-31T03:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last UTC time
        raise ApiError(400, "INVALID_PARAMETERS", f"{name} is out of range in UTC") from None


def _job(jobs: JobStore, job_id: str) -> dict[str, Any]:
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, "NO_SUCH_JOB", f"no job {job_id!r}")
    return job.to_dict()


# -- jobs -----------------------------------------------------------------------------------


@router.get(
    "/jobs",
    summary="Jobs, newest first",
    response_model=None,
    responses=S.answers(list[S.Job], 403),
)
def list_jobs(
    request: Request,
    action: str | None = Query(None, max_length=64),
    worker: str | None = Query(None, max_length=64, description="Only jobs of this worker"),
    running: bool | None = Query(None, description="true: running only; false: all others"),
    p: Page = Depends(page),
    actor: Identity = Actor,
) -> JSONResponse:
    jobs = _admin_jobs(request, actor)
    try:
        found = jobs.list(
            action=action, worker=worker, running=running, start=p.start, limit=p.size + 1
        )
    except KeyError:
        raise ApiError(400, "INVALID_PARAMETERS", f"pageStart: no job {p.start!r}") from None
    return paged([j.to_dict() for j in found], p, "id")


@router.post(
    "/jobs",
    status_code=202,
    summary="Create a job; a worker runs it when it is due",
    response_model=None,
    responses=S.answers(S.Job, 403, status=202),
)
def create_job(request: Request, body: NewJob, actor: Identity = Actor) -> dict:
    jobs = _admin_jobs(request, actor)
    _check(body.action, body.parameters)
    at = parse_time(body.scheduledAt, "scheduledAt") if body.scheduledAt is not None else None
    job = jobs.create(
        body.action,
        body.parameters,
        retries=body.retries,
        scheduled_at=at,
        created_by=actor.username,
    )
    _audit(request, actor, "job_create", job.id, jobAction=job.action)
    return job.to_dict()


@router.get(
    "/jobs/{job_id}", summary="One job", response_model=None, responses=S.answers(S.Job, 403)
)
def get_job(request: Request, job_id: str, actor: Identity = Actor) -> dict:
    return _job(_admin_jobs(request, actor), job_id)


@router.get(
    "/jobs/{job_id}/logs",
    summary="A job's log lines, numbered from 1; `after` gives those after a line (to follow)",
    response_model=None,
    responses=S.answers(list[S.JobLogLine], 403),
)
def job_logs(
    request: Request,
    job_id: str,
    after: int = Query(0, ge=0, le=MAX_INT, description="Only lines numbered above this"),
    limit: int = Query(1000, ge=1, le=10_000, description="Lines at most"),
    actor: Identity = Actor,
) -> JSONResponse:
    jobs = _admin_jobs(request, actor)
    # The state is read before the lines: when it says finished, the lines hold the end.
    state = _job(jobs, job_id)["state"]
    lines = jobs.logs(job_id, after=after, limit=limit)
    return JSONResponse(lines, headers={"X-Job-State": state})


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    summary="Cancel a job: a waiting one at once, a running one at its next heartbeat",
    response_model=None,
    responses=S.answers(S.Job, 403, 409, status=202),
)
def cancel_job(request: Request, job_id: str, actor: Identity = Actor) -> dict:
    jobs = _admin_jobs(request, actor)
    before = _job(jobs, job_id)
    if before["state"] in FINISHED:
        raise ApiError(409, "JOB_FINISHED", f"job {job_id} already ended ({before['state']})")
    job = jobs.cancel(job_id)
    if job is None:  # deleted meanwhile
        raise ApiError(404, "NO_SUCH_JOB", f"no job {job_id!r}")
    _audit(request, actor, "job_cancel", job_id, jobAction=job.action)
    return job.to_dict()


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a job and its logs (refused while it runs: cancel it first)",
    response_model=None,
    responses=S.answers(None, 403, 409),
)
def delete_job(request: Request, job_id: str, actor: Identity = Actor) -> Response:
    jobs = _admin_jobs(request, actor)
    if not jobs.delete(job_id):
        state = _job(jobs, job_id)["state"]  # 404 when there is no such job
        # It may have ended between the two reads: then it can go now.
        if state == RUNNING or not jobs.delete(job_id):
            raise ApiError(409, "JOB_RUNNING", f"job {job_id} is running; cancel it first")
    _audit(request, actor, "job_delete", job_id)
    return Response(status_code=204)


# -- crons ----------------------------------------------------------------------------------


@router.get(
    "/crons",
    summary="Schedules (one per action), in UTC",
    response_model=None,
    responses=S.answers(list[S.Cron], 403),
)
def list_crons(request: Request, actor: Identity = Actor) -> list[dict]:
    return [c.to_dict() for c in _admin_jobs(request, actor).list_crons()]


@router.post(
    "/crons",
    summary="Create or replace the schedule of an action (201 created, 200 replaced)",
    response_model=None,
    responses={**S.answers(S.Cron, 403), 201: {"model": S.Cron, "description": "Created"}},
)
def set_cron(request: Request, body: NewCron, actor: Identity = Actor) -> JSONResponse:
    jobs = _admin_jobs(request, actor)
    _check(body.action, body.parameters)
    try:
        next_run(body.schedule, datetime.now(UTC))
    except ValueError as e:
        raise ApiError(400, "INVALID_PARAMETERS", f"schedule: {e}") from None
    existed = jobs.get_cron(body.action) is not None
    cron = jobs.set_cron(body.action, body.schedule, body.parameters, body.retries)
    _audit(request, actor, "cron_set", body.action, schedule=body.schedule)
    return JSONResponse(cron.to_dict(), status_code=200 if existed else 201)


@router.get(
    "/crons/{action}",
    summary="The schedule of an action",
    response_model=None,
    responses=S.answers(S.Cron, 403),
)
def get_cron(request: Request, action: str, actor: Identity = Actor) -> dict:
    cron = _admin_jobs(request, actor).get_cron(action)
    if cron is None:
        raise ApiError(404, "NO_SUCH_CRON", f"no schedule for action {action!r}")
    return cron.to_dict()


@router.delete(
    "/crons/{action}",
    status_code=204,
    summary="Delete the schedule of an action",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_cron(request: Request, action: str, actor: Identity = Actor) -> Response:
    if not _admin_jobs(request, actor).delete_cron(action):
        raise ApiError(404, "NO_SUCH_CRON", f"no schedule for action {action!r}")
    _audit(request, actor, "cron_delete", action)
    return Response(status_code=204)


# -- workers --------------------------------------------------------------------------------


@router.get(
    "/workers",
    summary="Job workers (one per serving process of every replica)",
    response_model=None,
    responses=S.answers(list[S.Worker], 403),
)
def list_workers(request: Request, actor: Identity = Actor) -> list[dict]:
    return _admin_jobs(request, actor).list_workers(runner.STALE_AFTER)
