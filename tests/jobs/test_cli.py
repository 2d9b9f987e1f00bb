"""`wharf jobs list|show|logs|run` on the installation of a running server, whose workers run
what the CLI creates."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import API, create_job, get_job, wait_job


def _argv(server, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "wharf",
        "jobs",
        *args,
        "--data-dir",
        str(server.data_dir),
        "--db",
        server.db_url,
    ]


def wharf_jobs(server, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run independent `wharf jobs ...` commands at once (each spends ~1 s importing)."""
    procs = [
        subprocess.Popen(
            _argv(server, *args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_run_wait_exits_with_the_jobs_outcome(jobs_server, admin):
    good, bad, invalid, unknown = wharf_jobs(
        jobs_server,
        ("run", "sleep", "--param", "seconds=1", "--wait"),
        ("run", "sleep", "--parameters", '{"seconds": 0}', "--param", "fail=true", "--wait"),
        ("run", "sleep", "--param", "seconds=soon"),
        ("run", "nosuch"),
    )
    assert good.returncode == 0, (good.stdout, good.stderr)
    lines = good.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "3", "4"]
    assert lines[0].split(None, 2)[2].startswith("started on worker ")
    assert lines[-1].endswith("  done")
    job_id = good.stderr.split()[1]
    assert good.stderr.strip().endswith(f"job {job_id}: done")
    job = get_job(admin, job_id)
    assert job["state"] == "done" and job["createdBy"] == "wharf-cli"
    assert job["parameters"] == {"seconds": 1}

    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "error: RuntimeError: failed on purpose" in bad.stdout
    assert bad.stderr.strip().endswith(": errored")
    failed = get_job(admin, bad.stderr.split()[1])
    assert failed["parameters"] == {"seconds": 0, "fail": True}

    assert invalid.returncode == 2 and "'seconds'" in invalid.stderr
    assert unknown.returncode == 2 and "unknown action 'nosuch'" in unknown.stderr


def test_list_show_and_follow_logs(jobs_server, admin):
    finished = create_job(admin, parameters={"seconds": 0})
    long = create_job(admin, parameters={"seconds": 60})
    (created,) = wharf_jobs(jobs_server, ("run", "sleep", "--param", "seconds=3", "--retries", "1"))
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    assert get_job(admin, job_id)["retriesLeft"] == 1
    wait_job(admin, finished["id"], ("done",))
    wait_job(admin, long["id"], ("running",))
    try:
        follow, logs, show, listed, as_json, running, missing = wharf_jobs(
            jobs_server,
            ("logs", job_id, "--follow"),
            ("logs", finished["id"]),
            ("show", job_id),
            ("list", "--action", "sleep"),
            ("list", "--json", "--limit", "5"),
            ("list", "--running", "--json"),
            ("show", "nosuch"),
        )
    finally:
        admin.post(f"{API}/jobs/{long['id']}/cancel")
    # --follow printed every line until the job ended.
    assert follow.returncode == 0, follow.stderr
    texts = [line.split(None, 2)[2] for line in follow.stdout.splitlines()]
    assert texts[0].startswith("started on worker ")
    assert texts[1:] == ["sleeping 3 s", "awake", "done"]
    assert get_job(admin, job_id)["state"] == "done"
    # Without it, the lines there are: numbered, timed, as the API has them.
    lines = admin.get(f"{API}/jobs/{finished['id']}/logs").json()
    expected = "".join(f"{x['line']:>5}  {x['time']}  {x['data']}\n" for x in lines)
    assert logs.returncode == 0 and logs.stdout == expected

    assert show.returncode == 0
    shown = json.loads(show.stdout)
    assert shown["id"] == job_id and shown["action"] == "sleep"
    assert shown["parameters"] == {"seconds": 3}

    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split()[:3] == ["ID", "ACTION", "STATE"]
    assert job_id in listed.stdout and finished["id"] in listed.stdout
    assert all(line.split()[1] == "sleep" for line in listed.stdout.splitlines()[1:])

    newest = json.loads(as_json.stdout)
    api_newest = admin.get(f"{API}/jobs", params={"pageSize": 5}).json()
    assert [j["id"] for j in newest] == [j["id"] for j in api_newest]
    assert job_id in [j["id"] for j in newest]
    on = json.loads(running.stdout)
    assert long["id"] in [j["id"] for j in on] and finished["id"] not in [j["id"] for j in on]
    assert all(j["state"] == "running" for j in on)

    assert missing.returncode == 1 and "no job 'nosuch'" in missing.stderr
    wait_job(admin, long["id"], ("canceled",))
