"""Request bodies of the management API (for validation and the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["read-only", "read-write", "admin"]
# Documented here, checked by the service (which answers INVALID_PASSWORD).
_PASSWORD = {"minLength": 8}


class Body(BaseModel):
    # Strict: a JSON body must carry the types the API documents (`"no"` or `0` is not a
    # boolean, `true` is not a number), as the services below check too.
    # A field that may be left out but is never null is typed `str = Field(None, ...)`: left
    # out, it is None and not "set"; sent as null, it is refused.
    model_config = ConfigDict(extra="forbid", strict=True)


class NewAccount(Body):
    name: str = Field(min_length=1, max_length=64)
    isOrg: bool = False
    fullName: str = Field("", max_length=255)
    password: str = Field(
        None, max_length=1024, description="Users only (required)", json_schema_extra=_PASSWORD
    )
    isAdmin: bool = False
    isActive: bool = True


class AccountChanges(Body):
    fullName: str = Field(None, max_length=255)
    isActive: bool = Field(None)
    isAdmin: bool = Field(None)
    password: str = Field(None, max_length=1024, json_schema_extra=_PASSWORD)
    oldPassword: str = Field(
        None, max_length=1024, description="Required to change your own password"
    )


class Membership(Body):
    isOwner: bool = False


class NewTeam(Body):
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=1000)
    ldapGroupDN: str | None = Field(None, max_length=1000)


class TeamChanges(Body):
    name: str = Field(None, min_length=1, max_length=100)
    description: str = Field(None, max_length=1000)
    ldapGroupDN: str | None = Field(None, max_length=1000, description="null: no group")


class NewRepository(Body):
    name: str = Field(min_length=1, max_length=190)
    shortDescription: str = Field("", max_length=140)
    longDescription: str = Field("", max_length=100_000)
    visibility: Literal["public", "private"] = "private"


class RepositoryChanges(Body):
    shortDescription: str = Field(None, max_length=140)
    longDescription: str = Field(None, max_length=100_000)
    visibility: Literal["public", "private"] = Field(None)


class Access(Body):
    accessLevel: Level


class NewToken(Body):
    tokenLabel: str = Field("", max_length=255)


class TokenChanges(Body):
    tokenLabel: str = Field(None, max_length=255)
    isActive: bool = Field(None)


class SettingsChanges(Body):
    createRepositoryOnPush: bool = Field(None)
    anonymousPull: bool = Field(None)
    tokenLifetimeSeconds: int = Field(None, ge=30, le=3600)
    failedLoginLimit: int = Field(None, ge=1, le=10_000)
    failedLoginWindowSeconds: int = Field(None, ge=1, le=86_400)
    jobHistoryMaxAgeDays: int = Field(None, ge=1, le=3650)
    jobHistoryMaxCount: int = Field(None, ge=1, le=10_000_000)
    uploadExpiryMinutes: int = Field(None, ge=1, le=365 * 24 * 60)


class LdapSettings(Body):
    enabled: bool = True
    config: dict = Field(
        description="url, bindDN, bindPassword (kept if omitted), userSearchBase, userFilter,"
        " usernameAttr, fullNameAttr, groupMemberAttr, startTLS, caFile, timeout"
    )


def changes(body: BaseModel) -> dict:
    """The fields a PATCH actually sent (null means 'clear' only where the service allows)."""
    return body.model_dump(exclude_unset=True)
