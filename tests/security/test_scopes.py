"""Scope escalation at /auth/token: a token never grants more than the caller holds, and a
token is honoured only for what its `access` claim lists."""

from __future__ import annotations

import httpx
import pytest

from .helpers import (
    OCI_MANIFEST,
    access_token,
    bearer,
    challenge_params,
    error_code,
    get_token,
    jwt_parts,
    push_image,
    sha256,
)


def access_claim(token: str) -> list[dict]:
    return jwt_parts(token)[1]["access"]


def test_read_only_user_gets_only_pull(wharf_server, world):
    repo = world.org_app.repository
    r = get_token(wharf_server, [f"repository:{repo}:pull,push,delete,*"], world.carol.auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert access_claim(body["token"]) == [
        {"type": "repository", "name": repo, "actions": ["pull"]}
    ]
    assert body["scope"] == f"repository:{repo}:pull"
    assert jwt_parts(body["token"])[1]["sub"] == world.carol.name

    # The same through the OAuth2 form.
    r = httpx.post(
        f"{wharf_server.url}/auth/token",
        data={
            "grant_type": "password",
            "service": "wharf",
            "username": world.carol.name,
            "password": world.carol.password,
            "scope": f"repository:{repo}:push,delete,pull",
        },
    )
    assert r.status_code == 200, r.text
    assert access_claim(r.json()["access_token"]) == [
        {"type": "repository", "name": repo, "actions": ["pull"]}
    ]


def test_pull_token_cannot_push_or_delete(wharf_server, world):
    repo = world.org_app.repository
    token = access_token(wharf_server, [f"repository:{repo}:pull,push,delete"], world.carol.auth)
    with httpx.Client(base_url=wharf_server.url, headers=bearer(token)) as c:
        assert c.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]
        attempts = [
            ("POST", f"/v2/{repo}/blobs/uploads/", "pull,push"),
            ("PUT", f"/v2/{repo}/manifests/evil", "pull,push"),
            ("DELETE", f"/v2/{repo}/manifests/{world.org_app.digest}", "delete"),
            ("DELETE", f"/v2/{repo}/blobs/{world.org_app.layer_digest}", "delete"),
        ]
        for method, path, actions in attempts:
            r = c.request(method, path, content=b"{}" if method == "PUT" else None)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert error_code(r) == "UNAUTHORIZED"
            params = challenge_params(r.headers["www-authenticate"])
            assert params["error"] == "insufficient_scope"
            assert params["scope"] == f"repository:{repo}:{actions}"
    # Nothing changed.
    r = world.admin.http.get(f"/v2/{repo}/tags/list")
    assert r.json()["tags"] == ["v1"]
    r = world.admin.http.head(f"/v2/{repo}/manifests/{world.org_app.digest}")
    assert r.status_code == 200


def test_push_token_works_where_granted(wharf_server, world):
    """The control for the refusals: the same flow with the scope held succeeds."""
    repo = f"{world.bob.name}/scoped"
    token = access_token(wharf_server, [f"repository:{repo}:pull,push"], world.bob.auth)
    assert access_claim(token) == [
        {"type": "repository", "name": repo, "actions": ["pull", "push"]}
    ]
    with httpx.Client(base_url=wharf_server.url, headers=bearer(token)) as c:
        image = push_image(c, repo)
        r = c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == image.manifest
        # Delete was not asked for, so it is not granted even to the owner.
        r = c.delete(f"/v2/{repo}/manifests/{image.digest}")
        assert r.status_code == 401, r.text
        assert challenge_params(r.headers["www-authenticate"])["error"] == "insufficient_scope"


def test_token_for_one_repository_is_refused_on_another(wharf_server, world):
    bob = world.bob
    token = access_token(
        wharf_server, [f"repository:{world.private.repository}:pull,push"], bob.auth
    )
    # bob may do anything to bob/public, but this token does not say so.
    other = world.public.repository
    with httpx.Client(base_url=wharf_server.url, headers=bearer(token)) as c:
        assert c.get(f"/v2/{world.private.repository}/tags/list").status_code == 200
        for method, path in [
            ("GET", f"/v2/{other}/tags/list"),
            ("GET", f"/v2/{other}/manifests/v1"),
            ("GET", f"/v2/{other}/blobs/{world.public.layer_digest}"),
            ("POST", f"/v2/{other}/blobs/uploads/"),
            ("DELETE", f"/v2/{other}/manifests/{world.public.digest}"),
        ]:
            r = c.request(method, path)
            assert r.status_code == 401, (method, path, r.text)
            params = challenge_params(r.headers["www-authenticate"])
            assert params["error"] == "insufficient_scope"
            assert params["scope"].startswith(f"repository:{other}:")


