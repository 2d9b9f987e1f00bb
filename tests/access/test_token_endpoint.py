"""/auth/token: Docker token authentication (GET) and the OAuth2 form (POST). The JWT's
`access` claim lists only what the caller holds; /v2/ honours exactly that."""

from __future__ import annotations

import time

import pytest

from tests.api.helpers import push_image

from .helpers import (
    API,
    access_of,
    api_error,
    bearer,
    claims,
    create_repo,
    grant_repo,
    token_get,
    try_push_blob,
    unique,
)


@pytest.fixture
def world(admin, team_member, make_user):
    """Repositories the member holds different levels on, and one it cannot see."""
    org, team, member = team_member.org, team_member.team, team_member.member
    owned = f"{member.name}/own"
    push_image(member.client, owned)
    readable = create_repo(admin, org, "readable")
    writable = create_repo(admin, org, "writable")
    hidden = create_repo(admin, org, "hidden")
    public = create_repo(admin, org, "public", visibility="public")
    for repo in (readable, writable, hidden, public):
        push_image(admin, repo)
    grant_repo(admin, readable, team, "read-only")
    grant_repo(admin, writable, team, "read-write")
    stranger = make_user()
    hidden_user = f"{stranger.name}/private"
    push_image(stranger.client, hidden_user)
    return {
        "member": member,
        "owned": owned,
        "readable": readable,
        "writable": writable,
        "hidden": hidden,
        "public": public,
        "hidden_user": hidden_user,
        "missing": f"{org}/{unique('missing')}",
    }


def test_access_claim_lists_only_granted_actions(world, anon):
    w = world
    member = w["member"]
    scopes = [
        f"repository:{w['owned']}:pull,push,delete",
        f"repository:{w['readable']}:pull,push",
        f"repository:{w['writable']}:*",
        f"repository:{w['hidden']}:pull",
        f"repository:{w['public']}:pull,push",
        f"repository:{w['hidden_user']}:pull",
        f"repository:{w['missing']}:pull",
        "registry:catalog:*",
    ]
    r = token_get(anon, scopes, auth=member.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert r.headers["cache-control"] == "no-store"
    access = access_of(body["token"])
    assert access == {
        ("repository", w["owned"]): ["delete", "pull", "push"],
        ("repository", w["readable"]): ["pull"],
        ("repository", w["writable"]): ["delete", "pull", "push"],
        ("repository", w["hidden"]): [],
        ("repository", w["public"]): ["pull"],
        ("repository", w["hidden_user"]): [],
        ("repository", w["missing"]): [],
        ("registry", "catalog"): ["*"],
    }
    c = claims(body["token"])
    assert c["sub"] == member.name
    assert c["aud"] == "wharf" and c["iss"] == "wharf"
    assert c["exp"] - c["iat"] == 300
    assert abs(c["iat"] - time.time()) < 60
    # Several scopes may also come space-separated in one parameter.
    joined = token_get(anon, [" ".join(scopes[:2])], auth=member.auth).json()["token"]
    assert access_of(joined) == {k: access[k] for k in list(access)[:2]}


def test_anonymous_token_grants_public_pull_only(world, anon):
    w = world
    r = token_get(anon, [f"repository:{w['public']}:pull,push", f"repository:{w['hidden']}:pull"])
    assert r.status_code == 200, r.text
    token = r.json()["token"]
    assert claims(token)["sub"] in ("", None)
    assert access_of(token) == {
        ("repository", w["public"]): ["pull"],
        ("repository", w["hidden"]): [],
    }
    assert anon.get(f"/v2/{w['public']}/tags/list", **bearer(token)).status_code == 200
    r = anon.post(f"/v2/{w['public']}/blobs/uploads/", **bearer(token))
    assert r.status_code == 401


def test_wrong_credentials_get_401(world, anon):
    member = world["member"]
    r = token_get(anon, ["registry:catalog:*"], auth=(member.name, "not-the-password"))
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic ")
    r = token_get(anon, ["registry:catalog:*"], service="elsewhere")
    assert r.status_code == 400


def test_bearer_works_for_the_granted_scope_only(world, anon):
    w = world
    member = w["member"]
    token = token_get(
        anon,
        [f"repository:{w['writable']}:pull,push", f"repository:{w['readable']}:pull"],
        auth=member.auth,
    ).json()["token"]
    b = bearer(token)
    assert anon.get(f"/v2/{w['writable']}/tags/list", **b).status_code == 200
    r = anon.post(
        f"/v2/{w['writable']}/blobs/uploads/", headers={**b["headers"], "Content-Length": "0"}
    )
    assert r.status_code == 202, r.text
    assert anon.get(f"/v2/{w['readable']}/manifests/latest", **b).status_code == 200

    def refused(method, path, scope):
        r = anon.request(method, path, **b)
        assert r.status_code == 401, (path, r.text)
        challenge = r.headers["www-authenticate"]
        assert challenge.startswith("Bearer realm=")
        assert 'error="insufficient_scope"' in challenge, challenge
        assert f'scope="{scope}"' in challenge, challenge

    # Held but not in the token: delete on writable, anything on the owner's own repository.
    refused("DELETE", f"/v2/{w['writable']}/manifests/latest", f"repository:{w['writable']}:delete")
    refused("GET", f"/v2/{w['owned']}/tags/list", f"repository:{w['owned']}:pull")
    refused("POST", f"/v2/{w['readable']}/blobs/uploads/", f"repository:{w['readable']}:pull,push")
    refused("GET", f"/v2/{w['hidden']}/tags/list", f"repository:{w['hidden']}:pull")
    refused("GET", "/v2/_catalog", "registry:catalog:*")
    # A registry token is no credential for the management API.
    api_error(anon.get(f"{API}/accounts/me", **b), 401, "NOT_AUTHENTICATED")


def test_forged_or_tampered_tokens_are_refused(world, anon):
    token = token_get(anon, [f"repository:{world['public']}:pull"]).json()["token"]
    head, payload, sig = token.split(".")
    tampered = ".".join([head, payload, sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")])
    r = anon.get(f"/v2/{world['public']}/tags/list", **bearer(tampered))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    import jwt

    unsigned = jwt.encode({**claims(token), "access": []}, key="", algorithm="none")
    assert anon.get("/v2/", **bearer(unsigned)).status_code == 401


def test_catalog_via_bearer_lists_only_readable_repositories(world, anon, admin):
    w = world
    member = w["member"]
    token = token_get(anon, ["registry:catalog:*"], auth=member.auth).json()["token"]
    r = anon.get("/v2/_catalog", **bearer(token))
    assert r.status_code == 200, r.text
    names = set(r.json()["repositories"])
    for key in ("owned", "readable", "writable", "public"):
        assert w[key] in names, key
    for key in ("hidden", "hidden_user", "missing"):
        assert w[key] not in names, key
    # The same with Basic credentials, and the admin sees all of them.
    assert set(member.client.get("/v2/_catalog").json()["repositories"]) == names
    everything = set(admin.get("/v2/_catalog").json()["repositories"])
    assert {w["hidden"], w["hidden_user"]} <= everything


def test_oauth_password_and_refresh_grants(world, anon, wharf_server):
    w = world
    member = w["member"]
    scope = f"repository:{w['writable']}:pull,push"
    r = anon.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": member.name,
            "password": member.password,
            "service": "wharf",
            "client_id": "tests",
            "access_type": "offline",
            "scope": scope,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    refresh = body["refresh_token"]
    assert access_of(body["access_token"])[("repository", w["writable"])] == ["pull", "push"]
    # Without access_type=offline there is no refresh token.
    r = anon.post(
        "/auth/token",
        data={"grant_type": "password", "username": member.name, "password": member.password},
    )
    assert r.status_code == 200 and "refresh_token" not in r.json()

    r = anon.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": "wharf",
            "scope": f"repository:{w['readable']}:pull,push",
        },
    )
    assert r.status_code == 200, r.text
    refreshed = r.json()["access_token"]
    assert claims(refreshed)["sub"] == member.name
    assert access_of(refreshed) == {("repository", w["readable"]): ["pull"]}
    assert anon.get(f"/v2/{w['readable']}/tags/list", **bearer(refreshed)).status_code == 200
    # A refresh token is not an access token, nor the other way round.
    assert anon.get(f"/v2/{w['readable']}/tags/list", **bearer(refresh)).status_code == 401
    r = anon.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refreshed})
    assert r.status_code == 401 and r.json()["error"] == "invalid_grant"

    # After a password change the refresh token is dead.
    r = member.client.patch(
        f"{API}/accounts/{member.name}",
        json={"password": "brand-new-password", "oldPassword": member.password},
    )
    assert r.status_code == 200, r.text
    r = anon.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_grant"


