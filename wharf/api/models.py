"""Request bodies of the management API (for validation and the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Level = Literal["read-only", "read-write", "admin"]


class Body(BaseModel):
    # Strict: a JSON body must carry the types the API documents (`"no"` or `0` is not a
    # boolean, `true` is not a number), as the services below check too.
    model_config = ConfigDict(extra="forbid", strict=True)


class NewAccount(Body):
    name: str = Field(max_length=64)
    isOrg: bool = False
    fullName: str = Field("", max_length=255)
    password: str | None = Field(None, max_length=1024, description="Users only; min 8")
    isAdmin: bool = False
    isActive: bool = True


class AccountChanges(Body):
    fullName: str | None = Field(None, max_length=255)
    isActive: bool | None = None
    isAdmin: bool | None = None
    password: str | None = Field(None, max_length=1024)
    oldPassword: str | None = Field(
        None, max_length=1024, description="Required to change your own password"
    )


class Membership(Body):
    isOwner: bool = False


class NewTeam(Body):
    name: str = Field(max_length=100)
    description: str = Field("", max_length=1000)
    ldapGroupDN: str | None = Field(None, max_length=1000)


class TeamChanges(Body):
    name: str | None = Field(None, max_length=100)
    description: str | None = Field(None, max_length=1000)
    ldapGroupDN: str | None = Field(None, max_length=1000)


class NewRepository(Body):
    name: str = Field(max_length=190)
    shortDescription: str = Field("", max_length=140)
    longDescription: str = Field("", max_length=100_000)
    visibility: Literal["public", "private"] = "private"


class RepositoryChanges(Body):
    shortDescription: str | None = Field(None, max_length=140)
    longDescription: str | None = Field(None, max_length=100_000)
    visibility: Literal["public", "private"] | None = None


class Access(Body):
    accessLevel: Level


class NewToken(Body):
    tokenLabel: str = Field("", max_length=255)


class TokenChanges(Body):
    tokenLabel: str | None = Field(None, max_length=255)
    isActive: bool | None = None


class SettingsChanges(Body):
    createRepositoryOnPush: bool | None = None
    anonymousPull: bool | None = None
    tokenLifetimeSeconds: int | None = Field(None, ge=30, le=3600)
    failedLoginLimit: int | None = Field(None, ge=1, le=10_000)
    failedLoginWindowSeconds: int | None = Field(None, ge=1, le=86_400)
    jobHistoryMaxAgeDays: int | None = Field(None, ge=1, le=3650)
    jobHistoryMaxCount: int | None = Field(None, ge=1, le=10_000_000)
    uploadExpiryMinutes: int | None = Field(None, ge=1, le=365 * 24 * 60)


class LdapSettings(Body):
    enabled: bool = True
    config: dict = Field(
        description="url, bindDN, bindPassword (kept if omitted), userSearchBase, userFilter,"
        " usernameAttr, fullNameAttr, groupMemberAttr, startTLS, caFile, timeout"
    )


def changes(body: BaseModel) -> dict:
    """The fields a PATCH actually sent (null means 'clear' only where the service allows)."""
    return body.model_dump(exclude_unset=True)
