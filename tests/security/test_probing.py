"""Probing for private repositories: a repository the caller may not read answers exactly like
one that does not exist, on every route and for every kind of caller."""

from __future__ import annotations

import httpx
import pytest

from .helpers import access_token, bearer


def registry_requests(world) -> list[tuple[str, str, dict]]:
    """(method, path after /v2/<name>/, request kwargs) for every repository route."""
    image = world.private
    return [
        ("GET", "tags/list", {}),
        ("GET", "tags/list?n=1", {}),
        ("GET", "manifests/v1", {}),
        ("HEAD", "manifests/v1", {}),
        ("GET", f"manifests/{image.digest}", {}),
        ("HEAD", f"manifests/{image.digest}", {}),
        ("GET", "manifests/nosuchtag", {}),
        ("GET", f"blobs/{image.layer_digest}", {}),
        ("HEAD", f"blobs/{image.layer_digest}", {}),
        ("GET", f"blobs/{image.layer_digest}", {"headers": {"Range": "bytes=0-9"}}),
        ("GET", f"referrers/{image.digest}", {}),
        ("POST", "blobs/uploads/", {}),
        ("POST", f"blobs/uploads/?mount={image.layer_digest}", {}),
        ("PUT", "manifests/v2", {"content": image.manifest}),
        ("DELETE", "manifests/v1", {}),
        ("DELETE", f"manifests/{image.digest}", {}),
        ("DELETE", f"blobs/{image.layer_digest}", {}),
        ("GET", "blobs/uploads/0b8a4a40-9f3e-4c5e-8d6b-2f3a1c0e9d7a", {}),
        ("PATCH", "blobs/uploads/0b8a4a40-9f3e-4c5e-8d6b-2f3a1c0e9d7a", {"content": b"x"}),
        ("PUT", f"blobs/uploads/0b8a4a40-9f3e-4c5e-8d6b-2f3a1c0e9d7a?digest={image.digest}", {}),
        ("DELETE", "blobs/uploads/0b8a4a40-9f3e-4c5e-8d6b-2f3a1c0e9d7a", {}),
    ]


def answer(r: httpx.Response, name: str) -> tuple:
    """Everything a caller learns from a response, with the name it asked about masked."""
    skip = {"date", "content-length"}
    headers = sorted(
        (k, v.replace(name, "<name>")) for k, v in r.headers.items() if k.lower() not in skip
    )
    return r.status_code, r.content.replace(name.encode(), b"<name>"), headers


def compare(client: httpx.Client, world, requests, existing: str, missing: str) -> None:
    for method, path, kwargs in requests:
        seen = {}
        for repo in (existing, missing):
            r = client.request(method, f"/v2/{repo}/{path}", **kwargs)
            assert r.status_code in (401, 403, 404), (method, path, repo, r.status_code, r.text)
            seen[repo] = answer(r, repo)
        assert seen[existing] == seen[missing], (method, path)


@pytest.mark.parametrize("caller", ["alice", "anonymous", "alice-bearer", "anonymous-bearer"])
def test_registry_routes_answer_private_like_missing(wharf_server, world, caller):
    existing, missing = world.private.repository, world.missing
    requests = registry_requests(world)
    if caller.endswith("bearer"):
        # A token per repository, as a client gets by following the challenge.
        auth = world.alice.auth if caller.startswith("alice") else None
        seen = {}
        for repo in (existing, missing):
            token = access_token(wharf_server, [f"repository:{repo}:pull,push,delete"], auth)
            with httpx.Client(base_url=wharf_server.url, headers=bearer(token)) as c:
                seen[repo] = [
                    answer(c.request(m, f"/v2/{repo}/{p}", **kw), repo) for m, p, kw in requests
                ]
        for (method, path, _), a, b in zip(requests, seen[existing], seen[missing], strict=True):
            assert a[0] == 401, (method, path, a)
            assert a == b, (method, path)
        return
    auth = world.alice.auth if caller == "alice" else None
    with httpx.Client(base_url=wharf_server.url, auth=auth) as c:
        compare(c, world, requests, existing, missing)


def test_org_repository_without_grant_answers_like_missing(wharf_server, world):
    """carol belongs to the organisation (through a team) but holds nothing on org/secret."""
    requests = registry_requests(world)
    with world.carol.client() as c:
        compare(c, world, requests, world.org_secret.repository, f"{world.org}/nosuch")
        # She can read the repository she was granted: the org is not just unreadable to her.
        assert c.get(f"/v2/{world.org_app.repository}/tags/list").status_code == 200


def test_readable_control(world):
    """The same requests against a repository the caller may read do differ from a missing
    one: the comparison above is able to tell them apart."""
    with world.bob.client() as c:
        existing = c.get(f"/v2/{world.private.repository}/tags/list")
        missing = c.get(f"/v2/{world.missing}/tags/list")
    assert answer(existing, world.private.repository) != answer(missing, world.missing)


API_PATHS = [
    ("GET", ""),
    ("GET", "/tags"),
    ("GET", "/tags/v1"),
    ("GET", "/teamAccess"),
    ("PATCH", ""),
    ("DELETE", ""),
    ("DELETE", "/tags/v1"),
    ("PUT", "/teamAccess/readers"),
    ("DELETE", "/teamAccess/readers"),
]


@pytest.mark.parametrize("caller", ["alice", "anonymous"])
def test_management_api_answers_private_like_missing(wharf_server, world, caller):
    auth = world.alice.auth if caller == "alice" else None
    bodies = {"PATCH": {"shortDescription": "pwned"}, "PUT": {"accessLevel": "read-only"}}
    with httpx.Client(base_url=wharf_server.url, auth=auth) as c:
        for method, suffix in API_PATHS:
            seen = {}
            for repo in (world.private.repository, world.missing):
                r = c.request(
                    method, f"/api/v0/repositories/{repo}{suffix}", json=bodies.get(method)
                )
                assert r.status_code in (401, 403, 404), (method, suffix, r.text)
                seen[repo] = answer(r, repo)
            assert seen[world.private.repository] == seen[world.missing], (method, suffix)
        # The effective-access view of oneself is no oracle either.
        if caller == "alice":
            seen = {}
            for repo in (world.private.repository, world.missing):
                r = c.get(f"/api/v0/accounts/{world.alice.name}/repositoryAccess/{repo}")
                seen[repo] = answer(r, repo)
            assert seen[world.private.repository] == seen[world.missing]
            assert seen[world.missing][0] == 404
            # Listing and catalog do not show the repository.
            r = c.get(f"/api/v0/repositories/{world.bob.name}", params={"pageSize": 1000})
            assert r.status_code == 200
            names = [repo["fullName"] for repo in r.json()]
            assert world.private.repository not in names
            assert world.public.repository in names
    r = world.admin.http.get(f"/api/v0/repositories/{world.private.repository}")
    assert r.status_code == 200
    assert r.json()["shortDescription"] == ""
