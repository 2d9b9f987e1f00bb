"""Accounts: who may create, change, deactivate and delete users and organisations."""

from __future__ import annotations

import httpx
import pytest

from tests.api.helpers import push_image

from .helpers import API, api_error, create_repo, open_client, unique


def test_admin_creates_users_and_orgs(admin, wharf_server):
    user, org = unique("u"), unique("org")
    r = admin.post(
        f"{API}/accounts", json={"name": user, "password": "s3cret-pass", "fullName": "A B"}
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == user and body["fullName"] == "A B"
    assert body["isOrg"] is False and body["isAdmin"] is False and body["isActive"] is True
    assert "password" not in body and "passwordHash" not in body
    r = admin.post(f"{API}/accounts", json={"name": org, "isOrg": True})
    assert r.status_code == 201, r.text
    assert r.json()["isOrg"] is True

    got = admin.get(f"{API}/accounts/{user}")
    assert got.status_code == 200 and got.json()["name"] == user
    with open_client(wharf_server.url, (user, "s3cret-pass")) as c:
        assert c.get("/v2/").status_code == 200
        assert c.get(f"{API}/accounts/me").json()["name"] == user

    orgs = admin.get(f"{API}/accounts", params={"filter": "orgs", "pageSize": 1000}).json()
    names = {a["name"] for a in orgs}
    assert org in names and user not in names
    users = admin.get(f"{API}/accounts", params={"filter": "users", "pageSize": 1000}).json()
    assert user in {a["name"] for a in users}


def test_organization_has_no_password(admin):
    r = admin.post(
        f"{API}/accounts", json={"name": unique("org"), "isOrg": True, "password": "longenough"}
    )
    api_error(r, 400, "INVALID_PARAMETERS")


def test_non_admin_cannot_create_accounts(user):
    r = user.client.post(f"{API}/accounts", json={"name": unique(), "password": "longenough"})
    api_error(r, 403, "NOT_AUTHORIZED")
    r = user.client.post(f"{API}/accounts", json={"name": unique("org"), "isOrg": True})
    api_error(r, 403, "NOT_AUTHORIZED")


def test_anonymous_gets_401_with_basic_challenge(anon):
    for r in (
        anon.post(f"{API}/accounts", json={"name": unique(), "password": "longenough"}),
        anon.get(f"{API}/accounts/me"),
        anon.get(f"{API}/accounts"),
    ):
        api_error(r, 401, "NOT_AUTHENTICATED")
        assert r.headers["www-authenticate"].startswith("Basic "), r.headers


def test_wrong_password_on_api_is_401(wharf_server, user):
    with open_client(wharf_server.url, (user.name, user.password + "x")) as c:
        r = c.get(f"{API}/accounts/me")
    api_error(r, 401, "NOT_AUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Basic ")


def test_users_and_orgs_share_one_namespace(admin):
    name = unique()
    r = admin.post(f"{API}/accounts", json={"name": name, "password": "longenough"})
    assert r.status_code == 201
    api_error(
        admin.post(f"{API}/accounts", json={"name": name, "password": "longenough"}),
        409,
        "ACCOUNT_EXISTS",
    )
    api_error(
        admin.post(f"{API}/accounts", json={"name": name, "isOrg": True}), 409, "ACCOUNT_EXISTS"
    )
    org = unique("org")
    assert admin.post(f"{API}/accounts", json={"name": org, "isOrg": True}).status_code == 201
    api_error(
        admin.post(f"{API}/accounts", json={"name": org, "password": "longenough"}),
        409,
        "ACCOUNT_EXISTS",
    )
    # The existing account is untouched.
    assert admin.get(f"{API}/accounts/{name}").json()["isOrg"] is False
    assert admin.get(f"{API}/accounts/{org}").json()["isOrg"] is True


@pytest.mark.parametrize(
    "name",
    ["Upper", "has space", "-dash", "dash-", "a/b", "", "x" * 65, "me", "é", "a..b"],
)
def test_invalid_account_names_are_400(admin, name):
    r = admin.post(f"{API}/accounts", json={"name": name, "password": "longenough"})
    assert r.status_code == 400, (name, r.text)
    assert r.json()["errors"][0]["code"] in ("INVALID_ACCOUNT_NAME", "INVALID_PARAMETERS")
    if name and name != "me":  # /accounts/me is the caller
        assert admin.get(f"{API}/accounts/{name}").status_code == 404, name


@pytest.mark.parametrize("password", [None, "", "short", "1234567"])
def test_short_or_missing_passwords_are_400(admin, password):
    body = {"name": unique()}
    if password is not None:
        body["password"] = password
    r = admin.post(f"{API}/accounts", json=body)
    api_error(r, 400, "INVALID_PASSWORD")
    api_error(admin.get(f"{API}/accounts/{body['name']}"), 404, "NO_SUCH_ACCOUNT")


def test_unknown_fields_and_bad_json_are_400(admin):
    r = admin.post(f"{API}/accounts", json={"name": unique(), "password": "longenough", "x": 1})
    api_error(r, 400, "INVALID_PARAMETERS")
    r = admin.post(
        f"{API}/accounts", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    api_error(r, 400, "INVALID_JSON")


def test_user_changes_own_full_name_but_not_others_or_privileges(make_user, admin):
    alice, bob = make_user(), make_user()
    r = alice.client.patch(f"{API}/accounts/{alice.name}", json={"fullName": "Alice Liddell"})
    assert r.status_code == 200, r.text
    assert r.json()["fullName"] == "Alice Liddell"
    assert admin.get(f"{API}/accounts/{alice.name}").json()["fullName"] == "Alice Liddell"

    api_error(
        alice.client.patch(f"{API}/accounts/{bob.name}", json={"fullName": "nope"}),
        403,
        "NOT_AUTHORIZED",
    )
    assert admin.get(f"{API}/accounts/{bob.name}").json()["fullName"] == ""
    api_error(
        alice.client.patch(f"{API}/accounts/{alice.name}", json={"isAdmin": True}),
        403,
        "NOT_AUTHORIZED",
    )
    api_error(
        alice.client.patch(f"{API}/accounts/{alice.name}", json={"isActive": False}),
        403,
        "NOT_AUTHORIZED",
    )
    me = admin.get(f"{API}/accounts/{alice.name}").json()
    assert me["isAdmin"] is False and me["isActive"] is True
    # Still not an admin in practice either.
    api_error(alice.client.get(f"{API}/meta/settings"), 403, "NOT_AUTHORIZED")


def test_changing_own_password_needs_the_old_one(wharf_server, make_user):
    alice = make_user()
    url = f"{API}/accounts/{alice.name}"
    api_error(alice.client.patch(url, json={"password": "new-password-1"}), 403, "INVALID_PASSWORD")
    api_error(
        alice.client.patch(url, json={"password": "new-password-1", "oldPassword": "wrong-one"}),
        403,
        "INVALID_PASSWORD",
    )
    api_error(
        alice.client.patch(url, json={"password": "short", "oldPassword": alice.password}),
        400,
        "INVALID_PASSWORD",
    )
    # Nothing changed so far.
    assert alice.client.get(f"{API}/accounts/me").status_code == 200
    r = alice.client.patch(url, json={"password": "new-password-1", "oldPassword": alice.password})
    assert r.status_code == 200, r.text
    # The old password stops working at once (even though it was cached), the new one works.
    api_error(alice.client.get(f"{API}/accounts/me"), 401, "NOT_AUTHENTICATED")
    assert alice.client.get("/v2/").status_code == 401
    with open_client(wharf_server.url, (alice.name, "new-password-1")) as c:
        assert c.get(f"{API}/accounts/me").json()["name"] == alice.name
        assert c.get("/v2/").status_code == 200


def test_admin_sets_another_users_password_without_the_old_one(wharf_server, admin, user):
    r = admin.patch(f"{API}/accounts/{user.name}", json={"password": "reset-by-admin"})
    assert r.status_code == 200, r.text
    assert user.client.get("/v2/").status_code == 401
    with open_client(wharf_server.url, (user.name, "reset-by-admin")) as c:
        assert c.get("/v2/").status_code == 200


def test_deactivation_is_immediate_and_reactivation_restores(admin, user):
    push_image(user.client, f"{user.name}/app")
    # Warm the server's credential cache first: deactivation must not wait for it.
    assert user.client.get("/v2/").status_code == 200
    assert user.client.get(f"{API}/accounts/me").status_code == 200

    r = admin.patch(f"{API}/accounts/{user.name}", json={"isActive": False})
    assert r.status_code == 200 and r.json()["isActive"] is False
    r = user.client.get("/v2/")
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer ")
    assert user.client.get(f"/v2/{user.name}/app/tags/list").status_code == 401
    api_error(user.client.get(f"{API}/accounts/me"), 401, "NOT_AUTHENTICATED")
    inactive = admin.get(f"{API}/accounts", params={"filter": "inactive", "pageSize": 1000})
    assert user.name in {a["name"] for a in inactive.json()}

    r = admin.patch(f"{API}/accounts/{user.name}", json={"isActive": True})
    assert r.status_code == 200 and r.json()["isActive"] is True
    assert user.client.get("/v2/").status_code == 200
    assert user.client.get(f"/v2/{user.name}/app/tags/list").json()["tags"] == ["latest"]
    assert user.client.get(f"{API}/accounts/me").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"isActive": None},
        {"isAdmin": None},
        {"isActive": "false"},
        {"isAdmin": 1},
        {"fullName": None},
        {"fullName": 5},
        {"password": None},
        {"name": "renamed"},
    ],
)
def test_bad_account_changes_are_400_and_change_nothing(admin, user, body):
    r = admin.patch(f"{API}/accounts/{user.name}", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] in ("INVALID_PARAMETERS", "INVALID_PASSWORD")
    got = admin.get(f"{API}/accounts/{user.name}").json()
    assert (got["name"], got["isActive"], got["isAdmin"]) == (user.name, True, False)
    assert user.client.get("/v2/").status_code == 200


