"""/api/v0/accounts: users, organisations, members, teams, and access views."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from wharf.api import models as m
from wharf.api import schemas as S
from wharf.api.deps import Page, client, identity, page, paged, services
from wharf.auth.identity import Identity

router = APIRouter(prefix="/api/v0/accounts", tags=["accounts"])
Actor = Depends(identity)


@router.get(
    "",
    summary="List accounts (users and organizations)",
    response_model=None,
    responses=S.answers(list[S.Account]),
)
def list_accounts(
    request: Request,
    filter: Literal["all", "users", "orgs", "admins", "inactive"] = "all",
    p: Page = Depends(page),
    actor: Identity = Actor,
) -> JSONResponse:
    items = services(request).accounts.list_accounts(actor, filter, p.start, p.size + 1)
    return paged(items, p, "name")


@router.post(
    "",
    status_code=201,
    summary="Create a user or an organization (admins)",
    response_model=None,
    responses=S.answers(S.Account, 403, 409, status=201),
)
def create_account(request: Request, body: m.NewAccount, actor: Identity = Actor) -> dict:
    data = m.changes(body)
    data.setdefault("name", body.name)
    return services(request).accounts.create_account(actor, data, client(request))


@router.get("/me", summary="The calling account", response_model=None, responses=S.answers(S.Me))
def me(request: Request, actor: Identity = Actor) -> dict:
    svc = services(request).accounts
    result = svc.get_account(actor, actor.username or "")
    result["organizations"] = [
        {"name": name, "isOwner": owner}
        for name, owner in svc.identities.organizations_of(actor.user_id or -1)
    ]
    return result


@router.get(
    "/{name}", summary="Get an account", response_model=None, responses=S.answers(S.Account)
)
def get_account(request: Request, name: str, actor: Identity = Actor) -> dict:
    return services(request).accounts.get_account(actor, name)


@router.patch(
    "/{name}",
    summary="Change an account (name, activation, admin, password)",
    response_model=None,
    responses=S.answers(S.Account, 403),
)
def update_account(
    request: Request, name: str, body: m.AccountChanges, actor: Identity = Actor
) -> dict:
    return services(request).accounts.update_account(actor, name, m.changes(body), client(request))


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete an account and its repositories",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_account(request: Request, name: str, actor: Identity = Actor) -> Response:
    services(request).accounts.delete_account(actor, name, client(request))
    return Response(status_code=204)


# -- organisation members ---------------------------------------------------------------------


@router.get(
    "/{org}/members",
    summary="Members of an organization",
    response_model=None,
    responses=S.answers(list[S.Member], 403),
)
def list_members(
    request: Request, org: str, p: Page = Depends(page), actor: Identity = Actor
) -> JSONResponse:
    items = services(request).accounts.list_members(actor, org, p.start, p.size + 1)
    return paged(items, p, lambda item: item["member"]["name"])


@router.get(
    "/{org}/members/{username}",
    summary="One member of an organization",
    response_model=None,
    responses=S.answers(S.Member, 403),
)
def get_member(request: Request, org: str, username: str, actor: Identity = Actor) -> dict:
    return services(request).accounts.get_member(actor, org, username)


@router.put(
    "/{org}/members/{username}",
    summary="Add a member, or make/unmake an owner",
    response_model=None,
    responses=S.answers(S.Member, 403),
)
def set_member(
    request: Request, org: str, username: str, body: m.Membership, actor: Identity = Actor
) -> dict:
    return services(request).accounts.set_member(
        actor, org, username, body.isOwner, client(request)
    )


@router.delete(
    "/{org}/members/{username}",
    status_code=204,
    summary="Remove a member",
    response_model=None,
    responses=S.answers(None, 403),
)
def remove_member(request: Request, org: str, username: str, actor: Identity = Actor) -> Response:
    services(request).accounts.remove_member(actor, org, username, client(request))
    return Response(status_code=204)


# -- teams ------------------------------------------------------------------------------------


@router.get(
    "/{org}/teams",
    summary="Teams of an organization",
    response_model=None,
    responses=S.answers(list[S.Team], 403),
)
def list_teams(
    request: Request, org: str, p: Page = Depends(page), actor: Identity = Actor
) -> JSONResponse:
    items = services(request).accounts.list_teams(actor, org, p.start, p.size + 1)
    return paged(items, p, "name")


@router.post(
    "/{org}/teams",
    status_code=201,
    summary="Create a team",
    response_model=None,
    responses=S.answers(S.Team, 403, 409, status=201),
)
def create_team(request: Request, org: str, body: m.NewTeam, actor: Identity = Actor) -> dict:
    data = m.changes(body)
    data.setdefault("name", body.name)
    return services(request).accounts.create_team(actor, org, data, client(request))


@router.get(
    "/{org}/teams/{team}",
    summary="Get a team",
    response_model=None,
    responses=S.answers(S.Team, 403),
)
def get_team(request: Request, org: str, team: str, actor: Identity = Actor) -> dict:
    return services(request).accounts.get_team(actor, org, team)


@router.patch(
    "/{org}/teams/{team}",
    summary="Change a team (name, description, LDAP group)",
    response_model=None,
    responses=S.answers(S.Team, 403, 409),
)
def update_team(
    request: Request, org: str, team: str, body: m.TeamChanges, actor: Identity = Actor
) -> dict:
    return services(request).accounts.update_team(
        actor, org, team, m.changes(body), client(request)
    )


@router.delete(
    "/{org}/teams/{team}",
    status_code=204,
    summary="Delete a team",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_team(request: Request, org: str, team: str, actor: Identity = Actor) -> Response:
    services(request).accounts.delete_team(actor, org, team, client(request))
    return Response(status_code=204)


@router.get(
    "/{org}/teams/{team}/members",
    summary="Members of a team",
    response_model=None,
    responses=S.answers(list[S.Account], 403),
)
def list_team_members(
    request: Request, org: str, team: str, p: Page = Depends(page), actor: Identity = Actor
) -> JSONResponse:
    items = services(request).accounts.list_team_members(actor, org, team, p.start, p.size + 1)
    return paged(items, p, "name")


@router.put(
    "/{org}/teams/{team}/members/{username}",
    summary="Add a user to a team",
    response_model=None,
    responses=S.answers(S.Account, 403),
)
def add_team_member(
    request: Request, org: str, team: str, username: str, actor: Identity = Actor
) -> dict:
    return services(request).accounts.add_team_member(actor, org, team, username, client(request))


@router.delete(
    "/{org}/teams/{team}/members/{username}",
    status_code=204,
    summary="Remove from a team",
    response_model=None,
    responses=S.answers(None, 403),
)
def remove_team_member(
    request: Request, org: str, team: str, username: str, actor: Identity = Actor
) -> Response:
    services(request).accounts.remove_team_member(actor, org, team, username, client(request))
    return Response(status_code=204)


@router.get(
    "/{org}/teams/{team}/repositoryAccess",
    summary="A team's repository grants",
    response_model=None,
    responses=S.answers(S.TeamRepositoryAccess, 403),
)
def team_repository_access(request: Request, org: str, team: str, actor: Identity = Actor) -> dict:
    return services(request).accounts.team_repository_access(actor, org, team)


@router.get(
    "/{user}/repositoryAccess/{namespace}/{repo}",
    summary="A user's effective access level on a repository",
    response_model=None,
    responses=S.answers(S.UserRepositoryAccess, 403),
)
def user_repository_access(
    request: Request, user: str, namespace: str, repo: str, actor: Identity = Actor
) -> dict:
    return services(request).repositories.user_access(actor, user, namespace, repo)
