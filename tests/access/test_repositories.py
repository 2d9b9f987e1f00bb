"""The repositories API: create, list (readable only, paginated), get, change, delete, and
tags with digest, size, author and times."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.api.helpers import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    canonical,
    index_manifest,
    push_image,
    put_manifest,
    sha256,
)

from .helpers import (
    API,
    add_team_member,
    api_error,
    create_repo,
    create_team,
    grant_repo,
    unique,
)


def parse_time(value: str) -> datetime:
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def all_pages(client, path, key, page_size):
    """Every item of a paginated list, following X-Next-Page-Start."""
    items, start, pages = [], None, 0
    while True:
        params = {"pageSize": page_size}
        if start is not None:
            params["pageStart"] = start
        r = client.get(path, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page) <= page_size
        items += page
        pages += 1
        start = r.headers.get("x-next-page-start")
        if start is None:
            return items, pages
        assert len(page) == page_size
        assert pages < 100


def test_create_is_private_by_default(user):
    r = user.client.post(f"{API}/repositories/{user.name}", json={"name": "plain"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["visibility"] == "private"
    assert body["namespace"] == user.name and body["namespaceType"] == "user"
    assert body["name"] == "plain" and body["fullName"] == f"{user.name}/plain"
    assert body["shortDescription"] == "" and body["longDescription"] == ""
    parse_time(body["createdAt"])
    assert user.client.get(f"{API}/repositories/{user.name}/plain").json() == body
    # It exists for the registry too: empty, and readable by its owner only.
    assert user.client.get(f"/v2/{user.name}/plain/tags/list").json()["tags"] == []


def test_create_public_with_descriptions(user, make_user, anon):
    r = user.client.post(
        f"{API}/repositories/{user.name}",
        json={
            "name": "shown",
            "visibility": "public",
            "shortDescription": "short one",
            "longDescription": "# Long\n\nmarkdown",
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["visibility"] == "public"
    stranger = make_user()
    got = stranger.client.get(f"{API}/repositories/{user.name}/shown")
    assert got.status_code == 200
    assert got.json()["shortDescription"] == "short one"
    assert got.json()["longDescription"] == "# Long\n\nmarkdown"
    assert anon.get(f"{API}/repositories/{user.name}/shown").status_code == 200


def test_org_repository_type(admin, make_org):
    org = make_org()
    r = admin.post(f"{API}/repositories/{org}", json={"name": "x"})
    assert r.status_code == 201 and r.json()["namespaceType"] == "organization"


def test_create_refusals(user, anon):
    c = user.client
    ns = user.name
    create_repo(c, ns, "dup")
    api_error(c.post(f"{API}/repositories/{ns}", json={"name": "dup"}), 409, "REPOSITORY_EXISTS")
    for bad in ("Upper", "a/b", "-x", "", "x" * 191):
        r = c.post(f"{API}/repositories/{ns}", json={"name": bad})
        assert r.status_code == 400, (bad, r.text)
    api_error(
        c.post(f"{API}/repositories/{ns}", json={"name": "v", "visibility": "secret"}),
        400,
        "INVALID_PARAMETERS",
    )
    api_error(
        c.post(f"{API}/repositories/{ns}", json={"name": "d", "shortDescription": "x" * 141}),
        400,
        "INVALID_PARAMETERS",
    )
    api_error(
        c.post(f"{API}/repositories/{unique('nobody')}", json={"name": "x"}), 404, "NO_SUCH_ACCOUNT"
    )
    r = anon.post(f"{API}/repositories/{ns}", json={"name": "anon"})
    api_error(r, 401, "NOT_AUTHENTICATED")
    api_error(c.get(f"{API}/repositories/{ns}/anon"), 404, "NO_SUCH_REPOSITORY")


def test_list_shows_only_readable_repositories_paginated(admin, make_user, make_org, anon):
    org = make_org()
    names = [create_repo(admin, org, f"r{i:02d}") for i in range(7)]
    public = create_repo(admin, org, "pub", visibility="public")
    dev, stranger = make_user(), make_user()
    team = create_team(admin, org)
    add_team_member(admin, org, team, dev.name)
    granted = names[1:6]
    for name in granted:
        grant_repo(admin, name, team, "read-only")

    items, pages = all_pages(dev.client, f"{API}/repositories/{org}", "fullName", 2)
    listed = [i["fullName"] for i in items]
    assert listed == sorted([*granted, public])
    assert pages == 3
    assert all(i["namespace"] == org for i in items)

    # X-Next-Page-Start names the first repository of the next page.
    first = dev.client.get(f"{API}/repositories/{org}", params={"pageSize": 2})
    assert first.headers["x-next-page-start"] == listed[2]

    everything, _ = all_pages(admin, f"{API}/repositories/{org}", "fullName", 3)
    assert [i["fullName"] for i in everything] == sorted([*names, public])

    assert [i["fullName"] for i in stranger.client.get(f"{API}/repositories/{org}").json()] == [
        public
    ]
    assert [i["fullName"] for i in anon.get(f"{API}/repositories/{org}").json()] == [public]

    # The list of all repositories follows the same rule.
    mine, _ = all_pages(dev.client, f"{API}/repositories", "fullName", 500)
    mine_names = {i["fullName"] for i in mine}
    assert set(granted) | {public} <= mine_names
    assert not (set(names) - set(granted)) & mine_names
    api_error(dev.client.get(f"{API}/repositories/{unique('nobody')}"), 404, "NO_SUCH_ACCOUNT")
    api_error(
        dev.client.get(f"{API}/repositories", params={"pageSize": 1001}), 400, "INVALID_PARAMETERS"
    )


def test_get_patch_delete(user, make_user):
    c = user.client
    repo = create_repo(c, user.name)
    r = c.patch(
        f"{API}/repositories/{repo}", json={"shortDescription": "new", "visibility": "public"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["shortDescription"] == "new" and r.json()["visibility"] == "public"
    other = make_user()
    assert other.client.get(f"{API}/repositories/{repo}").status_code == 200
    r = c.patch(f"{API}/repositories/{repo}", json={"visibility": "private"})
    assert r.json()["visibility"] == "private"
    api_error(other.client.get(f"{API}/repositories/{repo}"), 404, "NO_SUCH_REPOSITORY")
    api_error(
        c.patch(f"{API}/repositories/{repo}", json={"visibility": "hidden"}),
        400,
        "INVALID_PARAMETERS",
    )
    api_error(
        c.patch(f"{API}/repositories/{repo}", json={"name": "renamed"}), 400, "INVALID_PARAMETERS"
    )
    assert c.get(f"{API}/repositories/{repo}").json()["shortDescription"] == "new"

    assert c.delete(f"{API}/repositories/{repo}").status_code == 204
    api_error(c.get(f"{API}/repositories/{repo}"), 404, "NO_SUCH_REPOSITORY")
    api_error(c.delete(f"{API}/repositories/{repo}"), 404, "NO_SUCH_REPOSITORY")


def test_deleted_repository_is_gone_from_the_registry(user):
    repo = f"{user.name}/gone"
    image = push_image(user.client, repo)
    assert user.client.delete(f"{API}/repositories/{repo}").status_code == 204
    r = user.client.get(f"/v2/{repo}/manifests/{image.digest}")
    assert r.status_code == 404
    assert user.client.get(f"/v2/{repo}/tags/list").status_code == 404
    # Pushing again creates a fresh, empty repository.
    push_image(user.client, repo, "again")
    assert user.client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["again"]


def test_tags_report_digest_size_author_and_times(admin, team_member):
    org, team, dev = team_member.org, team_member.team, team_member.member
    repo = create_repo(admin, org)
    grant_repo(admin, repo, team, "read-write")
    first = push_image(admin, repo, "v1", layer_count=3, layer_size=3000)
    push_image(dev.client, repo, "v2", docker=True)

    r = dev.client.get(f"{API}/repositories/{repo}/tags")
    assert r.status_code == 200, r.text
    tags = {t["name"]: t for t in r.json()}
    assert set(tags) == {"v1", "v2"}
    v1 = tags["v1"]
    assert v1["digest"] == first.digest
    assert v1["author"] == "admin"
    assert tags["v2"]["author"] == dev.name
    assert tags["v2"]["mediaType"] == DOCKER_MANIFEST
    layers = 3 * 3000
    assert v1["size"] >= layers + len(first.config) > 0
    assert v1["size"] == layers + len(first.config) + len(first.body)
    assert v1["manifestSize"] == len(first.body)
    created, updated = parse_time(v1["createdAt"]), parse_time(v1["updatedAt"])
    assert created <= updated

    one = dev.client.get(f"{API}/repositories/{repo}/tags/v1")
    assert one.status_code == 200 and one.json() == v1

    # Re-pushing a tag moves it: new digest and author, updatedAt advances, createdAt stays.
    time.sleep(0.01)
    second = push_image(dev.client, repo, "v1")
    moved = dev.client.get(f"{API}/repositories/{repo}/tags/v1").json()
    assert moved["digest"] == second.digest != first.digest
    assert moved["author"] == dev.name
    assert moved["createdAt"] == v1["createdAt"]
    assert parse_time(moved["updatedAt"]) > updated

    api_error(dev.client.get(f"{API}/repositories/{repo}/tags/nope"), 404, "NO_SUCH_TAG")
    api_error(dev.client.delete(f"{API}/repositories/{repo}/tags/nope"), 404, "NO_SUCH_TAG")
    assert dev.client.delete(f"{API}/repositories/{repo}/tags/v1").status_code == 204
    api_error(dev.client.get(f"{API}/repositories/{repo}/tags/v1"), 404, "NO_SUCH_TAG")
    assert admin.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v2"]
    # The manifest itself stays (only the tag is gone).
    assert (
        admin.get(
            f"/v2/{repo}/manifests/{second.digest}",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        ).status_code
        == 200
    )


def test_index_tag_size_is_the_index_itself(user):
    repo = f"{user.name}/multi"
    image = push_image(user.client, repo, None)
    body = canonical(
        index_manifest([image.descriptor(platform={"os": "linux", "architecture": "amd64"})])
    )
    assert put_manifest(user.client, repo, "multi", body, OCI_INDEX).status_code == 201
    tag = user.client.get(f"{API}/repositories/{repo}/tags/multi").json()
    assert tag["digest"] == sha256(body)
    assert tag["mediaType"] == OCI_INDEX
    assert tag["size"] == len(body)


def test_tag_list_pagination(user):
    repo = f"{user.name}/many"
    image = push_image(user.client, repo, "t0")
    for i in range(1, 5):
        assert put_manifest(user.client, repo, f"t{i}", image.body).status_code == 201
    first = user.client.get(f"{API}/repositories/{repo}/tags", params={"pageSize": 2})
    assert [t["name"] for t in first.json()] == ["t0", "t1"]
    assert first.headers["x-next-page-start"] == "t2"
    last = user.client.get(
        f"{API}/repositories/{repo}/tags", params={"pageSize": 3, "pageStart": "t2"}
    )
    assert [t["name"] for t in last.json()] == ["t2", "t3", "t4"]
    assert "x-next-page-start" not in last.headers


@pytest.mark.parametrize("level", ["read-only", "read-write"])
def test_tag_deletion_needs_read_write(admin, team_member, level):
    repo = create_repo(admin, team_member.org)
    push_image(admin, repo, "keep")
    grant_repo(admin, repo, team_member.team, level)
    r = team_member.member.client.delete(f"{API}/repositories/{repo}/tags/keep")
    if level == "read-only":
        api_error(r, 403, "NOT_AUTHORIZED")
        assert admin.get(f"/v2/{repo}/tags/list").json()["tags"] == ["keep"]
    else:
        assert r.status_code == 204
        assert admin.get(f"/v2/{repo}/tags/list").json()["tags"] == []