def test_me_describes_the_caller_and_its_organizations(admin, make_user, make_org):
    alice = make_user(fullName="Alice")
    owned, joined = make_org(), make_org()
    admin.put(f"{API}/accounts/{owned}/members/{alice.name}", json={"isOwner": True})
    admin.put(f"{API}/accounts/{joined}/members/{alice.name}", json={"isOwner": False})
    me = alice.client.get(f"{API}/accounts/me")
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["name"] == alice.name and body["fullName"] == "Alice"
    assert body["isAdmin"] is False and body["isOrg"] is False
    assert {(o["name"], o["isOwner"]) for o in body["organizations"]} == {
        (owned, True),
        (joined, False),
    }
    assert admin.get(f"{API}/accounts/me").json()["isAdmin"] is True


def test_get_unknown_account_is_404(admin):
    api_error(admin.get(f"{API}/accounts/{unique()}"), 404, "NO_SUCH_ACCOUNT")


def test_deleting_a_user_deletes_its_repositories(wharf_server, admin, make_user, make_org):
    bob = make_user()
    image = push_image(bob.client, f"{bob.name}/app")
    created = create_repo(bob.client, bob.name, "empty")
    assert admin.get(f"{API}/repositories/{bob.name}/app").status_code == 200

    r = admin.delete(f"{API}/accounts/{bob.name}")
    assert r.status_code == 204, r.text
    api_error(admin.get(f"{API}/accounts/{bob.name}"), 404, "NO_SUCH_ACCOUNT")
    api_error(admin.get(f"{API}/repositories/{bob.name}/app"), 404, "NO_SUCH_REPOSITORY")
    api_error(admin.get(f"{API}/repositories/{created}"), 404, "NO_SUCH_REPOSITORY")
    r = admin.get(f"/v2/{bob.name}/app/manifests/{image.digest}")
    assert r.status_code == 404, r.text
    catalog = admin.get("/v2/_catalog").json()["repositories"]
    assert f"{bob.name}/app" not in catalog and created not in catalog
    # The deleted user can no longer log in.
    assert bob.client.get("/v2/").status_code == 401

    # A new account of the same name starts empty.
    again = admin.post(f"{API}/accounts", json={"name": bob.name, "password": "longenough"})
    assert again.status_code == 201
    assert admin.get(f"{API}/repositories/{bob.name}").json() == []

    # Deleting an organisation deletes its repositories too.
    org = make_org()
    repo = create_repo(admin, org)
    assert admin.delete(f"{API}/accounts/{org}").status_code == 204
    api_error(admin.get(f"{API}/repositories/{repo}"), 404, "NO_SUCH_REPOSITORY")


