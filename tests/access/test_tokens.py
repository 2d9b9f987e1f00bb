"""Personal access tokens: created with a secret shown once, listed, relabelled, deactivated
and deleted; accepted in place of the password wherever Basic credentials are."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.api.helpers import push_image

from .helpers import API, access_of, api_error, claims, open_client, token_get

FIELDS = {
    "hashedToken",
    "tokenLabel",
    "username",
    "isActive",
    "createdAt",
    "lastUsed",
    "generatedBy",
    "creatorUa",
}


def new_token(client, label="ci", **params):
    r = client.post(f"{API}/api_tokens", json={"tokenLabel": label}, params=params)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == FIELDS | {"token"}
    return body


def listed(client, **params):
    r = client.get(f"{API}/api_tokens", params={"pageSize": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()


def test_secret_is_shown_once(user):
    created = new_token(user.client, "laptop")
    secret = created["token"]
    assert secret.startswith("wharf_pat_") and len(secret) > 40
    assert created["tokenLabel"] == "laptop" and created["username"] == user.name
    assert created["isActive"] is True and created["lastUsed"] is None
    assert created["generatedBy"] == user.name
    hashed = created["hashedToken"]
    assert secret not in hashed

    tokens = listed(user.client)
    assert [t["hashedToken"] for t in tokens] == [hashed]
    assert all(set(t) == FIELDS for t in tokens)
    got = user.client.get(f"{API}/api_tokens/{hashed}")
    assert got.status_code == 200 and set(got.json()) == FIELDS
    assert secret not in got.text and secret not in user.client.get(f"{API}/api_tokens").text


def test_token_replaces_the_password_everywhere(wharf_server, user, anon):
    secret = new_token(user.client)["token"]
    push_image(user.client, f"{user.name}/app")
    c = user.with_secret(secret)
    assert c.get("/v2/").status_code == 200
    assert c.get(f"/v2/{user.name}/app/tags/list").json()["tags"] == ["latest"]
    push_image(c, f"{user.name}/app", "by-token")
    me = c.get(f"{API}/accounts/me")
    assert me.status_code == 200 and me.json()["name"] == user.name

    r = token_get(anon, [f"repository:{user.name}/app:pull,push"], auth=(user.name, secret))
    assert r.status_code == 200, r.text
    assert claims(r.json()["token"])["sub"] == user.name
    assert access_of(r.json()["token"])[("repository", f"{user.name}/app")] == ["pull", "push"]

    r = anon.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": user.name,
            "password": secret,
            "service": "wharf",
            "scope": f"repository:{user.name}/app:pull",
        },
    )
    assert r.status_code == 200, r.text
    assert access_of(r.json()["access_token"])[("repository", f"{user.name}/app")] == ["pull"]

    # A token only works with its owner's name.
    with open_client(wharf_server.url, ("admin", secret)) as wrong:
        assert wrong.get("/v2/").status_code == 401
        api_error(wrong.get(f"{API}/accounts/me"), 401, "NOT_AUTHENTICATED")


def test_tokens_are_listed_to_their_owner_only(admin, make_user):
    alice, bob = make_user(), make_user()
    a = new_token(alice.client, "a")["hashedToken"]
    b = new_token(bob.client, "b")["hashedToken"]
    assert [t["hashedToken"] for t in listed(alice.client)] == [a]
    assert [t["hashedToken"] for t in listed(bob.client)] == [b]
    api_error(
        alice.client.get(f"{API}/api_tokens", params={"username": bob.name}), 403, "NOT_AUTHORIZED"
    )
    # Another user's token answers exactly like a missing one.
    for r in (
        alice.client.get(f"{API}/api_tokens/{b}"),
        alice.client.patch(f"{API}/api_tokens/{b}", json={"isActive": False}),
        alice.client.delete(f"{API}/api_tokens/{b}"),
        alice.client.get(f"{API}/api_tokens/{'0' * 64}"),
    ):
        api_error(r, 404, "NO_SUCH_API_TOKEN")
    assert bob.client.get(f"{API}/api_tokens/{b}").json()["isActive"] is True

    assert [t["hashedToken"] for t in listed(admin, username=bob.name)] == [b]
    every = {t["hashedToken"] for t in listed(admin)}
    assert {a, b} <= every
    assert admin.get(f"{API}/api_tokens/{a}").json()["username"] == alice.name


def test_admin_creates_a_token_for_another_user(admin, user, make_user):
    created = new_token(admin, "robot", username=user.name)
    assert created["username"] == user.name and created["generatedBy"] == "admin"
    assert [t["hashedToken"] for t in listed(user.client)] == [created["hashedToken"]]
    assert user.with_secret(created["token"]).get("/v2/").status_code == 200

    other = make_user()
    r = other.client.post(
        f"{API}/api_tokens", json={"tokenLabel": "x"}, params={"username": user.name}
    )
    api_error(r, 403, "NOT_AUTHORIZED")
    assert len(listed(user.client)) == 1
    api_error(
        admin.post(f"{API}/api_tokens", json={}, params={"username": "nobody-here-1"}),
        404,
        "NO_SUCH_USER",
    )


def test_relabel_deactivate_reactivate_delete(user):
    created = new_token(user.client, "old")
    hashed, secret = created["hashedToken"], created["token"]
    c = user.with_secret(secret)
    # Warm the server's cache of these credentials: deactivation must not wait for it.
    assert c.get("/v2/").status_code == 200
    assert c.get(f"{API}/accounts/me").status_code == 200

    r = user.client.patch(f"{API}/api_tokens/{hashed}", json={"tokenLabel": "new"})
    assert r.status_code == 200 and r.json()["tokenLabel"] == "new"
    assert r.json()["isActive"] is True

    r = user.client.patch(f"{API}/api_tokens/{hashed}", json={"isActive": False})
    assert r.status_code == 200 and r.json()["isActive"] is False
    assert c.get("/v2/").status_code == 401
    api_error(c.get(f"{API}/accounts/me"), 401, "NOT_AUTHENTICATED")
    assert token_get(c, ["registry:catalog:*"]).status_code == 401
    # The password still works.
    assert user.client.get("/v2/").status_code == 200

    assert (
        user.client.patch(f"{API}/api_tokens/{hashed}", json={"isActive": True}).status_code == 200
    )
    assert c.get("/v2/").status_code == 200

    api_error(
        user.client.patch(f"{API}/api_tokens/{hashed}", json={"username": "x"}),
        400,
        "INVALID_PARAMETERS",
    )
    for bad in ({"isActive": "no"}, {"isActive": None}, {"tokenLabel": None}):
        r = user.client.patch(f"{API}/api_tokens/{hashed}", json=bad)
        api_error(r, 400, "INVALID_PARAMETERS")
    assert user.client.get(f"{API}/api_tokens/{hashed}").json()["isActive"] is True

    assert user.client.delete(f"{API}/api_tokens/{hashed}").status_code == 204
    assert c.get("/v2/").status_code == 401
    api_error(c.get(f"{API}/accounts/me"), 401, "NOT_AUTHENTICATED")
    api_error(user.client.get(f"{API}/api_tokens/{hashed}"), 404, "NO_SUCH_API_TOKEN")
    assert listed(user.client) == []


def test_last_used_is_recorded(user):
    created = new_token(user.client)
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert user.with_secret(created["token"]).get("/v2/").status_code == 200
    got = user.client.get(f"{API}/api_tokens/{created['hashedToken']}").json()
    assert got["lastUsed"] is not None
    used = datetime.fromisoformat(got["lastUsed"].replace("Z", "+00:00"))
    assert before <= used <= datetime.now(UTC) + timedelta(seconds=5)


def test_deactivated_or_deleted_owner_disables_tokens(admin, make_user):
    owner = make_user()
    secret = new_token(owner.client)["token"]
    c = owner.with_secret(secret)
    assert c.get("/v2/").status_code == 200
    assert admin.patch(f"{API}/accounts/{owner.name}", json={"isActive": False}).status_code == 200
    assert c.get("/v2/").status_code == 401
    api_error(c.get(f"{API}/accounts/me"), 401, "NOT_AUTHENTICATED")
    assert admin.patch(f"{API}/accounts/{owner.name}", json={"isActive": True}).status_code == 200
    assert c.get("/v2/").status_code == 200
    assert admin.delete(f"{API}/accounts/{owner.name}").status_code == 204
    assert c.get("/v2/").status_code == 401
    # A new account of the same name does not inherit the old tokens.
    assert (
        admin.post(f"{API}/accounts", json={"name": owner.name, "password": "longenough"})
    ).status_code == 201
    assert c.get("/v2/").status_code == 401


def test_bulk_delete(admin, make_user):
    alice, bob = make_user(), make_user()
    mine = [new_token(alice.client, f"t{i}") for i in range(3)]
    theirs = new_token(bob.client)
    r = alice.client.delete(f"{API}/api_tokens")
    assert r.status_code == 200 and r.json() == {"deleted": 3}
    assert listed(alice.client) == []
    for t in mine:
        assert alice.with_secret(t["token"]).get("/v2/").status_code == 401
    # Nobody else's tokens were touched, and a user cannot bulk-delete another's.
    assert [t["hashedToken"] for t in listed(bob.client)] == [theirs["hashedToken"]]
    api_error(
        alice.client.delete(f"{API}/api_tokens", params={"username": bob.name}),
        403,
        "NOT_AUTHORIZED",
    )
    assert len(listed(bob.client)) == 1
    r = admin.delete(f"{API}/api_tokens", params={"username": bob.name})
    assert r.json() == {"deleted": 1}
    assert listed(bob.client) == []


def test_admin_bulk_delete_without_username_deletes_only_its_own(admin, user):
    theirs = new_token(user.client)
    own = new_token(admin, "admin-own")
    r = admin.delete(f"{API}/api_tokens")
    assert r.status_code == 200
    assert r.json()["deleted"] >= 1
    assert own["hashedToken"] not in {t["hashedToken"] for t in listed(admin)}
    assert [t["hashedToken"] for t in listed(user.client)] == [theirs["hashedToken"]]
    assert user.with_secret(theirs["token"]).get("/v2/").status_code == 200


def test_bulk_delete_of_tokens_unused_since(user):
    stale = new_token(user.client, "stale")
    fresh = new_token(user.client, "fresh")
    long_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    r = user.client.delete(f"{API}/api_tokens", params={"usedbefore": long_ago})
    assert r.status_code == 200 and r.json() == {"deleted": 0}
    time.sleep(0.05)
    cutoff = datetime.now(UTC)
    time.sleep(0.05)
    assert user.with_secret(fresh["token"]).get("/v2/").status_code == 200
    # `stale` was never used and created before the cutoff; `fresh` was used after it.
    # The cutoff may be given with any UTC offset.
    cutoff_west = cutoff.astimezone(timezone(timedelta(hours=-7))).isoformat()
    r = user.client.delete(f"{API}/api_tokens", params={"usedbefore": cutoff_west})
    assert r.json() == {"deleted": 1}
    assert [t["tokenLabel"] for t in listed(user.client)] == ["fresh"]
    assert user.with_secret(stale["token"]).get("/v2/").status_code == 401


def test_token_label_limits(user):
    api_error(
        user.client.post(f"{API}/api_tokens", json={"tokenLabel": "x" * 256}),
        400,
        "INVALID_PARAMETERS",
    )
    created = new_token(user.client, "")
    assert created["tokenLabel"] == ""


@pytest.mark.parametrize("path", ["/api_tokens", "/api_tokens/abc"])
def test_anonymous_has_no_tokens(anon, path):
    api_error(anon.get(f"{API}{path}"), 401, "NOT_AUTHENTICATED")
