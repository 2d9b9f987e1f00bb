"""The management API does what its OpenAPI document says: schemathesis generates requests
from the document (valid ones and invalid ones) against a real server and checks every
answer — never a 5xx, only documented statuses and content types, bodies that match their
schemas, invalid input refused, 405s whose Allow lists the documented methods.

A fixed seed and a bounded number of examples per operation keep the run reproducible and
within a minute or so. The run mutates the server (settings, accounts, jobs), so it has a
server of its own. Both metadata stores: PostgreSQL refuses some input SQLite takes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.api.helpers import push_image
from tests.conftest import start_server

from .helpers import API, api_error, grant_namespace, grant_repo, unique

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "use_after_free",
]
# Not checked: positive_data_acceptance. The document cannot say everything the server
# refuses on purpose (your own account cannot be deleted; a cron expression must be valid;
# LDAP must be configured before it is checked), and each such refusal is a documented 400.


@pytest.mark.timeout(300)
def test_the_api_conforms_to_its_openapi_document(tmp_path: Path):
    server = start_server(tmp_path)
    try:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.url}{API}/openapi.json",
            "--auth",
            f"{server.admin_user}:{server.admin_password}",
            "--phases",
            "examples,coverage,fuzzing",
            "--mode",
            "all",
            "--max-examples",
            "25",
            "--seed",
            "20261206",
            "--workers",
            "2",
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--checks",
            ",".join(CHECKS),
            "--no-color",
            "--output-truncate",
            "true",
        ]
        run = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False
        )
    finally:
        server.stop()
    report = run.stdout + run.stderr
    failures = report.find("= FAILURES =")
    assert run.returncode == 0, report[failures:][:30_000] if failures >= 0 else report[-5_000:]
    assert " passed" in report, report[-5_000:]


# -- what the run found, pinned down ----------------------------------------------------------


def test_numbers_past_the_stores_integers_are_refused(admin):
    """PostgreSQL's integer columns refuse 2**31: that was a 500."""
    r = admin.get(f"{API}/audit", params={"before": 2**31})
    api_error(r, 400, "INVALID_PARAMETERS")
    assert admin.get(f"{API}/audit", params={"before": 2**31 - 1}).status_code == 200
    job = admin.post(f"{API}/jobs", json={"action": "sleep", "parameters": {"seconds": 0}})
    assert job.status_code == 202, job.text
    r = admin.get(f"{API}/jobs/{job.json()['id']}/logs", params={"after": 2**31})
    api_error(r, 400, "INVALID_PARAMETERS")


def test_an_empty_scheduled_at_is_not_now(admin):
    r = admin.post(f"{API}/jobs", json={"action": "sleep", "scheduledAt": ""})
    api_error(r, 400, "INVALID_PARAMETERS")
    r = admin.post(f"{API}/jobs", json={"action": "sleep", "scheduledAt": None})
    assert r.status_code == 202, r.text


def test_times_in_queries_are_iso_8601_only(admin):
    for params in ({"since": "1700000000"}, {"until": "12"}):
        api_error(admin.get(f"{API}/audit", params=params), 400, "INVALID_PARAMETERS")
    r = admin.request("DELETE", f"{API}/api_tokens", params={"usedbefore": "1700000000"})
    api_error(r, 400, "INVALID_PARAMETERS")
    r = admin.get(f"{API}/audit", params={"since": "2030-01-31T03:00:00Z", "until": "2031-01-01"})
    assert r.status_code == 200, r.text


def test_fields_documented_not_null_refuse_null(admin, user):
    """A PATCH field that may be left out is not nullable: null was accepted by the model
    and refused (or not) further in."""
    for body in ({"fullName": None}, {"isActive": None}, {"password": None}):
        r = admin.patch(f"{API}/accounts/{user.name}", json=body)
        api_error(r, 400, "INVALID_PARAMETERS")
    r = admin.post(f"{API}/meta/settings", json={"anonymousPull": None})
    api_error(r, 400, "INVALID_PARAMETERS")
    # Where null means something (no LDAP group), it is still taken.
    doc = admin.get(f"{API}/openapi.json").json()
    team = doc["components"]["schemas"]["TeamChanges"]["properties"]
    assert {"type": "null"} in team["ldapGroupDN"]["anyOf"]
    assert "anyOf" not in team["name"] and team["name"]["minLength"] == 1


