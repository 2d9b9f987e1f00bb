"""Immutable datatypes the metadata store hands out; callers never see table rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str | None  # None: no local password (LDAP users)
    is_admin: bool
    is_active: bool
    source: str = "local"


@dataclass(frozen=True, slots=True)
class Account:
    """A user or an organisation (both are namespaces)."""

    id: int
    name: str
    is_org: bool
    full_name: str
    is_admin: bool
    is_active: bool
    source: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Team:
    id: int
    org_id: int
    org: str
    name: str
    description: str
    ldap_group_dn: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    hashed_token: str
    username: str
    label: str
    is_active: bool
    generated_by: str
    creator_ua: str
    created_at: datetime
    last_used: datetime | None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: datetime
    actor: str | None
    client: str | None
    action: str
    target: str
    success: bool
    details: str | None  # JSON text


@dataclass(frozen=True, slots=True)
class Repository:
    id: int
    name: str
    visibility: str
    namespace: str = ""

    @property
    def is_public(self) -> bool:
        return self.visibility == "public"


@dataclass(frozen=True, slots=True)
class Manifest:
    id: int
    digest: str
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class Referrer:
    digest: str
    media_type: str
    size: int
    artifact_type: str | None
    annotations: str | None  # JSON text


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    repository_id: int
    size: int
