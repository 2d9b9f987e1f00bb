"""Organisations and teams: owners manage them, members see them, others are refused."""

from __future__ import annotations

import pytest

from tests.api.helpers import push_image

from .helpers import (
    API,
    add_team_member,
    api_error,
    can_pull,
    create_repo,
    create_team,
    grant_repo,
    set_member,
    unique,
)


@pytest.fixture
def org_roles(admin, make_user, make_org):
    """An organisation with an owner, a plain member and an outsider."""
    org = make_org()
    owner, member, outsider = make_user(), make_user(), make_user()
    set_member(admin, org, owner.name, owner=True)
    set_member(admin, org, member.name)
    return org, owner, member, outsider


def member_names(client, org):
    r = client.get(f"{API}/accounts/{org}/members", params={"pageSize": 1000})
    assert r.status_code == 200, r.text
    return {m["member"]["name"]: m["isOwner"] for m in r.json()}


def team_member_names(client, org, team):
    r = client.get(f"{API}/accounts/{org}/teams/{team}/members", params={"pageSize": 1000})
    assert r.status_code == 200, r.text
    return {a["name"] for a in r.json()}


def test_owner_manages_members_and_teams(org_roles, make_user):
    org, owner, member, outsider = org_roles
    c = owner.client
    assert member_names(c, org) == {owner.name: True, member.name: False}

    newcomer = make_user()
    set_member(c, org, newcomer.name)
    team = create_team(c, org, description="builders")
    add_team_member(c, org, team, newcomer.name)
    add_team_member(c, org, team, member.name)
    assert team_member_names(c, org, team) == {newcomer.name, member.name}

    # Owners can make other owners, who then manage the organisation too.
    set_member(c, org, newcomer.name, owner=True)
    assert member_names(c, org)[newcomer.name] is True
    second = create_team(newcomer.client, org)
    assert newcomer.client.delete(f"{API}/accounts/{org}/teams/{second}").status_code == 204

    r = c.delete(f"{API}/accounts/{org}/teams/{team}/members/{member.name}")
    assert r.status_code == 204, r.text
    assert team_member_names(c, org, team) == {newcomer.name}
    api_error(
        c.delete(f"{API}/accounts/{org}/teams/{team}/members/{member.name}"), 404, "NO_SUCH_MEMBER"
    )
    r = c.get(f"{API}/accounts/{org}/members/{member.name}")
    assert r.status_code == 200 and r.json()["isOwner"] is False
    assert c.delete(f"{API}/accounts/{org}/members/{member.name}").status_code == 204
    api_error(c.get(f"{API}/accounts/{org}/members/{member.name}"), 404, "NO_SUCH_MEMBER")
    api_error(c.delete(f"{API}/accounts/{org}/members/{member.name}"), 404, "NO_SUCH_MEMBER")
    # An owner of one organisation has no say in another.
    api_error(
        c.post(f"{API}/accounts/{outsider.name}x/teams", json={"name": "t"}),
        404,
        "NO_SUCH_ORGANIZATION",
    )


def test_plain_members_see_but_do_not_change(org_roles, admin):
    org, owner, member, outsider = org_roles
    team = create_team(owner.client, org)
    c = member.client
    listed = c.get(f"{API}/accounts/{org}/teams")
    assert listed.status_code == 200 and team in {t["name"] for t in listed.json()}
    assert c.get(f"{API}/accounts/{org}/teams/{team}").json()["name"] == team
    assert team_member_names(c, org, team) == set()
    assert member.name in member_names(c, org)
    # A team's grants name private repositories: not for members outside the team.
    api_error(c.get(f"{API}/accounts/{org}/teams/{team}/repositoryAccess"), 403, "NOT_AUTHORIZED")
    assert owner.client.get(f"{API}/accounts/{org}/teams/{team}/repositoryAccess").is_success

    api_error(
        c.post(f"{API}/accounts/{org}/teams", json={"name": unique("t")}), 403, "NOT_AUTHORIZED"
    )
    api_error(
        c.patch(f"{API}/accounts/{org}/teams/{team}", json={"description": "x"}),
        403,
        "NOT_AUTHORIZED",
    )
    api_error(c.delete(f"{API}/accounts/{org}/teams/{team}"), 403, "NOT_AUTHORIZED")
    api_error(
        c.put(f"{API}/accounts/{org}/teams/{team}/members/{member.name}"), 403, "NOT_AUTHORIZED"
    )
    api_error(
        c.put(f"{API}/accounts/{org}/members/{outsider.name}", json={"isOwner": False}),
        403,
        "NOT_AUTHORIZED",
    )
    # Nor can a member promote itself.
    api_error(
        c.put(f"{API}/accounts/{org}/members/{member.name}", json={"isOwner": True}),
        403,
        "NOT_AUTHORIZED",
    )
    api_error(c.delete(f"{API}/accounts/{org}/members/{owner.name}"), 403, "NOT_AUTHORIZED")
    assert member_names(admin, org) == {owner.name: True, member.name: False}
    assert team_member_names(admin, org, team) == set()