def test_only_admins_delete_accounts(user, make_user):
    other = make_user()
    api_error(user.client.delete(f"{API}/accounts/{other.name}"), 403, "NOT_AUTHORIZED")
    api_error(user.client.delete(f"{API}/accounts/{user.name}"), 403, "NOT_AUTHORIZED")
    assert other.client.get("/v2/").status_code == 200


def test_admin_cannot_delete_deactivate_or_demote_itself(admin, wharf_server):
    me = wharf_server.admin_user
    api_error(admin.delete(f"{API}/accounts/{me}"), 400, "INVALID_PARAMETERS")
    api_error(
        admin.patch(f"{API}/accounts/{me}", json={"isAdmin": False}), 400, "INVALID_PARAMETERS"
    )
    api_error(
        admin.patch(f"{API}/accounts/{me}", json={"isActive": False}), 400, "INVALID_PARAMETERS"
    )
    # Even an admin proves the old password to change its own.
    api_error(
        admin.patch(f"{API}/accounts/{me}", json={"password": "another-password"}),
        403,
        "INVALID_PASSWORD",
    )
    body = admin.get(f"{API}/accounts/me").json()
    assert body["isAdmin"] is True and body["isActive"] is True


def test_admin_promotes_and_demotes_another_user(admin, user):
    api_error(user.client.get(f"{API}/meta/settings"), 403, "NOT_AUTHORIZED")
    assert admin.patch(f"{API}/accounts/{user.name}", json={"isAdmin": True}).status_code == 200
    assert user.client.get(f"{API}/meta/settings").status_code == 200
    assert admin.patch(f"{API}/accounts/{user.name}", json={"isAdmin": False}).status_code == 200
    api_error(user.client.get(f"{API}/meta/settings"), 403, "NOT_AUTHORIZED")


