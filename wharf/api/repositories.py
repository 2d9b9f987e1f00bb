"""/api/v0/repositories and /api/v0/repositoryNamespaces: repositories, tags, grants."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from wharf.api import models as m
from wharf.api import schemas as S
from wharf.api.deps import Page, client, identity, page, paged, services
from wharf.auth.identity import Identity

router = APIRouter(prefix="/api/v0", tags=["repositories"])
Actor = Depends(identity)


@router.get(
    "/repositories",
    summary="Repositories the caller may see",
    response_model=None,
    responses=S.answers(list[S.Repository]),
)
def list_repositories(
    request: Request, p: Page = Depends(page), actor: Identity = Actor
) -> JSONResponse:
    items = services(request).repositories.list(actor, None, p.start, p.size + 1)
    return paged(items, p, "fullName")


@router.get(
    "/repositories/{namespace}",
    summary="Repositories of a namespace",
    response_model=None,
    responses=S.answers(list[S.Repository]),
)
def list_namespace(
    request: Request, namespace: str, p: Page = Depends(page), actor: Identity = Actor
) -> JSONResponse:
    items = services(request).repositories.list(actor, namespace, p.start, p.size + 1)
    return paged(items, p, "fullName")


@router.post(
    "/repositories/{namespace}",
    status_code=201,
    summary="Create a repository",
    response_model=None,
    responses=S.answers(S.Repository, 403, 409, status=201),
)
def create_repository(
    request: Request, namespace: str, body: m.NewRepository, actor: Identity = Actor
) -> dict:
    data = body.model_dump()
    return services(request).repositories.create(actor, namespace, data, client(request))


@router.get(
    "/repositories/{namespace}/{repo}",
    summary="Get a repository",
    response_model=None,
    responses=S.answers(S.Repository),
)
def get_repository(request: Request, namespace: str, repo: str, actor: Identity = Actor) -> dict:
    return services(request).repositories.get(actor, namespace, repo)


@router.patch(
    "/repositories/{namespace}/{repo}",
    summary="Change visibility or descriptions (admin level)",
    response_model=None,
    responses=S.answers(S.Repository, 403),
)
def update_repository(
    request: Request,
    namespace: str,
    repo: str,
    body: m.RepositoryChanges,
    actor: Identity = Actor,
) -> dict:
    return services(request).repositories.update(
        actor, namespace, repo, m.changes(body), client(request)
    )


@router.delete(
    "/repositories/{namespace}/{repo}",
    status_code=204,
    summary="Delete a repository (admin level); its blobs are freed by the next GC",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_repository(
    request: Request, namespace: str, repo: str, actor: Identity = Actor
) -> Response:
    services(request).repositories.delete(actor, namespace, repo, client(request))
    return Response(status_code=204)


@router.get(
    "/repositories/{namespace}/{repo}/tags",
    summary="Tags with digest, size, author",
    response_model=None,
    responses=S.answers(list[S.Tag]),
)
def list_tags(
    request: Request, namespace: str, repo: str, p: Page = Depends(page), actor: Identity = Actor
) -> JSONResponse:
    items = services(request).repositories.tags(actor, namespace, repo, p.start, p.size + 1)
    return paged(items, p, "name")


@router.get(
    "/repositories/{namespace}/{repo}/tags/{tag}",
    summary="One tag",
    response_model=None,
    responses=S.answers(S.Tag),
)
def get_tag(request: Request, namespace: str, repo: str, tag: str, actor: Identity = Actor) -> dict:
    return services(request).repositories.tag(actor, namespace, repo, tag)


@router.delete(
    "/repositories/{namespace}/{repo}/tags/{tag}",
    status_code=204,
    summary="Delete a tag",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_tag(
    request: Request, namespace: str, repo: str, tag: str, actor: Identity = Actor
) -> Response:
    services(request).repositories.delete_tag(actor, namespace, repo, tag, client(request))
    return Response(status_code=204)


@router.get(
    "/repositories/{namespace}/{repo}/teamAccess",
    summary="Team grants on a repository",
    response_model=None,
    responses=S.answers(S.RepositoryTeamAccess, 403),
)
def team_access(request: Request, namespace: str, repo: str, actor: Identity = Actor) -> dict:
    return services(request).repositories.team_access(actor, namespace, repo)


@router.put(
    "/repositories/{namespace}/{repo}/teamAccess/{team}",
    summary="Grant a team a level",
    response_model=None,
    responses=S.answers(S.TeamAccess, 403),
)
def set_team_access(
    request: Request,
    namespace: str,
    repo: str,
    team: str,
    body: m.Access,
    actor: Identity = Actor,
) -> dict:
    return services(request).repositories.set_team_access(
        actor, namespace, repo, team, body.accessLevel, client(request)
    )


@router.delete(
    "/repositories/{namespace}/{repo}/teamAccess/{team}",
    status_code=204,
    summary="Revoke a team's grant",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_team_access(
    request: Request, namespace: str, repo: str, team: str, actor: Identity = Actor
) -> Response:
    services(request).repositories.delete_team_access(actor, namespace, repo, team, client(request))
    return Response(status_code=204)


@router.get(
    "/repositoryNamespaces/{namespace}/teamAccess",
    tags=["repositoryNamespaces"],
    summary="Team grants on a whole organization namespace",
    response_model=None,
    responses=S.answers(S.NamespaceTeamAccess, 403),
)
def namespace_access(request: Request, namespace: str, actor: Identity = Actor) -> dict:
    return services(request).repositories.namespace_access(actor, namespace)


@router.get(
    "/repositoryNamespaces/{namespace}/teamAccess/{team}",
    tags=["repositoryNamespaces"],
    summary="One team's grant on a namespace",
    response_model=None,
    responses=S.answers(S.TeamAccess, 403),
)
def namespace_team_access(
    request: Request, namespace: str, team: str, actor: Identity = Actor
) -> dict:
    return services(request).repositories.namespace_team_access(actor, namespace, team)


@router.put(
    "/repositoryNamespaces/{namespace}/teamAccess/{team}",
    tags=["repositoryNamespaces"],
    summary="Grant a team a level on every repository of the namespace",
    response_model=None,
    responses=S.answers(S.TeamAccess, 403),
)
def set_namespace_team_access(
    request: Request, namespace: str, team: str, body: m.Access, actor: Identity = Actor
) -> dict:
    return services(request).repositories.set_namespace_team_access(
        actor, namespace, team, body.accessLevel, client(request)
    )


@router.delete(
    "/repositoryNamespaces/{namespace}/teamAccess/{team}",
    tags=["repositoryNamespaces"],
    status_code=204,
    summary="Revoke a namespace grant",
    response_model=None,
    responses=S.answers(None, 403),
)
def delete_namespace_team_access(
    request: Request, namespace: str, team: str, actor: Identity = Actor
) -> Response:
    services(request).repositories.delete_namespace_team_access(
        actor, namespace, team, client(request)
    )
    return Response(status_code=204)
