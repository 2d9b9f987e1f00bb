"""Grants and levels: read-only, read-write and admin through team grants on repositories
and namespaces, owners, users' own namespaces, and what is hidden from whom."""

from __future__ import annotations

import pytest

from tests.api.helpers import push_image

from .helpers import (
    API,
    add_team_member,
    api_error,
    bearer,
    can_pull,
    create_repo,
    create_team,
    effective_level,
    grant_namespace,
    grant_repo,
    registry_code,
    set_member,
    token_get,
    try_push_blob,
    unique,
)


@pytest.fixture
def org_repo(admin, team_member):
    """(setup, repository) where the repository has one tag `latest`, pushed by the admin."""
    repo = create_repo(admin, team_member.org)
    push_image(admin, repo)
    return team_member, repo


def assert_read_only(client, repo):
    assert can_pull(client, repo) == 200
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest"]
    r = try_push_blob(client, repo)
    assert r.status_code == 403, r.text
    assert registry_code(r) == "DENIED"
    r = client.delete(f"/v2/{repo}/manifests/latest")
    assert r.status_code == 403 and registry_code(r) == "DENIED"
    assert client.get(f"{API}/repositories/{repo}").status_code == 200
    api_error(client.delete(f"{API}/repositories/{repo}/tags/latest"), 403, "NOT_AUTHORIZED")


def test_read_only_grant_pulls_but_does_not_push(admin, org_repo):
    setup, repo = org_repo
    c = setup.member.client
    assert can_pull(c, repo) == 404  # a plain org member sees nothing of a private repo
    assert effective_level(admin, setup.member.name, repo) == "none"
    grant_repo(admin, repo, setup.team, "read-only")
    assert_read_only(c, repo)
    api_error(
        c.patch(f"{API}/repositories/{repo}", json={"visibility": "public"}), 403, "NOT_AUTHORIZED"
    )
    assert effective_level(c, setup.member.name, repo) == "read-only"
    assert admin.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest"]


def test_read_write_grant_pushes_and_deletes_tags_but_does_not_administer(admin, org_repo):
    setup, repo = org_repo
    c = setup.member.client
    grant_repo(admin, repo, setup.team, "read-write")
    assert effective_level(c, setup.member.name, repo) == "read-write"
    assert can_pull(c, repo) == 200
    push_image(c, repo, "v1")
    push_image(c, repo, "v2")
    r = c.delete(f"/v2/{repo}/manifests/v1")
    assert r.status_code == 202, r.text
    assert c.delete(f"{API}/repositories/{repo}/tags/v2").status_code == 204
    assert admin.get(f"/v2/{repo}/tags/list").json()["tags"] == ["latest"]

    for r in (
        c.patch(f"{API}/repositories/{repo}", json={"visibility": "public"}),
        c.patch(f"{API}/repositories/{repo}", json={"shortDescription": "mine"}),
        c.get(f"{API}/repositories/{repo}/teamAccess"),
        c.put(f"{API}/repositories/{repo}/teamAccess/{setup.team}", json={"accessLevel": "admin"}),
        c.delete(f"{API}/repositories/{repo}"),
    ):
        api_error(r, 403, "NOT_AUTHORIZED")
    repo_now = admin.get(f"{API}/repositories/{repo}").json()
    assert repo_now["visibility"] == "private" and repo_now["shortDescription"] == ""
    assert effective_level(admin, setup.member.name, repo) == "read-write"


