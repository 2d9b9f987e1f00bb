"""`wharf jobs`: background jobs (GC, LDAP sync, history clean-up, ...) for operators.

Run against the installation's metadata store like the other operator commands. `run`
only creates the job: the job worker of a running replica claims and runs it.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from wharf.cli.admin import CLI_ACTOR, EXIT_FAILURE, emit, installation_options, services_for

FOLLOW_POLL_SECONDS = 1.0


def _store(svc: Any) -> Any:
    from wharf.jobs.store import JobStore

    return JobStore(svc.store)


def _job_or_exit(jobs: Any, job_id: str) -> Any:
    job = jobs.get(job_id)
    if job is None:
        click.echo(f"wharf: no job {job_id!r}", err=True)
        sys.exit(EXIT_FAILURE)
    return job


def _print_lines(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        click.echo(f"{line['line']:>5}  {line['time']}  {line['data']}")


def follow(jobs: Any, job_id: str, after: int = 0, poll: float = FOLLOW_POLL_SECONDS) -> str:
    """Print a job's log lines after `after` until it has finished; its final state."""
    from wharf.jobs.store import FINISHED

    while True:
        # The state first: once it says finished, the lines read after it are the last.
        state = jobs.get(job_id)
        state = state.state if state is not None else None
        lines = jobs.logs(job_id, after=after)
        _print_lines(lines)
        if lines:
            after = lines[-1]["line"]
            continue  # there may be more than one batch
        if state is None:
            click.echo(f"wharf: job {job_id} was deleted", err=True)
            return "deleted"
        if state in FINISHED:
            return state
        time.sleep(poll)


@click.group()
def jobs() -> None:
    """Background jobs: list them, read their logs, run one."""


@jobs.command("list")
@click.option("--action", help="Only jobs of this action.")
@click.option("--running", is_flag=True, help="Only running jobs.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@installation_options
def jobs_list(action: str | None, running: bool, limit: int, as_json: bool, **where: Any) -> None:
    """Jobs, newest first."""
    with services_for(**where) as svc:
        found = _store(svc).list(action=action, running=True if running else None, limit=limit)
    if as_json:
        emit([j.to_dict() for j in found])
        return
    if not found:
        click.echo("no jobs", err=True)
        return
    click.echo(f"{'ID':36}  {'ACTION':18} {'STATE':9} {'CREATED':20}  {'WORKER'}")
    for job in found:
        d = job.to_dict()
        click.echo(
            f"{d['id']:36}  {d['action']:18} {d['state']:9} {d['createdAt'][:19]:20}"
            f"  {d['workerID'] or '-'}"
        )


@jobs.command("show")
@click.argument("job_id", metavar="ID")
@installation_options
def jobs_show(job_id: str, **where: Any) -> None:
    """One job (JSON)."""
    with services_for(**where) as svc:
        emit(_job_or_exit(_store(svc), job_id).to_dict())


@jobs.command("logs")
@click.argument("job_id", metavar="ID")
@click.option(
    "--follow", "-f", "following", is_flag=True, help="Wait for new lines until the job ends."
)
@installation_options
def jobs_logs(job_id: str, following: bool, **where: Any) -> None:
    """A job's log, line-numbered."""
    with services_for(**where) as svc:
        store = _store(svc)
        _job_or_exit(store, job_id)
        if following:
            follow(store, job_id)
            return
        after = 0
        while True:
            lines = store.logs(job_id, after=after)
            _print_lines(lines)
            if not lines:
                break
            after = lines[-1]["line"]


def _parameters(parameters: str | None, params: tuple[str, ...]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if parameters:
        try:
            result = json.loads(parameters)
        except json.JSONDecodeError as e:
            raise click.UsageError(f"--parameters is not JSON: {e}") from None
        if not isinstance(result, dict):
            raise click.UsageError("--parameters must be a JSON object")
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param {item!r}: give key=value")
        try:  # numbers, true/false, null and quoted strings as JSON; anything else as text
            result[key] = json.loads(value)
        except json.JSONDecodeError:
            result[key] = value
    return result


@jobs.command("run")
@click.argument("action")
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A parameter (repeatable); the value is read as JSON when it is (1, true), else text.",
)
@click.option("--parameters", help="All parameters as a JSON object (--param adds to it).")
@click.option("--retries", default=0, show_default=True, type=click.IntRange(0, 100))
@click.option("--wait", is_flag=True, help="Follow its log; exit 0 if it ends done, else 1.")
@installation_options
def jobs_run(
    action: str,
    params: tuple[str, ...],
    parameters: str | None,
    retries: int,
    wait: bool,
    **where: Any,
) -> None:
    """Create a job of ACTION; a running replica's worker runs it. Prints its id (with
    --wait: its log, then exits 0 if it ended done, 1 if errored or canceled)."""
    from wharf.jobs.runner import ACTIONS, STALE_AFTER, check_parameters

    values = _parameters(parameters, params)
    try:
        check_parameters(action, values)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    with services_for(**where) as svc:
        store = _store(svc)
        job = store.create(action, values, retries=retries, created_by=CLI_ACTOR.username)
        svc.audit.record(
            "job_create", job.id, actor=CLI_ACTOR.username, details={"jobAction": action}
        )
        if not wait:
            click.echo(job.id)
            return
        click.echo(f"job {job.id} ({action}: {ACTIONS[action].description}) created", err=True)
        if not any(w["status"] == "running" for w in store.list_workers(STALE_AFTER)):
            click.echo(
                "warning: no job worker is running; the job waits until a replica runs "
                "(`wharf serve`)",
                err=True,
            )
        state = follow(store, job.id)
    click.echo(f"job {job.id}: {state}", err=True)
    sys.exit(0 if state == "done" else EXIT_FAILURE)


COMMANDS = (jobs,)
