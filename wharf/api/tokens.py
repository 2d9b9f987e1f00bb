"""/api/v0/api_tokens: personal access tokens. The secret is in the create response only."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from wharf.api import models as m
from wharf.api import schemas as S
from wharf.api.deps import Page, Time, client, identity, page, paged, services
from wharf.auth.identity import Identity

router = APIRouter(prefix="/api/v0/api_tokens", tags=["api_tokens"])
Actor = Depends(identity)


@router.get(
    "",
    summary="List tokens (yours; admins: anyone's, filter by username)",
    response_model=None,
    responses=S.answers(list[S.Token], 403),
)
def list_tokens(
    request: Request,
    username: str | None = Query(None, max_length=64),
    p: Page = Depends(page),
    actor: Identity = Actor,
) -> JSONResponse:
    items = services(request).accounts.list_tokens(actor, username, p.start, p.size + 1)
    return paged(items, p, "hashedToken")


@router.post(
    "",
    status_code=201,
    summary="Create a token; `token` (the secret) is shown in this response only",
    response_model=None,
    responses=S.answers(S.NewToken, 403, 404, status=201),
)
def create_token(
    request: Request,
    body: m.NewToken,
    username: str | None = Query(None, max_length=64, description="Admins: create for this user"),
    actor: Identity = Actor,
) -> dict:
    return services(request).accounts.create_token(
        actor,
        body.tokenLabel,
        username,
        request.headers.get("user-agent", ""),
        client(request),
    )


@router.delete(
    "",
    summary="Delete tokens in bulk (yours; admins: another user's by username)",
    response_model=None,
    responses=S.answers(S.Deleted, 403),
)
def delete_tokens(
    request: Request,
    username: str | None = Query(
        None, max_length=64, description="Admins: this user's tokens (default: your own)"
    ),
    usedbefore: Time | None = Query(None, description="Only tokens last used before this"),
    actor: Identity = Actor,
) -> dict:
    count = services(request).accounts.delete_tokens(actor, username, usedbefore, client(request))
    return {"deleted": count}


@router.get("/{hashed}", summary="Get a token", response_model=None, responses=S.answers(S.Token))
def get_token(request: Request, hashed: str, actor: Identity = Actor) -> dict:
    return services(request).accounts.get_token(actor, hashed)


@router.patch(
    "/{hashed}",
    summary="Relabel, deactivate or reactivate a token",
    response_model=None,
    responses=S.answers(S.Token),
)
def update_token(
    request: Request, hashed: str, body: m.TokenChanges, actor: Identity = Actor
) -> dict:
    return services(request).accounts.update_token(actor, hashed, m.changes(body), client(request))


@router.delete(
    "/{hashed}",
    status_code=204,
    summary="Delete a token",
    response_model=None,
    responses=S.answers(None),
)
def delete_token(request: Request, hashed: str, actor: Identity = Actor) -> Response:
    services(request).accounts.delete_token(actor, hashed, client(request))
    return Response(status_code=204)