def test_non_members_are_refused(org_roles):
    org, owner, _, outsider = org_roles
    team = create_team(owner.client, org)
    c = outsider.client
    for path in (
        f"{API}/accounts/{org}/teams",
        f"{API}/accounts/{org}/teams/{team}",
        f"{API}/accounts/{org}/teams/{team}/members",
        f"{API}/accounts/{org}/members",
        f"{API}/accounts/{org}/members/{owner.name}",
        f"{API}/accounts/{org}/teams/{team}/repositoryAccess",
    ):
        api_error(c.get(path), 403, "NOT_AUTHORIZED")
    api_error(c.post(f"{API}/accounts/{org}/teams", json={"name": "x"}), 403, "NOT_AUTHORIZED")
    api_error(
        c.put(f"{API}/accounts/{org}/members/{outsider.name}", json={"isOwner": True}),
        403,
        "NOT_AUTHORIZED",
    )


def test_anonymous_is_401_on_org_endpoints(org_roles, anon):
    org = org_roles[0]
    r = anon.get(f"{API}/accounts/{org}/teams")
    api_error(r, 401, "NOT_AUTHENTICATED")
    assert r.headers["www-authenticate"].startswith("Basic ")


def test_team_crud(org_roles):
    org, owner, *_ = org_roles
    c = owner.client
    name = unique("Team.")
    r = c.post(f"{API}/accounts/{org}/teams", json={"name": name, "description": "first"})
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "first" and r.json()["orgName"] == org
    api_error(c.post(f"{API}/accounts/{org}/teams", json={"name": name}), 409, "TEAM_EXISTS")
    for bad in ("", "-lead", "a b", "x" * 101, "a/b"):
        r = c.post(f"{API}/accounts/{org}/teams", json={"name": bad})
        assert r.status_code == 400, (bad, r.text)

    r = c.patch(f"{API}/accounts/{org}/teams/{name}", json={"description": "second"})
    assert r.status_code == 200 and r.json()["description"] == "second"
    other = create_team(c, org)
    api_error(
        c.patch(f"{API}/accounts/{org}/teams/{name}", json={"name": other}), 409, "TEAM_EXISTS"
    )
    renamed = unique("renamed")
    r = c.patch(f"{API}/accounts/{org}/teams/{name}", json={"name": renamed})
    assert r.status_code == 200 and r.json()["name"] == renamed
    api_error(c.get(f"{API}/accounts/{org}/teams/{name}"), 404, "NO_SUCH_TEAM")
    assert c.get(f"{API}/accounts/{org}/teams/{renamed}").json()["description"] == "second"

    listed = c.get(f"{API}/accounts/{org}/teams", params={"pageSize": 1})
    assert len(listed.json()) == 1 and "x-next-page-start" in listed.headers

    assert c.delete(f"{API}/accounts/{org}/teams/{renamed}").status_code == 204
    api_error(c.get(f"{API}/accounts/{org}/teams/{renamed}"), 404, "NO_SUCH_TEAM")
    api_error(c.delete(f"{API}/accounts/{org}/teams/{renamed}"), 404, "NO_SUCH_TEAM")
    names = {t["name"] for t in c.get(f"{API}/accounts/{org}/teams").json()}
    assert names == {other}


def test_teams_only_in_organizations(admin, user):
    api_error(
        admin.post(f"{API}/accounts/{user.name}/teams", json={"name": "t"}),
        404,
        "NO_SUCH_ORGANIZATION",
    )
    api_error(
        admin.put(f"{API}/accounts/{user.name}/members/{user.name}", json={"isOwner": True}),
        404,
        "NO_SUCH_ORGANIZATION",
    )


