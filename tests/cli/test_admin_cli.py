"""The operator CLI (`wharf user|org|team|repo|grant|token ...`) against an installation's data
directory, checked through a running server: what the CLI provisions is what the registry
enforces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.access.helpers import API, effective_level, open_client, registry_code, try_push_blob
from tests.api.helpers import push_image
from tests.conftest import WharfServer, free_port, start_server

Result = subprocess.CompletedProcess[str]


@dataclass
class Installation:
    data_dir: Path
    admin_password: str

    def server(self) -> WharfServer:
        server = WharfServer(
            self.data_dir, free_port(), self.admin_password, db_url=DB_URLS[self.data_dir]
        )
        server.start()
        return server


# The metadata store of each installation (PostgreSQL in that test pass), by data dir.
DB_URLS: dict[Path, str] = {}


def _command(data_dir: Path, args: tuple[str, ...], password: str | None):
    env = {k: v for k, v in os.environ.items() if k != "WHARF_USER_PASSWORD"}
    if password is not None:
        env["WHARF_USER_PASSWORD"] = password
    db = ["--db", DB_URLS[data_dir]] if data_dir in DB_URLS else []
    return [sys.executable, "-m", "wharf", *args, "--data-dir", str(data_dir), *db], env


def wharf(data_dir: Path, *args: str, password: str | None = None) -> Result:
    """Run one CLI command on the installation (no terminal: stdin is /dev/null)."""
    return wharf_all(data_dir, (args, password))[0]


def wharf_all(data_dir: Path, *commands: tuple[tuple[str, ...], str | None]) -> list[Result]:
    """Run independent CLI commands at once (each process spends ~1 s importing)."""
    procs = []
    for args, password in commands:
        argv, env = _command(data_dir, args, password)
        procs.append(
            subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def ok(result: Result) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def installation(tmp_path_factory) -> Iterator[Installation]:
    """A data directory prepared by `wharf serve` once, then left with no server running."""
    server = start_server(tmp_path_factory.mktemp("cli"))
    server.stop()
    DB_URLS[server.data_dir] = server.db_url
    yield Installation(server.data_dir, server.admin_password)


def eventually(check, timeout: float = 5.0) -> None:
    """Changes made by another process reach a running server within its poll interval."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the server did not notice the change"
        time.sleep(0.1)


def test_cli_provisioning_is_enforced_by_the_server(installation):
    d = installation.data_dir
    alice, _ = map(
        ok,
        wharf_all(
            d,
            (("user", "create", "alice", "--full-name", "Alice"), "alice-pass-1"),
            (("user", "create", "bob"), "bob-pass-123"),
        ),
    )
    alice = json.loads(alice)
    assert alice["name"] == "alice" and alice["fullName"] == "Alice" and alice["isAdmin"] is False
    org = json.loads(ok(wharf(d, "org", "create", "acme", "--owner", "bob")))
    assert org["name"] == "acme" and org["isOrg"] is True
    team, repo = map(
        ok,
        wharf_all(
            d,
            (("team", "create", "acme", "devs", "--description", "developers"), None),
            (("repo", "create", "acme/app", "--description", "the app"), None),
        ),
    )
    team, repo = json.loads(team), json.loads(repo)
    assert team["name"] == "devs" and team["orgName"] == "acme"
    assert repo["fullName"] == "acme/app" and repo["visibility"] == "private"
    assert repo["shortDescription"] == "the app"
    added, granted, _, created, listed = wharf_all(
        d,
        (("team", "add-member", "acme", "devs", "alice"), None),
        (("grant", "acme/devs", "acme/app", "read-write"), None),
        (("grant", "acme/devs", "acme", "read-only"), None),
        (("token", "create", "alice", "--label", "ci"), None),
        (("user", "list", "--filter", "all"), None),
    )
    assert "alice" in ok(added)
    assert "read-write" in ok(granted)
    secret = ok(created).strip()
    assert secret.startswith("wharf_pat_") and "\n" not in secret
    assert "hashed token" in created.stderr and secret not in created.stderr
    listing = ok(listed).splitlines()
    assert "alice" in listing and "bob" in listing and "acme  (org)" in listing
    assert "admin  (admin)" in listing

    server = installation.server()
    try:
        admin = server.client()
        # Alice logs in with her password and with the token.
        with open_client(server.url, ("alice", "alice-pass-1")) as pw:
            assert pw.get("/v2/").status_code == 200
            me = pw.get(f"{API}/accounts/me").json()
            assert me["name"] == "alice"
            assert me["organizations"] == [{"name": "acme", "isOwner": False}]
        tok = open_client(server.url, ("alice", secret))
        assert tok.get("/v2/").status_code == 200
        assert tok.get(f"{API}/accounts/me").json()["name"] == "alice"
        tokens = tok.get(f"{API}/api_tokens").json()
        assert [(t["tokenLabel"], t["generatedBy"]) for t in tokens] == [("ci", "wharf-cli")]

        # ... and holds what the grants say: read-write on acme/app, read-only elsewhere in acme.
        push_image(tok, "acme/app")
        assert effective_level(admin, "alice", "acme/app") == "read-write"
        site = admin.post(f"{API}/repositories/acme", json={"name": "site"})
        assert site.status_code == 201
        push_image(admin, "acme/site")
        assert effective_level(admin, "alice", "acme/site") == "read-only"
        r = try_push_blob(tok, "acme/site")
        assert r.status_code == 403 and registry_code(r) == "DENIED"
        assert effective_level(admin, "bob", "acme/app") == "admin"
        events = admin.get(f"{API}/audit", params={"actor": "wharf-cli", "limit": 100}).json()
        assert {"user_create", "org_create", "team_create", "grant_set", "token_create"} <= {
            e["action"] for e in events
        }

        # The CLI works on the data directory of a running server; the server notices.
        revoked, deactivated, demoted = wharf_all(
            d,
            (("grant", "acme/devs", "acme/app", "none"), None),
            (("user", "deactivate", "alice"), None),
            (("org", "add-member", "acme", "bob"), None),
        )
        assert "none" in ok(revoked) and "deactivated" in ok(deactivated)
        assert "bob is a member of acme" in ok(demoted)
        eventually(lambda: tok.get("/v2/").status_code == 401)
        assert effective_level(admin, "alice", "acme/app") == "none"  # deactivated
        assert effective_level(admin, "bob", "acme/app") == "none"
        activated, changed = wharf_all(
            d,
            (("user", "activate", "alice"), None),
            (("user", "set-password", "alice"), "alice-pass-2"),
        )
        assert "activated" in ok(activated) and "changed" in ok(changed)
        eventually(lambda: tok.get("/v2/").status_code == 200)
        r = try_push_blob(tok, "acme/app")
        assert r.status_code == 403 and registry_code(r) == "DENIED"
        with open_client(server.url, ("alice", "alice-pass-2")) as pw:
            eventually(lambda: pw.get("/v2/").status_code == 200)
        with open_client(server.url, ("alice", "alice-pass-1")) as old:
            assert old.get("/v2/").status_code == 401
        tok.close()
        admin.close()
    finally:
        server.stop()


