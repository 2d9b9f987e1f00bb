"""System settings at run time: who may read and change them, and what createRepositoryOnPush
and anonymousPull do. These tests change settings, so they run on a registry of their own."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.helpers import push_image
from tests.conftest import WharfServer, start_server

from .helpers import (
    API,
    User,
    access_of,
    api_error,
    can_pull,
    create_repo,
    create_user,
    open_client,
    registry_code,
    token_get,
    try_push_blob,
    unique,
)

DEFAULTS = {
    "createRepositoryOnPush": True,
    "anonymousPull": True,
    "tokenLifetimeSeconds": 300,
    "failedLoginLimit": 10,
    "failedLoginWindowSeconds": 300,
    "jobHistoryMaxAgeDays": 30,
    "jobHistoryMaxCount": 10000,
    "uploadExpiryMinutes": 1440,
}


@pytest.fixture(scope="module")
def own_server(tmp_path_factory) -> Iterator[WharfServer]:
    server = start_server(tmp_path_factory.mktemp("settings"))
    yield server
    server.stop()


@pytest.fixture
def own_admin(own_server) -> Iterator[httpx.Client]:
    """The admin of the module's own registry; settings are restored after each test."""
    with own_server.client() as c:
        yield c
        r = c.post(f"{API}/meta/settings", json=DEFAULTS)
        assert r.status_code == 202, r.text


@pytest.fixture
def own_user(own_admin) -> Iterator[User]:
    user = create_user(own_admin)
    yield user
    user.close()


@pytest.fixture
def own_anon(own_server) -> Iterator[httpx.Client]:
    with own_server.client(auth=False) as c:
        yield c


def change(admin, **values):
    r = admin.post(f"{API}/meta/settings", json=values)
    assert r.status_code == 202, r.text
    for key, value in values.items():
        assert r.json()[key] == value
    return r.json()


def test_settings_are_for_admins_only(own_admin, own_user, own_anon):
    r = own_admin.get(f"{API}/meta/settings")
    assert r.status_code == 200
    assert r.json() == DEFAULTS
    api_error(own_user.client.get(f"{API}/meta/settings"), 403, "NOT_AUTHORIZED")
    api_error(
        own_user.client.post(f"{API}/meta/settings", json={"anonymousPull": False}),
        403,
        "NOT_AUTHORIZED",
    )
    r = own_anon.get(f"{API}/meta/settings")
    api_error(r, 401, "NOT_AUTHENTICATED")
    api_error(
        own_anon.post(f"{API}/meta/settings", json={"anonymousPull": False}),
        401,
        "NOT_AUTHENTICATED",
    )
    assert own_admin.get(f"{API}/meta/settings").json()["anonymousPull"] is True