def test_oauth_errors(world, anon):
    member = world["member"]
    r = anon.post(
        "/auth/token",
        data={"grant_type": "password", "username": member.name, "password": "wrong-password"},
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_grant"
    r = anon.post("/auth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = anon.post("/auth/token", json={"grant_type": "password"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = anon.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": "x.y.z"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_grant"


def test_get_offline_token_and_pat_bound_refresh(world, anon):
    member = world["member"]
    created = member.client.post(f"{API}/api_tokens", json={"tokenLabel": "ci"}).json()
    r = token_get(
        anon,
        [f"repository:{world['owned']}:pull"],
        auth=(member.name, created["token"]),
        offline_token="true",
    )
    assert r.status_code == 200, r.text
    refresh = r.json()["refresh_token"]
    ok = anon.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert ok.status_code == 200
    # Deactivating the access token it came from revokes the refresh token.
    r = member.client.patch(f"{API}/api_tokens/{created['hashedToken']}", json={"isActive": False})
    assert r.status_code == 200
    r = anon.post("/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert r.status_code == 401 and r.json()["error"] == "invalid_grant"


def test_bearer_of_a_deactivated_user_is_refused(world, anon, admin):
    w = world
    member = w["member"]
    token = token_get(anon, [f"repository:{w['owned']}:pull"], auth=member.auth).json()["token"]
    assert anon.get(f"/v2/{w['owned']}/tags/list", **bearer(token)).status_code == 200
    assert admin.patch(f"{API}/accounts/{member.name}", json={"isActive": False}).status_code == 200
    assert anon.get(f"/v2/{w['owned']}/tags/list", **bearer(token)).status_code == 401
    assert admin.patch(f"{API}/accounts/{member.name}", json={"isActive": True}).status_code == 200


def test_push_with_bearer_records_the_author(world, anon, admin):
    w = world
    member = w["member"]
    token = token_get(anon, [f"repository:{w['writable']}:pull,push"], auth=member.auth).json()[
        "token"
    ]
    with_bearer = anon.__class__(base_url=anon.base_url, headers=bearer(token)["headers"])
    with with_bearer:
        push_image(with_bearer, w["writable"], "by-bearer")
        assert try_push_blob(with_bearer, w["readable"]).status_code == 401
    tag = admin.get(f"{API}/repositories/{w['writable']}/tags/by-bearer").json()
    assert tag["author"] == member.name
