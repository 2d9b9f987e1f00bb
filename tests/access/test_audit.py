"""The audit trail (/api/v0/audit): admins only, security events with actor and target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from .helpers import (
    API,
    api_error,
    create_repo,
    grant_repo,
    open_client,
)


def events(admin, **params):
    r = admin.get(f"{API}/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def find(admin, action, target, **params):
    found = [e for e in events(admin, action=action, **params) if e["target"] == target]
    assert found, (action, target)
    return found[0]


def test_audit_is_for_admins_only(user, anon):
    api_error(user.client.get(f"{API}/audit"), 403, "NOT_AUTHORIZED")
    api_error(anon.get(f"{API}/audit"), 401, "NOT_AUTHENTICATED")


def test_security_events_are_recorded(wharf_server, admin, team_member):
    member = team_member.member
    since = (datetime.now(UTC) - timedelta(seconds=2)).isoformat()
    # login (the member's first request), and a failed one.
    assert member.client.get("/v2/").status_code == 200
    with open_client(wharf_server.url, (member.name, "not-the-password")) as bad:
        assert bad.get(f"{API}/accounts/me").status_code == 401
    created = member.client.post(f"{API}/api_tokens", json={"tokenLabel": "ci"}).json()
    repo = create_repo(admin, team_member.org)
    grant_repo(admin, repo, team_member.team, "read-write")
    assert admin.delete(f"{API}/repositories/{repo}").status_code == 204

    login = find(admin, "login", member.name, actor=member.name)
    assert login["actor"] == member.name and login["success"] is True
    assert login["details"] == {"method": "password"}
    assert login["client"] == "127.0.0.1"
    assert datetime.fromisoformat(login["at"].replace("Z", "+00:00")) >= datetime.fromisoformat(
        since
    )

    failed = find(admin, "login_failed", member.name)
    assert failed["success"] is False and failed["actor"] == member.name

    token = find(admin, "token_create", member.name)
    assert token["actor"] == member.name
    assert token["details"]["hashedToken"] == created["hashedToken"]
    assert token["details"]["tokenLabel"] == "ci"

    grant = [e for e in events(admin, action="grant_set") if e["target"].startswith(f"{repo} ")]
    assert len(grant) == 1
    assert grant[0]["actor"] == "admin"
    assert team_member.team in grant[0]["target"]
    assert grant[0]["details"] == {"accessLevel": "read-write"}

    deleted = find(admin, "repository_delete", repo)
    assert deleted["actor"] == "admin" and deleted["success"] is True

    # Newest first; secrets never appear in the trail.
    everything = events(admin, since=since)
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True)
    text = admin.get(f"{API}/audit", params={"limit": 1000, "since": since}).text
    assert member.password not in text and created["token"] not in text
    assert "not-the-password" not in text


def test_filters_and_paging(admin, make_user):
    alice = make_user()
    for _ in range(3):
        alice.client.post(f"{API}/api_tokens", json={"tokenLabel": "x"})
    only = events(admin, action="token_create", actor=alice.name)
    assert len(only) == 3
    assert {e["action"] for e in only} == {"token_create"}
    assert {e["actor"] for e in only} == {alice.name}
    assert {e["action"] for e in events(admin, action="login_failed", limit=50)} <= {"login_failed"}

    r = admin.get(
        f"{API}/audit", params={"actor": alice.name, "action": "token_create", "limit": 2}
    )
    page = r.json()
    assert len(page) == 2
    cursor = r.headers["x-next-page-start"]
    rest = events(admin, actor=alice.name, action="token_create", before=cursor)
    assert [e["id"] for e in page + rest] == [e["id"] for e in only]

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert events(admin, since=future) == []

    # Times with any UTC offset mean the same instant.
    east, west = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))
    minute_ago_east = (datetime.now(east) - timedelta(minutes=1)).isoformat()
    minute_ago_west = (datetime.now(west) - timedelta(minutes=1)).isoformat()
    soon_west = (datetime.now(west) + timedelta(minutes=1)).isoformat()
    for since in (minute_ago_east, minute_ago_west):
        assert len(events(admin, actor=alice.name, action="token_create", since=since)) == 3
    assert events(admin, actor=alice.name, since=soon_west) == []
    assert events(admin, actor=alice.name, until=minute_ago_east) == []
    api_error(admin.get(f"{API}/audit", params={"limit": 0}), 400, "INVALID_PARAMETERS")