def test_admin_grant_administers_the_repository(admin, org_repo, make_user):
    setup, repo = org_repo
    c = setup.member.client
    grant_repo(admin, repo, setup.team, "admin")
    assert effective_level(c, setup.member.name, repo) == "admin"
    r = c.patch(
        f"{API}/repositories/{repo}",
        json={"visibility": "public", "shortDescription": "s", "longDescription": "l"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["visibility"], r.json()["shortDescription"], r.json()["longDescription"]) == (
        "public",
        "s",
        "l",
    )
    # Another team of the organisation can now be given access by this repository admin.
    other_team = create_team(admin, setup.org)
    reader = make_user()
    add_team_member(admin, setup.org, other_team, reader.name)
    grant_repo(c, repo, other_team, "read-write")
    listed = c.get(f"{API}/repositories/{repo}/teamAccess").json()["teamAccessList"]
    assert {(g["team"]["name"], g["accessLevel"]) for g in listed} == {
        (setup.team, "admin"),
        (other_team, "read-write"),
    }
    push_image(reader.client, repo, "from-reader")
    assert c.delete(f"{API}/repositories/{repo}/teamAccess/{other_team}").status_code == 204
    api_error(
        c.delete(f"{API}/repositories/{repo}/teamAccess/{other_team}"), 404, "NO_SUCH_TEAM_ACCESS"
    )
    # ... but a repository admin is no namespace admin: no namespace grants, no new repos.
    api_error(
        c.put(
            f"{API}/repositoryNamespaces/{setup.org}/teamAccess/{setup.team}",
            json={"accessLevel": "admin"},
        ),
        403,
        "NOT_AUTHORIZED",
    )
    api_error(
        c.post(f"{API}/repositories/{setup.org}", json={"name": unique("r")}), 403, "NOT_AUTHORIZED"
    )
    r = c.delete(f"{API}/repositories/{repo}")
    assert r.status_code == 204, r.text
    api_error(admin.get(f"{API}/repositories/{repo}"), 404, "NO_SUCH_REPOSITORY")
    assert admin.get(f"/v2/{repo}/tags/list").status_code == 404


def test_namespace_grant_covers_every_repository_including_later_ones(admin, team_member):
    org, team, c = team_member.org, team_member.team, team_member.member.client
    before = create_repo(admin, org)
    push_image(admin, before)
    grant_namespace(admin, org, team, "read-only")
    r = admin.get(f"{API}/repositoryNamespaces/{org}/teamAccess/{team}")
    assert r.status_code == 200 and r.json()["accessLevel"] == "read-only"
    listed = admin.get(f"{API}/repositoryNamespaces/{org}/teamAccess").json()["teamAccessList"]
    assert [(g["team"]["name"], g["accessLevel"]) for g in listed] == [(team, "read-only")]

    # A repository created later is covered as soon as it exists (the member even asked for
    # it before: a refusal about a missing repository must not linger).
    later = unique("later")
    assert can_pull(c, f"{org}/{later}") == 404
    after = create_repo(admin, org, later)
    push_image(admin, after)
    for repo in (before, after):
        assert_read_only(c, repo)
        assert effective_level(c, team_member.member.name, repo) == "read-only"
    # A namespace read grant does not allow creating repositories.
    r = try_push_blob(c, f"{org}/{unique('new')}")
    assert r.status_code == 403 and registry_code(r) == "DENIED"

    grant_namespace(admin, org, team, "read-write")
    push_image(c, before, "v2")
    # Creating a repository by push needs admin on the namespace, not just read-write.
    r = try_push_blob(c, f"{org}/{unique('new')}")
    assert r.status_code == 403 and registry_code(r) == "DENIED"
    api_error(
        c.post(f"{API}/repositories/{org}", json={"name": unique("r")}), 403, "NOT_AUTHORIZED"
    )

    grant_namespace(admin, org, team, "admin")
    created = f"{org}/{unique('new')}"
    push_image(c, created)
    assert admin.get(f"{API}/repositories/{created}").json()["visibility"] == "private"
    create_repo(c, org)


def test_highest_grant_wins(admin, team_member, make_user):
    org, team, member = team_member.org, team_member.team, team_member.member
    repo = create_repo(admin, org)
    push_image(admin, repo)

    grant_namespace(admin, org, team, "read-only")
    grant_repo(admin, repo, team, "read-write")
    assert effective_level(admin, member.name, repo) == "read-write"
    push_image(member.client, repo, "rw")

    # The other way round: a weaker repository grant does not lower a namespace grant.
    grant_namespace(admin, org, team, "read-write")
    grant_repo(admin, repo, team, "read-only")
    assert effective_level(admin, member.name, repo) == "read-write"
    push_image(member.client, repo, "rw2")

    # Across teams: a member of two teams holds the higher of their grants.
    grant_namespace(admin, org, team, "read-only")
    strong = create_team(admin, org)
    add_team_member(admin, org, strong, member.name)
    grant_repo(admin, repo, strong, "admin")
    assert effective_level(admin, member.name, repo) == "admin"
    r = member.client.patch(f"{API}/repositories/{repo}", json={"shortDescription": "x"})
    assert r.status_code == 200

    # A public repository gives everyone read-only, no more.
    outsider = make_user()
    assert can_pull(outsider.client, repo) == 404
    r = member.client.patch(f"{API}/repositories/{repo}", json={"visibility": "public"})
    assert r.status_code == 200
    assert can_pull(outsider.client, repo) == 200
    assert effective_level(admin, outsider.name, repo) == "read-only"
    assert try_push_blob(outsider.client, repo).status_code == 403


def test_revoking_takes_effect_immediately(admin, org_repo):
    setup, repo = org_repo
    c = setup.member.client
    grant_repo(admin, repo, setup.team, "read-write")
    assert can_pull(c, repo) == 200
    assert try_push_blob(c, repo).status_code == 202
    # A bearer token obtained while the grant held is no key once it is gone.
    token = token_get(c, [f"repository:{repo}:pull,push"]).json()["token"]
    assert c.get(f"/v2/{repo}/tags/list", **bearer(token)).status_code == 200

    r = admin.delete(f"{API}/repositories/{repo}/teamAccess/{setup.team}")
    assert r.status_code == 204
    assert can_pull(c, repo) == 404
    assert try_push_blob(c, repo).status_code == 403
    r = c.get(f"/v2/{repo}/tags/list", **bearer(token))
    assert r.status_code == 401, r.text
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert effective_level(admin, setup.member.name, repo) == "none"

    # The same for namespace grants.
    grant_namespace(admin, setup.org, setup.team, "read-only")
    assert can_pull(c, repo) == 200
    r = admin.delete(f"{API}/repositoryNamespaces/{setup.org}/teamAccess/{setup.team}")
    assert r.status_code == 204
    assert can_pull(c, repo) == 404
    api_error(
        admin.get(f"{API}/repositoryNamespaces/{setup.org}/teamAccess/{setup.team}"),
        404,
        "NO_SUCH_NAMESPACE_TEAM_ACCESS",
    )

    # And for leaving the team.
    grant_repo(admin, repo, setup.team, "read-only")
    assert can_pull(c, repo) == 200
    r = admin.delete(f"{API}/accounts/{setup.org}/teams/{setup.team}/members/{setup.member.name}")
    assert r.status_code == 204
    assert can_pull(c, repo) == 404


def test_repository_access_view(admin, org_repo, make_user):
    setup, repo = org_repo
    member = setup.member
    grant_repo(admin, repo, setup.team, "read-only")
    r = member.client.get(f"{API}/accounts/{member.name}/repositoryAccess/{repo}")
    assert r.status_code == 200
    assert r.json() == {"user": member.name, "repository": repo, "accessLevel": "read-only"}
    # Someone else may not ask about the member's access unless they administer the repo.
    other = make_user()
    api_error(
        other.client.get(f"{API}/accounts/{member.name}/repositoryAccess/{repo}"),
        404,
        "NO_SUCH_REPOSITORY",
    )
    api_error(
        member.client.get(f"{API}/accounts/{other.name}/repositoryAccess/{repo}"),
        403,
        "NOT_AUTHORIZED",
    )
    # A user asking about a repository they cannot see learns nothing.
    api_error(
        other.client.get(f"{API}/accounts/{other.name}/repositoryAccess/{repo}"),
        404,
        "NO_SUCH_REPOSITORY",
    )
    api_error(
        admin.get(f"{API}/accounts/{member.name}/repositoryAccess/{setup.org}/{unique()}"),
        404,
        "NO_SUCH_REPOSITORY",
    )
    api_error(admin.get(f"{API}/accounts/{unique()}/repositoryAccess/{repo}"), 404, "NO_SUCH_USER")
    assert effective_level(admin, "admin", repo) == "admin"


def test_org_owner_administers_every_org_repository(admin, make_user, make_org):
    org = make_org()
    owner, dev = make_user(), make_user()
    set_member(admin, org, owner.name, owner=True)
    repo = create_repo(admin, org)
    push_image(admin, repo)
    assert effective_level(owner.client, owner.name, repo) == "admin"
    push_image(owner.client, repo, "by-owner")
    r = owner.client.patch(f"{API}/repositories/{repo}", json={"visibility": "public"})
    assert r.status_code == 200
    team = create_team(owner.client, org)
    add_team_member(owner.client, org, team, dev.name)
    grant_repo(owner.client, repo, team, "read-write")
    grant_namespace(owner.client, org, team, "read-only")
    assert effective_level(owner.client, dev.name, repo) == "read-write"
    created = create_repo(owner.client, org)
    push_image(owner.client, f"{org}/{unique('pushed')}")
    assert owner.client.delete(f"{API}/repositories/{created}").status_code == 204
    assert owner.client.delete(f"{API}/repositories/{repo}").status_code == 204


def test_own_namespace_is_admin_and_others_are_closed(make_user, anon):
    alice, bob = make_user(), make_user()
    private = f"{alice.name}/secret"
    push_image(alice.client, private)
    assert effective_level(alice.client, alice.name, private) == "admin"
    public = create_repo(alice.client, alice.name, "open", visibility="public")
    push_image(alice.client, public)
    r = alice.client.patch(f"{API}/repositories/{private}", json={"shortDescription": "mine"})
    assert r.status_code == 200

    # Bob cannot push into Alice's namespace: not into a new repo, nor an existing one.
    for target in (f"{alice.name}/{unique('new')}", private, public):
        r = try_push_blob(bob.client, target)
        assert r.status_code == 403, (target, r.text)
        assert registry_code(r) == "DENIED"
    api_error(
        bob.client.post(f"{API}/repositories/{alice.name}", json={"name": unique("r")}),
        403,
        "NOT_AUTHORIZED",
    )
    # He can read her public repository, but not change it.
    assert can_pull(bob.client, public) == 200
    api_error(
        bob.client.patch(f"{API}/repositories/{public}", json={"shortDescription": "x"}),
        403,
        "NOT_AUTHORIZED",
    )
    assert can_pull(anon, public) == 200


def test_private_repository_is_indistinguishable_from_a_missing_one(make_user):
    alice, bob = make_user(), make_user()
    private = f"{alice.name}/secret"
    image = push_image(alice.client, private)
    missing = f"{alice.name}/{unique('nothing')}"
    c = bob.client

    def v2(name):
        return [
            c.get(f"/v2/{name}/manifests/latest"),
            c.head(f"/v2/{name}/manifests/latest"),
            c.get(f"/v2/{name}/manifests/{image.digest}"),
            c.get(f"/v2/{name}/tags/list"),
            c.get(f"/v2/{name}/blobs/{image.descriptor()['digest']}"),
        ]

    for hidden, absent in zip(v2(private), v2(missing), strict=True):
        assert hidden.status_code == absent.status_code == 404, (hidden.text, absent.text)
        if hidden.request.method == "GET":
            assert registry_code(hidden) == registry_code(absent) == "NAME_UNKNOWN"
            hidden_msg = hidden.json()["errors"][0]["message"].replace(private, "X")
            absent_msg = absent.json()["errors"][0]["message"].replace(missing, "X")
            assert hidden_msg == absent_msg

    for suffix, method in (
        ("", "GET"),
        ("/tags", "GET"),
        ("/tags/latest", "GET"),
        ("/teamAccess", "GET"),
        ("", "DELETE"),
        ("/tags/latest", "DELETE"),
    ):
        hidden = c.request(method, f"{API}/repositories/{private}{suffix}")
        absent = c.request(method, f"{API}/repositories/{missing}{suffix}")
        api_error(hidden, 404, "NO_SUCH_REPOSITORY")
        api_error(absent, 404, "NO_SUCH_REPOSITORY")
        assert hidden.json()["errors"][0]["message"].replace(private, "X") == absent.json()[
            "errors"
        ][0]["message"].replace(missing, "X")
    r = c.patch(f"{API}/repositories/{private}", json={"visibility": "public"})
    api_error(r, 404, "NO_SUCH_REPOSITORY")
    assert can_pull(alice.client, private) == 200


def test_team_grants_need_an_organization_and_a_valid_level(admin, user, team_member):
    repo = create_repo(user.client, user.name)
    api_error(
        admin.put(
            f"{API}/repositories/{repo}/teamAccess/{team_member.team}",
            json={"accessLevel": "admin"},
        ),
        400,
        "NOT_AN_ORGANIZATION",
    )
    api_error(
        admin.put(
            f"{API}/repositoryNamespaces/{user.name}/teamAccess/x", json={"accessLevel": "admin"}
        ),
        400,
        "NOT_AN_ORGANIZATION",
    )
    org_repo = create_repo(admin, team_member.org)
    r = admin.put(
        f"{API}/repositories/{org_repo}/teamAccess/{team_member.team}",
        json={"accessLevel": "owner"},
    )
    assert r.status_code == 400
    api_error(
        admin.put(
            f"{API}/repositories/{org_repo}/teamAccess/{unique()}", json={"accessLevel": "admin"}
        ),
        404,
        "NO_SUCH_TEAM",
    )
    # A team of another organisation cannot be granted access here.
    other = admin.post(f"{API}/accounts", json={"name": unique("org"), "isOrg": True})
    foreign = create_repo(admin, other.json()["name"])
    api_error(
        admin.put(
            f"{API}/repositories/{foreign}/teamAccess/{team_member.team}",
            json={"accessLevel": "admin"},
        ),
        404,
        "NO_SUCH_TEAM",
    )


def test_team_repository_access_lists_grants(admin, team_member):
    org, team = team_member.org, team_member.team
    a, b = create_repo(admin, org, "a" + unique()), create_repo(admin, org, "b" + unique())
    grant_repo(admin, a, team, "read-only")
    grant_repo(admin, b, team, "admin")
    r = team_member.member.client.get(f"{API}/accounts/{org}/teams/{team}/repositoryAccess")
    assert r.status_code == 200
    assert [(g["repository"], g["accessLevel"]) for g in r.json()["repositoryAccessList"]] == [
        (a, "read-only"),
        (b, "admin"),
    ]


def test_only_owners_manage_namespace_grants(admin, team_member, make_user):
    """A team with namespace-wide admin administers every repository, but the namespace's
    grants are the owners' (and system admins')."""
    org, team, member = team_member.org, team_member.team, team_member.member
    other = create_team(admin, org)
    grant_namespace(admin, org, team, "admin")
    grant_namespace(admin, org, other, "read-only")
    repo = create_repo(member.client, org)
    grant_repo(member.client, repo, other, "read-write")
    c = member.client
    api_error(c.get(f"{API}/repositoryNamespaces/{org}/teamAccess"), 403, "NOT_AUTHORIZED")
    api_error(
        c.put(
            f"{API}/repositoryNamespaces/{org}/teamAccess/{other}", json={"accessLevel": "admin"}
        ),
        403,
        "NOT_AUTHORIZED",
    )
    api_error(
        c.delete(f"{API}/repositoryNamespaces/{org}/teamAccess/{other}"), 403, "NOT_AUTHORIZED"
    )
    r = admin.get(f"{API}/repositoryNamespaces/{org}/teamAccess/{other}")
    assert r.json()["accessLevel"] == "read-only"
    # An owner may.
    owner = make_user()
    set_member(admin, org, owner.name, owner=True)
    grant_namespace(owner.client, org, other, "read-write")
    assert (
        owner.client.delete(f"{API}/repositoryNamespaces/{org}/teamAccess/{other}").status_code
        == 204
    )
