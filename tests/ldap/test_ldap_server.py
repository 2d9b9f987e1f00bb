"""LDAP through a running Wharf: configuration, logins that bind against the directory,
and the sync of users and team memberships (a real slapd, a real server)."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest

from tests.conftest import start_server

API = "/api/v0"


@pytest.fixture
def server(tmp_path):
    server = start_server(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def admin(server):
    with server.client() as c:
        yield c


def configure(admin: httpx.Client, slapd, **extra) -> dict:
    config = {
        "url": slapd.url,
        "bindDN": slapd.service_dn,
        "bindPassword": slapd.service_password,
        "userSearchBase": slapd.people_base,
        "timeout": 5,
        **extra,
    }
    r = admin.put(f"{API}/meta/settings/ldap", json={"enabled": True, "config": config})
    assert r.status_code == 200, r.text
    return r.json()


def login_status(server, username: str, password: str) -> int:
    with httpx.Client(base_url=server.url, auth=(username, password), timeout=30) as c:
        return c.get("/v2/").status_code


def test_configuration_hides_the_bind_password(server, admin, slapd):
    shown = configure(admin, slapd)
    assert shown["enabled"] is True
    assert shown["config"]["bindPasswordSet"] is True
    assert "bindPassword" not in shown["config"]
    assert slapd.service_password not in admin.get(f"{API}/meta/settings/ldap").text
    assert admin.post(f"{API}/meta/settings/ldap/check").json() == {"ok": True}
    # A PUT without the password keeps the stored one.
    r = admin.put(
        f"{API}/meta/settings/ldap",
        json={
            "enabled": True,
            "config": {
                "url": slapd.url,
                "bindDN": slapd.service_dn,
                "userSearchBase": slapd.people_base,
                "timeout": 5,
            },
        },
    )
    assert r.status_code == 200, r.text
    assert admin.post(f"{API}/meta/settings/ldap/check").status_code == 200
    # Bad input is refused with the API's error format; the stored configuration stays.
    r = admin.put(f"{API}/meta/settings/ldap", json={"config": {"url": "http://x"}})
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "INVALID_SETTINGS"
    assert admin.post(f"{API}/meta/settings/ldap/check").status_code == 200
    # Only admins.
    assert server.client(auth=False).get(f"{API}/meta/settings/ldap").status_code == 401


def test_wrong_service_password_is_reported_without_the_password(server, admin, slapd):
    wrong = "not-the-" + secrets.token_hex(4)
    configure(admin, slapd, bindPassword=wrong)
    r = admin.post(f"{API}/meta/settings/ldap/check")
    assert r.status_code == 502
    assert r.json()["errors"][0]["code"] == "LDAP_UNAVAILABLE"
    assert wrong not in r.text
    assert wrong not in server.log_path.read_text(errors="replace")


def test_directory_users_log_in_and_are_provisioned(server, admin, slapd):
    configure(admin, slapd)
    assert login_status(server, "alice", "alice-pw") == 200
    account = admin.get(f"{API}/accounts/alice").json()
    assert account["source"] == "ldap"
    assert account["fullName"] == "Alice Liddell"
    assert login_status(server, "alice", "wrong") == 401
    assert login_status(server, "alice", "") == 401
    assert login_status(server, "nobody-here", "x") == 401
    # The directory's password is the one that counts: a new one works at once. (An old
    # one verified in the last minute stays in the process's credential cache until it
    # expires: Wharf cannot know the directory changed; docs/access-control.md.)
    slapd.set_password("alice", "alice-pw2")
    try:
        assert login_status(server, "alice", "alice-pw2") == 200
        with httpx.Client(base_url=server.url, timeout=30) as c:
            r = c.get("/auth/token", params={"service": "wharf"}, auth=("alice", "alice-pw"))
            assert r.status_code == 401  # the token endpoint always checks afresh
    finally:
        slapd.set_password("alice", "alice-pw")
    # A directory user may push into their own namespace and use the token endpoint.
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.get(
            "/auth/token",
            params={"service": "wharf", "scope": "repository:alice/app:pull,push"},
            auth=("alice", "alice-pw"),
        )
        assert r.status_code == 200
        assert r.json()["scope"] == "repository:alice/app:pull,push"


def test_a_directory_entry_cannot_take_over_a_local_account(server, admin, slapd):
    configure(admin, slapd)
    slapd.add_user("admin", "directory-pw", "Impostor Admin")
    try:
        assert login_status(server, "admin", "directory-pw") == 401
        assert login_status(server, *server.auth) == 200
        assert admin.get(f"{API}/accounts/admin").json()["source"] == "local"
    finally:
        slapd.delete_user("admin")


def test_sync_creates_users_fills_teams_and_deactivates_leavers(server, admin, slapd):
    configure(admin, slapd)
    assert admin.post(f"{API}/accounts", json={"name": "acme", "isOrg": True}).status_code == 201
    r = admin.post(
        f"{API}/accounts/acme/teams",
        json={"name": "devs", "ldapGroupDN": f"cn=developers,{slapd.groups_base}"},
    )
    assert r.status_code == 201, r.text
    assert admin.post(f"{API}/repositories/acme", json={"name": "web"}).status_code == 201
    r = admin.put(
        f"{API}/repositories/acme/web/teamAccess/devs", json={"accessLevel": "read-write"}
    )
    assert r.status_code == 200

    report = admin.post(f"{API}/meta/settings/ldap/sync").json()
    assert report["usersCreated"] >= 3
    assert report["teamsSynced"] == 1
    members = {m["name"] for m in admin.get(f"{API}/accounts/acme/teams/devs/members").json()}
    assert members == {"alice", "bob"}

    # bob never logged in, and may push to acme/web thanks to the synced team.
    with httpx.Client(base_url=server.url, auth=("bob", "bob-pw"), timeout=30) as bob:
        r = bob.post("/v2/acme/web/blobs/uploads/")
        assert r.status_code == 202, r.text
    with httpx.Client(base_url=server.url, auth=("carol", "carol-pw"), timeout=30) as carol:
        assert carol.post("/v2/acme/web/blobs/uploads/").status_code == 403

    # Membership follows the directory: carol joins, bob leaves.
    slapd.add_to_group("developers", "carol")
    slapd.remove_from_group("developers", "bob")
    dave = f"dave{secrets.token_hex(3)}"
    slapd.add_user(dave, "dave-pw", "Dave Leaver")
    try:
        report = admin.post(f"{API}/meta/settings/ldap/sync").json()
        assert report["membersAdded"] == 1
        assert report["membersRemoved"] == 1
        members = {m["name"] for m in admin.get(f"{API}/accounts/acme/teams/devs/members").json()}
        assert members == {"alice", "carol"}
        with httpx.Client(base_url=server.url, auth=("bob", "bob-pw"), timeout=30) as bob:
            deadline = time.monotonic() + 5
            while bob.post("/v2/acme/web/blobs/uploads/").status_code != 403:
                assert time.monotonic() < deadline, "bob kept his access"
                time.sleep(0.2)
        assert login_status(server, dave, "dave-pw") == 200
    finally:
        slapd.remove_from_group("developers", "carol")
        slapd.add_to_group("developers", "bob")
    # A user removed from the directory is deactivated by the next sync.
    slapd.delete_user(dave)
    report = admin.post(f"{API}/meta/settings/ldap/sync").json()
    assert report["usersDeactivated"] == 1
    assert admin.get(f"{API}/accounts/{dave}").json()["isActive"] is False
    assert login_status(server, dave, "dave-pw") == 401

    events = admin.get(f"{API}/audit", params={"action": "ldap_sync"}).json()
    assert len(events) == 3
    assert all(e["success"] for e in events)


def test_directory_names_become_lower_case_account_names_or_are_refused(server, admin, slapd):
    """The directory is input like any other: its names are matched case-insensitively, so a
    mixed-case one (Active Directory's habit) is the account of that name in lower case; one
    that is still not a valid account name is never stored."""
    configure(admin, slapd)
    suffix = secrets.token_hex(3)
    upper, spaced = f"Eve{suffix}", f"eve {suffix}"
    slapd.add_user(upper, "eve-pw", "Eve Upper")
    slapd.add_user(spaced, "spaced-pw", "Eve Spaced")
    try:
        assert login_status(server, upper, "eve-pw") == 200
        assert login_status(server, upper.lower(), "eve-pw") == 200
        assert login_status(server, spaced, "spaced-pw") == 401
        report = admin.post(f"{API}/meta/settings/ldap/sync").json()
        assert report["usersSkipped"] >= 1, report
        names = {a["name"] for a in admin.get(f"{API}/accounts", params={"pageSize": 1000}).json()}
        assert upper.lower() in names
        assert upper not in names and spaced not in names
    finally:
        slapd.delete_user(upper)
        slapd.delete_user(spaced)