def test_answers_match_their_documented_schemas(wharf_server, admin, team_member):
    """What the fuzzing above rarely reaches: every kind of resource, as it really is (a
    repository with a tag, grants, a token, a job with a log, a schedule), checked against
    the schema its operation documents."""
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{wharf_server.url}{API}/openapi.json")
    org, team, member = team_member.org, team_member.team, team_member.member
    repo = f"{org}/{unique('r')}"
    push_image(admin, repo)
    grant_repo(admin, repo, team, "read-write")
    grant_namespace(admin, org, team, "read-only")
    tag = admin.get(f"{API}/repositories/{repo}/tags").json()[0]["name"]
    token = admin.post(f"{API}/api_tokens", json={"tokenLabel": "docs"})
    job = admin.post(f"{API}/jobs", json={"action": "sleep", "parameters": {"seconds": 0}})
    cron = admin.post(f"{API}/crons", json={"action": "sleep", "schedule": "0 3 * * *"})
    hashed, job_id = token.json()["hashedToken"], job.json()["id"]
    calls: list[tuple[str, str, dict, object]] = [
        ("POST", "/api_tokens", {}, token),
        ("POST", "/jobs", {}, job),
        ("POST", "/crons", {}, cron),
    ]
    for path in (
        "/accounts",
        "/accounts/me",
        f"/accounts/{member.name}",
        f"/accounts/{org}/members",
        f"/accounts/{org}/members/{member.name}",
        f"/accounts/{org}/teams",
        f"/accounts/{org}/teams/{team}",
        f"/accounts/{org}/teams/{team}/members",
        f"/accounts/{org}/teams/{team}/repositoryAccess",
        f"/accounts/{member.name}/repositoryAccess/{repo}",
        "/repositories",
        f"/repositories/{org}",
        f"/repositories/{repo}",
        f"/repositories/{repo}/tags",
        f"/repositories/{repo}/tags/{tag}",
        f"/repositories/{repo}/teamAccess",
        f"/repositoryNamespaces/{org}/teamAccess",
        f"/repositoryNamespaces/{org}/teamAccess/{team}",
        "/api_tokens",
        f"/api_tokens/{hashed}",
        "/meta/settings",
        "/meta/settings/ldap",
        "/meta/cluster_status",
        "/audit",
        "/jobs",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/logs",
        "/crons",
        "/crons/sleep",
        "/workers",
    ):
        calls.append(("GET", path, {}, None))
    calls += [
        ("PATCH", f"/accounts/{member.name}", {"fullName": "Member"}, None),
        ("PATCH", f"/accounts/{org}/teams/{team}", {"description": "d"}, None),
        ("PATCH", f"/repositories/{repo}", {"shortDescription": "s"}, None),
        ("PATCH", f"/api_tokens/{hashed}", {"tokenLabel": "relabelled"}, None),
        ("POST", "/meta/settings", {"tokenLifetimeSeconds": 300}, None),
        ("POST", f"/jobs/{job_id}/cancel", {}, None),
    ]
    for method, path, body, response in calls:
        if response is None:
            response = admin.request(method, f"{API}{path}", json=body if body else None)
        assert response.status_code < 300 or path.endswith("/cancel"), (path, response.text)
        template = next(
            t for t in schema.raw_schema["paths"] if _matches(t, f"{API}{path}")
        )  # the most specific path: literal ones are listed first where they overlap
        schema[template][method].validate_response(response)


def _matches(template: str, path: str) -> bool:
    import re

    return re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path) is not None