def test_catalog_token_grants_no_pulls(wharf_server, world):
    token = access_token(wharf_server, ["registry:catalog:*"], world.carol.auth)
    assert access_claim(token) == [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    repo = world.org_app.repository
    with httpx.Client(base_url=wharf_server.url, headers=bearer(token)) as c:
        r = c.get("/v2/_catalog", params={"n": 10000})
        assert r.status_code == 200, r.text
        listed = r.json()["repositories"]
        assert repo in listed
        assert world.private.repository not in listed
        assert world.org_secret.repository not in listed
        for path in [
            f"/v2/{repo}/tags/list",
            f"/v2/{repo}/manifests/v1",
            f"/v2/{repo}/blobs/{world.org_app.layer_digest}",
        ]:
            r = c.get(path)
            assert r.status_code == 401, (path, r.text)
            assert challenge_params(r.headers["www-authenticate"])["error"] == "insufficient_scope"


def test_scopes_on_other_users_private_repositories_grant_nothing(wharf_server, world):
    private, missing = world.private.repository, world.missing
    answers = {}
    for repo in (private, missing):
        r = get_token(wharf_server, [f"repository:{repo}:pull,push,delete,*"], world.alice.auth)
        assert r.status_code == 200, r.text
        body = r.json()
        assert access_claim(body["token"]) == [{"type": "repository", "name": repo, "actions": []}]
        answers[repo] = (r.status_code, body["scope"].replace(repo, "<name>"), body["expires_in"])
    assert answers[private] == answers[missing]

    # Several scopes in one request: each reduced independently.
    r = get_token(
        wharf_server,
        [
            f"repository:{private}:pull",
            f"repository:{world.public.repository}:pull,push",
            f"repository:{world.org_secret.repository}:pull",
        ],
        world.alice.auth,
    )
    assert access_claim(r.json()["token"]) == [
        {"type": "repository", "name": private, "actions": []},
        {"type": "repository", "name": world.public.repository, "actions": ["pull"]},
        {"type": "repository", "name": world.org_secret.repository, "actions": []},
    ]


@pytest.mark.parametrize("who", ["anonymous", "alice"])
def test_empty_token_is_refused_like_a_missing_repository(wharf_server, world, who):
    auth = None if who == "anonymous" else world.alice.auth
    seen = {}
    for repo in (world.private.repository, world.missing):
        token = access_token(wharf_server, [f"repository:{repo}:pull"], auth)
        r = httpx.get(f"{wharf_server.url}/v2/{repo}/tags/list", headers=bearer(token))
        assert r.status_code == 401, r.text
        seen[repo] = (
            r.status_code,
            r.text.replace(repo, "<name>"),
            r.headers["www-authenticate"].replace(repo, "<name>"),
        )
    assert seen[world.private.repository] == seen[world.missing]


def test_anonymous_token_is_pull_only_on_public(wharf_server, world):
    repo = world.public.repository
    token = access_token(wharf_server, [f"repository:{repo}:pull,push,delete"])
    assert access_claim(token) == [{"type": "repository", "name": repo, "actions": ["pull"]}]
    assert jwt_parts(token)[1]["sub"] == ""
    r = httpx.get(
        f"{wharf_server.url}/v2/{repo}/blobs/{world.public.layer_digest}", headers=bearer(token)
    )
    assert r.status_code == 200
    assert sha256(r.content) == world.public.layer_digest
    r = httpx.post(f"{wharf_server.url}/v2/{repo}/blobs/uploads/", headers=bearer(token))
    assert r.status_code == 401
    assert challenge_params(r.headers["www-authenticate"])["error"] == "insufficient_scope"
