"""end-1: the base route, GET/HEAD /v2/."""

from __future__ import annotations

from .helpers import assert_api_version, assert_error


def test_get_base_authenticated(client):
    r = client.get("/v2/")
    assert r.status_code == 200
    assert r.headers["content-type"].split(";")[0] == "application/json"
    assert r.json() == {}
    assert_api_version(r)


def test_get_base_without_trailing_slash(client):
    r = client.get("/v2")
    assert r.status_code == 200
    assert r.json() == {}
    assert_api_version(r)


def test_head_base(client):
    r = client.head("/v2/")
    assert r.status_code == 200
    assert r.content == b""
    assert_api_version(r)


def test_base_anonymous_is_challenged(anon):
    r = anon.get("/v2/")
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith('Bearer realm="http://')
    assert 'service="wharf"' in r.headers["www-authenticate"]
    assert 'realm="' in r.headers["www-authenticate"]
    assert_api_version(r)


def test_base_wrong_password(wharf_server, anon):
    r = anon.get("/v2/", auth=(wharf_server.admin_user, "not-the-password"))
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith('Bearer realm="http://')
    assert 'service="wharf"' in r.headers["www-authenticate"]


def test_base_non_user_account(anon):
    r = anon.get("/v2/", auth=("nobody-here", "whatever"))
    assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["www-authenticate"].startswith('Bearer realm="http://')
    assert 'service="wharf"' in r.headers["www-authenticate"]


def test_base_non_admin_user(user_client):
    r = user_client.get("/v2/")
    assert r.status_code == 200
    assert r.json() == {}


def test_outside_v2_is_not_found(client):
    r = client.get("/v3/")
    assert r.status_code == 404
