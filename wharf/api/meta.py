"""/api/v0/meta: system settings, LDAP, and the audit trail (admins only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from wharf.api import models as m
from wharf.api import schemas as S
from wharf.api.deps import MAX_INT, Time, client, identity, services
from wharf.auth.identity import Identity

router = APIRouter(prefix="/api/v0", tags=["meta"])
Actor = Depends(identity)


@router.get(
    "/meta/settings",
    summary="System settings",
    response_model=None,
    responses=S.answers(S.Settings, 403),
)
def get_settings(request: Request, actor: Identity = Actor) -> dict:
    return services(request).accounts.get_settings(actor)


@router.post(
    "/meta/settings",
    status_code=202,
    summary="Change system settings",
    response_model=None,
    responses=S.answers(S.Settings, 403, status=202),
)
def update_settings(request: Request, body: m.SettingsChanges, actor: Identity = Actor) -> dict:
    return services(request).accounts.update_settings(actor, m.changes(body), client(request))


@router.get(
    "/meta/cluster_status",
    summary="Replicas, metadata store and blob storage health",
    response_model=None,
    responses=S.answers(dict[str, Any], 403),
)
def cluster_status(request: Request, actor: Identity = Actor) -> dict:
    from wharf.cluster import status
    from wharf.management.accounts import require_admin

    require_admin(actor)
    svc = services(request)
    return status(svc.store, svc.storage)


@router.get(
    "/meta/settings/ldap",
    summary="LDAP configuration (the bind password is never shown)",
    response_model=None,
    responses=S.answers(S.LdapView, 403),
)
def get_ldap(request: Request, actor: Identity = Actor) -> dict:
    return services(request).directory.get_config(actor)


@router.put(
    "/meta/settings/ldap",
    summary="Configure LDAP / Active Directory",
    response_model=None,
    responses=S.answers(S.LdapView, 403),
)
def set_ldap(request: Request, body: m.LdapSettings, actor: Identity = Actor) -> dict:
    return services(request).directory.set_config(actor, body.model_dump(), client(request))


@router.post(
    "/meta/settings/ldap/check",
    summary="Test the LDAP connection and service bind",
    response_model=None,
    responses=S.answers(S.LdapCheck, 400, 403, 502),
)
def check_ldap(request: Request, actor: Identity = Actor) -> dict:
    return services(request).directory.check(actor)


@router.post(
    "/meta/settings/ldap/sync",
    summary="Sync users and team memberships from LDAP now",
    response_model=None,
    responses=S.answers(dict[str, int], 400, 403, 502),
)
def sync_ldap(request: Request, actor: Identity = Actor) -> dict:
    return services(request).directory.sync(actor, client(request))


@router.get(
    "/audit",
    tags=["audit"],
    summary="Security audit trail, newest first",
    response_model=None,
    responses=S.answers(list[S.AuditEvent], 403),
)
def audit(
    request: Request,
    action: str | None = Query(None, max_length=64),
    actor_name: str | None = Query(None, alias="actor", max_length=255),
    before: int | None = Query(None, ge=1, le=MAX_INT, description="Only events with a smaller id"),
    since: Time | None = None,
    until: Time | None = None,
    limit: int = Query(100, ge=1, le=1000),
    actor: Identity = Actor,
) -> JSONResponse:
    events = services(request).accounts.audit_events(
        actor,
        action=action,
        actor_name=actor_name,
        before_id=before,
        since=since,
        until=until,
        limit=limit + 1,
    )
    headers = {}
    if len(events) > limit:
        headers["X-Next-Page-Start"] = str(events[limit - 1]["id"])
        events = events[:limit]
    return JSONResponse(events, headers=headers)