def test_password_needs_the_env_or_a_terminal(installation):
    for args in (("user", "create", "nopass"), ("user", "set-password", "admin")):
        r = wharf(installation.data_dir, *args)
        assert r.returncode == 2, (r.stdout, r.stderr)
        assert "WHARF_USER_PASSWORD" in r.stderr
        assert r.stdout == ""


def test_unknown_org_fails_with_a_message(installation):
    commands = (
        ("team", "create", "no-such-org", "devs"),
        ("org", "add-member", "no-such-org", "admin"),
    )
    results = wharf_all(installation.data_dir, *((args, None) for args in commands))
    for args, r in zip(commands, results, strict=True):
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "no-such-org" in r.stderr, (args, r.stderr)
        assert r.stderr.startswith("wharf: "), r.stderr
        assert "Traceback" not in r.stderr


def test_other_failures_and_usage_errors(installation, tmp_path):
    d = installation.data_dir
    empty = tmp_path / "empty"
    expected = [
        # (command, password, exit code, in stderr)
        (("user", "create", "admin"), "admin-pass-1", 1, "ACCOUNT_EXISTS"),
        (("user", "create", "shortpw"), "short", 1, "INVALID_PASSWORD"),
        (("token", "create", "nobody-at-all"), None, 1, "NO_SUCH_USER"),
        (("grant", "acme/devs", "other/app", "read-only"), None, 2, "own organisation"),
        (("grant", "acme-devs", "acme", "read-only"), None, 2, "ORG/TEAM"),
        (("grant", "acme/devs", "acme", "owner"), None, 2, "owner"),
        (("repo", "create", "noslash"), None, 2, "NAMESPACE/NAME"),
    ]
    results = wharf_all(d, *((args, pw) for args, pw, _, _ in expected))
    for (args, _, code, message), r in zip(expected, results, strict=True):
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert r.stdout == "", (args, r.stdout)
        assert "Traceback" not in r.stderr
    # A directory with no installation is an error, and stays empty.
    r = wharf(empty, "user", "list")
    assert r.returncode == 1 and "no installation" in r.stderr
    assert not (empty / "wharf.db").exists()


def test_cli_help_lists_the_admin_commands():
    r = subprocess.run(
        [sys.executable, "-m", "wharf", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    for command in ("user", "org", "team", "repo", "grant", "token", "ldap"):
        assert f"  {command}" in r.stdout, command