def test_orgs_cannot_be_admins_or_log_in(admin, make_org, wharf_server):
    org = make_org()
    api_error(
        admin.patch(f"{API}/accounts/{org}", json={"isAdmin": True}), 400, "INVALID_PARAMETERS"
    )
    with httpx.Client(base_url=wharf_server.url, auth=(org, "anything-at-all")) as c:
        assert c.get("/v2/").status_code == 401


def test_account_list_pagination(admin):
    first = admin.get(f"{API}/accounts", params={"pageSize": 2})
    assert first.status_code == 200
    assert len(first.json()) == 2
    nxt = first.headers["x-next-page-start"]
    second = admin.get(f"{API}/accounts", params={"pageSize": 2, "pageStart": nxt})
    assert second.json()[0]["name"] == nxt
    assert {a["name"] for a in first.json()}.isdisjoint(a["name"] for a in second.json())
    api_error(admin.get(f"{API}/accounts", params={"pageSize": 0}), 400, "INVALID_PARAMETERS")


def test_an_account_cannot_inherit_repositories_pushed_into_an_unowned_namespace(admin):
    """An admin may push `ghost/x` before any account `ghost` exists; registering `ghost`
    later would make its owner admin of those repositories, so it is refused."""
    name = unique("ghost")
    push_image(admin, f"{name}/x")
    r = admin.post(f"{API}/accounts", json={"name": name, "password": "long-enough-pw"})
    api_error(r, 409, "NAMESPACE_IN_USE")
    r = admin.post(f"{API}/accounts", json={"name": name, "isOrg": True})
    api_error(r, 409, "NAMESPACE_IN_USE")
    assert admin.delete(f"{API}/repositories/{name}/x").status_code == 204
    r = admin.post(f"{API}/accounts", json={"name": name, "isOrg": True})
    assert r.status_code == 201, r.text