def test_adding_to_a_team_makes_an_org_member(org_roles, make_user):
    org, owner, *_ = org_roles
    team = create_team(owner.client, org)
    newcomer = make_user()
    add_team_member(owner.client, org, team, newcomer.name)
    assert member_names(owner.client, org)[newcomer.name] is False
    # Adding twice is harmless.
    add_team_member(owner.client, org, team, newcomer.name)
    assert team_member_names(owner.client, org, team) == {newcomer.name}
    api_error(
        owner.client.put(f"{API}/accounts/{org}/teams/{team}/members/{unique()}"),
        404,
        "NO_SUCH_USER",
    )
    api_error(
        owner.client.put(f"{API}/accounts/{org}/teams/{team}/members/{org}"), 404, "NO_SUCH_USER"
    )


def test_removing_an_org_member_removes_them_from_teams_and_grants(org_roles, make_user):
    org, owner, *_ = org_roles
    c = owner.client
    dev = make_user()
    team_a, team_b = create_team(c, org), create_team(c, org)
    add_team_member(c, org, team_a, dev.name)
    add_team_member(c, org, team_b, dev.name)
    repo = create_repo(c, org)
    push_image(c, repo)
    grant_repo(c, repo, team_a, "read-only")
    assert can_pull(dev.client, repo) == 200

    assert c.delete(f"{API}/accounts/{org}/members/{dev.name}").status_code == 204
    assert team_member_names(c, org, team_a) == set()
    assert team_member_names(c, org, team_b) == set()
    assert dev.name not in member_names(c, org)
    assert can_pull(dev.client, repo) == 404
    me = dev.client.get(f"{API}/accounts/me").json()
    assert me["organizations"] == []
    # Re-adding to the organisation does not bring back team memberships.
    set_member(c, org, dev.name)
    assert team_member_names(c, org, team_a) == set()
    assert can_pull(dev.client, repo) == 404


def test_deleting_a_team_removes_its_grants(org_roles, make_user):
    org, owner, *_ = org_roles
    c = owner.client
    dev = make_user()
    team = create_team(c, org)
    add_team_member(c, org, team, dev.name)
    repo = create_repo(c, org)
    push_image(c, repo)
    grant_repo(c, repo, team, "read-write")
    assert can_pull(dev.client, repo) == 200
    assert c.delete(f"{API}/accounts/{org}/teams/{team}").status_code == 204
    assert can_pull(dev.client, repo) == 404
    # A new team of the same name does not inherit the old grant.
    create_team(c, org, team)
    add_team_member(c, org, team, dev.name)
    assert can_pull(dev.client, repo) == 404
    assert c.get(f"{API}/repositories/{repo}/teamAccess").json()["teamAccessList"] == []


def test_demoted_owner_loses_management(org_roles):
    org, owner, member, _ = org_roles
    set_member(owner.client, org, member.name, owner=True)
    create_team(member.client, org)
    set_member(owner.client, org, member.name, owner=False)
    api_error(
        member.client.post(f"{API}/accounts/{org}/teams", json={"name": unique("t")}),
        403,
        "NOT_AUTHORIZED",
    )


def test_a_recreated_user_inherits_no_memberships(admin, org_roles, make_user):
    org, owner, *_ = org_roles
    dev = make_user()
    team = create_team(owner.client, org)
    add_team_member(owner.client, org, team, dev.name)
    set_member(owner.client, org, dev.name, owner=True)
    repo = create_repo(owner.client, org)
    push_image(owner.client, repo)
    grant_repo(owner.client, repo, team, "read-only")
    assert admin.delete(f"{API}/accounts/{dev.name}").status_code == 204
    assert dev.name not in member_names(owner.client, org)
    assert team_member_names(owner.client, org, team) == set()

    r = admin.post(f"{API}/accounts", json={"name": dev.name, "password": dev.password})
    assert r.status_code == 201
    assert dev.client.get(f"{API}/accounts/me").json()["organizations"] == []
    assert can_pull(dev.client, repo) == 404


def test_renaming_a_team_keeps_its_members_and_grants(org_roles, make_user):
    org, owner, *_ = org_roles
    dev = make_user()
    team = create_team(owner.client, org)
    add_team_member(owner.client, org, team, dev.name)
    repo = create_repo(owner.client, org)
    push_image(owner.client, repo)
    grant_repo(owner.client, repo, team, "read-only")
    renamed = unique("renamed")
    r = owner.client.patch(f"{API}/accounts/{org}/teams/{team}", json={"name": renamed})
    assert r.status_code == 200
    assert team_member_names(owner.client, org, renamed) == {dev.name}
    assert can_pull(dev.client, repo) == 200
    grants = owner.client.get(f"{API}/repositories/{repo}/teamAccess").json()["teamAccessList"]
    assert [(g["team"]["name"], g["accessLevel"]) for g in grants] == [(renamed, "read-only")]