@pytest.mark.parametrize(
    "body",
    [
        {"unknownSetting": True},
        {"anonymousPull": "no"},
        {"anonymousPull": 0},
        {"tokenLifetimeSeconds": 10},
        {"tokenLifetimeSeconds": 7200},
        {"tokenLifetimeSeconds": True},
        {"failedLoginLimit": 0},
    ],
)
def test_invalid_settings_are_refused(own_admin, body):
    r = own_admin.post(f"{API}/meta/settings", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["code"] in ("INVALID_PARAMETERS", "INVALID_SETTINGS")
    assert own_admin.get(f"{API}/meta/settings").json() == DEFAULTS


def test_partial_update_keeps_the_rest(own_admin):
    new = change(own_admin, tokenLifetimeSeconds=120)
    assert new == {**DEFAULTS, "tokenLifetimeSeconds": 120}
    assert own_admin.get(f"{API}/meta/settings").json() == new
    token = token_get(own_admin, ["registry:catalog:*"]).json()
    assert token["expires_in"] == 120


def test_create_repository_on_push_off(own_admin, own_user):
    existing = create_repo(own_user.client, own_user.name, "existing")
    org_existing = create_repo(own_admin, own_user.name, "by-admin")
    change(own_admin, createRepositoryOnPush=False)

    for client, target in (
        (own_user.client, f"{own_user.name}/{unique('new')}"),
        (own_admin, f"{own_user.name}/{unique('new')}"),
        (own_admin, f"{unique('ns')}/{unique('new')}"),
    ):
        r = try_push_blob(client, target)
        assert r.status_code == 403, (target, r.text)
        assert registry_code(r) == "DENIED"
        api_error(client.get(f"{API}/repositories/{target}"), 404, "NO_SUCH_REPOSITORY")

    # Existing repositories take pushes as before; creating through the API still works,
    # and a push refused a moment ago succeeds once the repository is created.
    push_image(own_user.client, existing)
    push_image(own_admin, org_existing)
    name = unique("later")
    assert try_push_blob(own_user.client, f"{own_user.name}/{name}").status_code == 403
    made = create_repo(own_user.client, own_user.name, name)
    push_image(own_user.client, made)

    change(own_admin, createRepositoryOnPush=True)
    pushed = f"{own_user.name}/{unique('new')}"
    push_image(own_user.client, pushed)
    r = own_user.client.get(f"{API}/repositories/{pushed}")
    assert r.status_code == 200 and r.json()["visibility"] == "private"


def test_repositories_created_by_push_are_private(own_admin, own_user, own_anon, own_server):
    repo = f"{own_user.name}/{unique('pushed')}"
    push_image(own_user.client, repo)
    assert own_admin.get(f"{API}/repositories/{repo}").json()["visibility"] == "private"
    assert can_pull(own_anon, repo) == 401
    other = create_user(own_admin)
    try:
        assert can_pull(other.client, repo) == 404
    finally:
        other.close()


def test_anonymous_pull_off_and_on(own_admin, own_user, own_anon):
    public = create_repo(own_user.client, own_user.name, unique("pub"), visibility="public")
    private = create_repo(own_user.client, own_user.name, unique("priv"))
    push_image(own_user.client, public)
    push_image(own_user.client, private)
    # Anonymous pull works at first (and is cached): turning it off must still bite at once.
    assert can_pull(own_anon, public) == 200
    assert public in own_anon.get("/v2/_catalog").json()["repositories"]
    assert private not in own_anon.get("/v2/_catalog").json()["repositories"]
    r = token_get(own_anon, [f"repository:{public}:pull"])
    assert r.status_code == 200
    assert access_of(r.json()["token"])[("repository", public)] == ["pull"]
    assert [i["fullName"] for i in own_anon.get(f"{API}/repositories/{own_user.name}").json()] == [
        public
    ]

    change(own_admin, anonymousPull=False)
    r = own_anon.get(f"/v2/{public}/manifests/latest")
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer ")
    assert own_anon.get(f"/v2/{public}/tags/list").status_code == 401
    assert own_anon.get("/v2/_catalog").status_code == 401
    r = token_get(own_anon, [f"repository:{public}:pull"])
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Basic ")
    r = token_get(own_anon, ["registry:catalog:*"])
    assert r.status_code == 401
    r = own_anon.get(f"{API}/repositories/{own_user.name}")
    api_error(r, 401, "NOT_AUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Basic ")
    api_error(own_anon.get(f"{API}/repositories/{public}"), 401, "NOT_AUTHENTICATED")
    # Signed-in users still pull public repositories.
    other = create_user(own_admin)
    try:
        assert can_pull(other.client, public) == 200
        r = token_get(other.client, [f"repository:{public}:pull"])
        assert access_of(r.json()["token"])[("repository", public)] == ["pull"]
    finally:
        other.close()

    change(own_admin, anonymousPull=True)
    assert can_pull(own_anon, public) == 200
    assert can_pull(own_anon, private) == 401
    r = token_get(own_anon, [f"repository:{public}:pull"])
    assert r.status_code == 200
    assert access_of(r.json()["token"])[("repository", public)] == ["pull"]


def test_anonymous_bearer_token_stops_working_when_anonymous_pull_is_turned_off(
    own_admin, own_user, own_anon
):
    public = create_repo(own_user.client, own_user.name, unique("pub"), visibility="public")
    push_image(own_user.client, public)
    token = token_get(own_anon, [f"repository:{public}:pull"]).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert own_anon.get(f"/v2/{public}/tags/list", headers=headers).status_code == 200
    change(own_admin, anonymousPull=False)
    assert own_anon.get(f"/v2/{public}/tags/list", headers=headers).status_code == 401


def test_failed_login_limit(own_admin, own_server):
    change(own_admin, failedLoginLimit=2, failedLoginWindowSeconds=60)
    user = create_user(own_admin)
    try:
        with open_client(own_server.url, (user.name, "wrong-password")) as bad:
            assert bad.get("/v2/").status_code == 401
            assert bad.get(f"{API}/accounts/me").status_code == 401
            r = bad.get("/v2/")
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) > 0
        # Even the right password is refused while throttled, from the same address.
        assert user.client.get("/v2/").status_code == 429
    finally:
        user.close()
