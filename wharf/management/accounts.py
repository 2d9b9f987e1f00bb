"""Accounts (users and organisations), organisation members and owners, teams, personal
access tokens and system settings: the rules of who may change what.

Every method takes the acting `Identity` and checks it first; the HTTP layer only
translates. Names in results are the API's (camelCase).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from wharf.auth import tokens as pat
from wharf.auth.audit import Audit
from wharf.auth.identity import Identity
from wharf.auth.passwords import hash_password, verify_password
from wharf.auth.tokens import TokenService
from wharf.management import validation as check
from wharf.management.errors import Conflict, Invalid, NoSuch, NotAuthenticated, NotAuthorized
from wharf.metadata.identity import IdentityStore, NamespaceInUse
from wharf.metadata.models import Account, ApiToken, Team
from wharf.metadata.store import AlreadyExists, MetadataStore
from wharf.settings import Policy


def utc(value: datetime | None) -> datetime | None:
    """A time given by a caller, in UTC (naive means UTC). Stores compare times as stored,
    in UTC; SQLite compares their text, so `10:00+02:00` must become `08:00` first."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:59:59-14:00 is past the last UTC time
        raise Invalid(f"{value.isoformat()} is out of range in UTC") from None


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text.replace("+00:00", "Z") if text.endswith("+00:00") else text + "Z"


def account_json(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "fullName": account.full_name,
        "isOrg": account.is_org,
        "isAdmin": account.is_admin,
        "isActive": account.is_active,
        "source": account.source,
        "createdAt": iso(account.created_at),
        "updatedAt": iso(account.updated_at),
    }


def team_json(team: Team) -> dict[str, Any]:
    return {
        "id": team.id,
        "orgName": team.org,
        "name": team.name,
        "description": team.description,
        "ldapGroupDN": team.ldap_group_dn,
        "createdAt": iso(team.created_at),
    }


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "hashedToken": token.hashed_token,
        "tokenLabel": token.label,
        "username": token.username,
        "isActive": token.is_active,
        "createdAt": iso(token.created_at),
        "lastUsed": iso(token.last_used),
        "generatedBy": token.generated_by,
        "creatorUa": token.creator_ua,
    }


def require_user(actor: Identity) -> str:
    if actor.username is None:
        raise NotAuthenticated("authentication required")
    return actor.username


def require_admin(actor: Identity) -> None:
    require_user(actor)
    if not actor.is_admin:
        raise NotAuthorized("only system administrators may do this")


def _bool(data: dict[str, Any], key: str, default: bool | None = None) -> bool | None:
    """`data[key]` if given (it must then be a boolean: null is no value for a flag), else
    `default`."""
    if key not in data:
        return default
    value = data[key]
    if not isinstance(value, bool):
        raise Invalid(f"{key} must be true or false")
    return value


class AccountService:
    def __init__(
        self,
        store: MetadataStore,
        identities: IdentityStore,
        policy: Policy,
        audit: Audit,
        tokens: TokenService,
    ) -> None:
        self.store = store
        self.identities = identities
        self.policy = policy
        self.audit = audit
        self.tokens = tokens

    def _changed(self) -> None:
        self.policy.changed()

    # -- lookups ----------------------------------------------------------------------------

    def account(self, name: str) -> Account:
        found = self.identities.get_account(name)
        if found is None:
            raise NoSuch(f"no account named {name!r}", "NO_SUCH_ACCOUNT")
        return found

    def user(self, name: str) -> Account:
        found = self.identities.get_account(name)
        if found is None or found.is_org:
            raise NoSuch(f"no user named {name!r}", "NO_SUCH_USER")
        return found

    def org(self, name: str) -> Account:
        found = self.identities.get_account(name)
        if found is None or not found.is_org:
            raise NoSuch(f"no organization named {name!r}", "NO_SUCH_ORGANIZATION")
        return found

    def team(self, org: Account, name: str) -> Team:
        found = self.identities.get_team(org.id, name)
        if found is None:
            raise NoSuch(f"no team {name!r} in {org.name!r}", "NO_SUCH_TEAM")
        return found

    def _org_role(self, actor: Identity, org: Account) -> str | None:
        """'admin' (system admin), 'owner', 'member' or None."""
        if actor.is_admin:
            return "admin"
        if actor.user_id is None:
            return None
        membership = self.identities.org_membership(org.id, actor.user_id)
        if membership is None:
            return None
        return "owner" if membership else "member"

    def require_org_owner(self, actor: Identity, org: Account) -> None:
        require_user(actor)
        if self._org_role(actor, org) not in ("admin", "owner"):
            raise NotAuthorized(
                f"only owners of {org.name!r} and system administrators may do this"
            )

    def require_org_member(self, actor: Identity, org: Account) -> None:
        require_user(actor)
        if self._org_role(actor, org) is None:
            raise NotAuthorized(f"only members of {org.name!r} may see this")

    # -- accounts ---------------------------------------------------------------------------

    def list_accounts(
        self, actor: Identity, kind: str, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        require_user(actor)
        if kind not in ("all", "users", "orgs", "admins", "inactive"):
            raise Invalid("filter must be one of all, users, orgs, admins, inactive")
        return [account_json(a) for a in self.identities.list_accounts(kind, start, limit)]

    def get_account(self, actor: Identity, name: str) -> dict[str, Any]:
        require_user(actor)
        return account_json(self.account(name))

    def create_account(
        self, actor: Identity, data: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        require_admin(actor)
        name = check.account_name(data.get("name"))
        is_org = bool(_bool(data, "isOrg", False))
        full_name = check.text(data.get("fullName", ""), "fullName", 255)
        password_hash = None
        if not is_org:
            password_hash = hash_password(check.password(data.get("password")))
        elif "password" in data:
            raise Invalid("organizations have no password")
        try:
            account = self.identities.create_account(
                name,
                is_org=is_org,
                full_name=full_name,
                password_hash=password_hash,
                is_admin=bool(_bool(data, "isAdmin", False)) and not is_org,
                is_active=bool(_bool(data, "isActive", True)),
            )
        except AlreadyExists:
            raise Conflict(f"the name {name!r} is taken", "ACCOUNT_EXISTS") from None
        except NamespaceInUse:
            raise Conflict(
                f"repositories named {name}/... exist without an owner; delete or move them "
                "before creating this account",
                "NAMESPACE_IN_USE",
            ) from None
        self.audit.record(
            "org_create" if is_org else "user_create",
            name,
            actor=actor.username,
            client=client,
            details={"isAdmin": account.is_admin},
        )
        return account_json(account)

    def update_account(
        self, actor: Identity, name: str, data: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        me = require_user(actor)
        account = self.account(name)
        changes: dict[str, Any] = {}
        is_self = me == name
        if not actor.is_admin and not is_self:
            raise NotAuthorized("only system administrators may change other accounts")
        if "fullName" in data:
            changes["full_name"] = check.text(data["fullName"], "fullName", 255)
        for key, column in (("isActive", "is_active"), ("isAdmin", "is_admin")):
            if key in data:
                if not actor.is_admin:
                    raise NotAuthorized(f"only system administrators may change {key}")
                value = _bool(data, key)
                if account.is_org and key == "isAdmin" and value:
                    raise Invalid("organizations cannot be administrators")
                if is_self and value is False:
                    raise Invalid(f"you cannot remove your own {key}")
                changes[column] = value
        if "password" in data:
            if account.is_org:
                raise Invalid("organizations have no password")
            if account.source != "local":
                raise Invalid("this user's password is managed by the directory (LDAP)")
            new = check.password(data["password"])
            if not actor.is_admin or is_self:
                # Changing one's own password proves the old one, so that a stolen session
                # or token alone cannot take the account over.
                user = self.store.get_user(name)
                old = data.get("oldPassword")
                if (
                    user is None
                    or user.password_hash is None
                    or not isinstance(old, str)
                    or not verify_password(user.password_hash, old)
                ):
                    raise NotAuthorized("oldPassword is wrong", "INVALID_PASSWORD")
            changes["password_hash"] = hash_password(new)
        unknown = set(data) - {"fullName", "isActive", "isAdmin", "password", "oldPassword"}
        if unknown:
            raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
        if changes:
            updated = self.identities.update_account(name, **changes)
            self._changed()
            assert updated is not None
            account = updated
            self.audit.record(
                "account_update",
                name,
                actor=me,
                client=client,
                details={
                    "fields": sorted(k for k in data if k not in ("password", "oldPassword"))
                    + (["password"] if "password" in data else [])
                },
            )
        return account_json(account)

    def delete_account(self, actor: Identity, name: str, client: str | None = None) -> None:
        require_admin(actor)
        account = self.account(name)
        if account.name == actor.username:
            raise Invalid("you cannot delete your own account")
        self.identities.delete_account(name)
        self._changed()
        self.audit.record(
            "org_delete" if account.is_org else "user_delete",
            name,
            actor=actor.username,
            client=client,
        )

    # -- organisation members ---------------------------------------------------------------

    def list_members(
        self, actor: Identity, org_name: str, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        org = self.org(org_name)
        self.require_org_member(actor, org)
        return [
            {"member": account_json(a), "isOwner": owner}
            for a, owner in self.identities.org_members(org.id, start, limit)
        ]

    def get_member(self, actor: Identity, org_name: str, username: str) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_member(actor, org)
        user = self.user(username)
        owner = self.identities.org_membership(org.id, user.id)
        if owner is None:
            raise NoSuch(f"{username!r} is not a member of {org_name!r}", "NO_SUCH_MEMBER")
        return {"member": account_json(user), "isOwner": owner}

    def set_member(
        self,
        actor: Identity,
        org_name: str,
        username: str,
        is_owner: bool,
        client: str | None = None,
    ) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        user = self.user(username)
        self.identities.set_org_member(org.id, user.id, is_owner=is_owner)
        self._changed()
        self.audit.record(
            "org_member_set",
            f"{org_name}/{username}",
            actor=actor.username,
            client=client,
            details={"isOwner": is_owner},
        )
        return {"member": account_json(user), "isOwner": is_owner}

    def remove_member(
        self, actor: Identity, org_name: str, username: str, client: str | None = None
    ) -> None:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        user = self.user(username)
        if not self.identities.remove_org_member(org.id, user.id):
            raise NoSuch(f"{username!r} is not a member of {org_name!r}", "NO_SUCH_MEMBER")
        self._changed()
        self.audit.record(
            "org_member_remove", f"{org_name}/{username}", actor=actor.username, client=client
        )

    # -- teams ------------------------------------------------------------------------------

    def list_teams(
        self, actor: Identity, org_name: str, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        org = self.org(org_name)
        self.require_org_member(actor, org)
        return [team_json(t) for t in self.identities.list_teams(org.id, start, limit)]

    def get_team(self, actor: Identity, org_name: str, team_name: str) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_member(actor, org)
        return team_json(self.team(org, team_name))

    def create_team(
        self, actor: Identity, org_name: str, data: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        name = check.team_name(data.get("name"))
        description = check.text(data.get("description", ""), "description", 1000)
        group = data.get("ldapGroupDN")
        if group is not None:
            group = check.text(group, "ldapGroupDN", 1000) or None
        try:
            team = self.identities.create_team(org.id, name, description, group)
        except AlreadyExists:
            raise Conflict(f"team {name!r} exists in {org_name!r}", "TEAM_EXISTS") from None
        self.audit.record("team_create", f"{org_name}/{name}", actor=actor.username, client=client)
        return team_json(team)

    def update_team(
        self,
        actor: Identity,
        org_name: str,
        team_name: str,
        data: dict[str, Any],
        client: str | None = None,
    ) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        team = self.team(org, team_name)
        changes: dict[str, Any] = {}
        if "name" in data:
            changes["name"] = check.team_name(data["name"])
        if "description" in data:
            changes["description"] = check.text(data["description"], "description", 1000)
        if "ldapGroupDN" in data:
            group = data["ldapGroupDN"]
            changes["ldap_group_dn"] = (
                None if group is None else (check.text(group, "ldapGroupDN", 1000) or None)
            )
        unknown = set(data) - {"name", "description", "ldapGroupDN"}
        if unknown:
            raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
        if changes:
            renamed = changes.get("name", team.name) != team.name
            if renamed and self.identities.get_team(org.id, changes["name"]) is not None:
                raise Conflict(f"team {changes['name']!r} exists", "TEAM_EXISTS")
            self.identities.update_team(team.id, **changes)
            self.audit.record(
                "team_update",
                f"{org_name}/{team_name}",
                actor=actor.username,
                client=client,
                details={"fields": sorted(data)},
            )
        return team_json(self.team(org, changes.get("name", team.name)))

    def delete_team(
        self, actor: Identity, org_name: str, team_name: str, client: str | None = None
    ) -> None:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        team = self.team(org, team_name)
        self.identities.delete_team(team.id)
        self._changed()
        self.audit.record(
            "team_delete", f"{org_name}/{team_name}", actor=actor.username, client=client
        )

    def list_team_members(
        self, actor: Identity, org_name: str, team_name: str, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        org = self.org(org_name)
        self.require_org_member(actor, org)
        team = self.team(org, team_name)
        return [account_json(a) for a in self.identities.team_members(team.id, start, limit)]

    def add_team_member(
        self,
        actor: Identity,
        org_name: str,
        team_name: str,
        username: str,
        client: str | None = None,
    ) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        team = self.team(org, team_name)
        user = self.user(username)
        self.identities.add_team_member(team, user.id)
        self._changed()
        self.audit.record(
            "team_member_add",
            f"{org_name}/{team_name}/{username}",
            actor=actor.username,
            client=client,
        )
        return account_json(user)

    def remove_team_member(
        self,
        actor: Identity,
        org_name: str,
        team_name: str,
        username: str,
        client: str | None = None,
    ) -> None:
        org = self.org(org_name)
        self.require_org_owner(actor, org)
        team = self.team(org, team_name)
        user = self.user(username)
        if not self.identities.remove_team_member(team.id, user.id):
            raise NoSuch(f"{username!r} is not in team {team_name!r}", "NO_SUCH_MEMBER")
        self._changed()
        self.audit.record(
            "team_member_remove",
            f"{org_name}/{team_name}/{username}",
            actor=actor.username,
            client=client,
        )

    def team_repository_access(
        self, actor: Identity, org_name: str, team_name: str
    ) -> dict[str, Any]:
        org = self.org(org_name)
        self.require_org_member(actor, org)
        team = self.team(org, team_name)
        # The list names private repositories: shown to the team's own members (who can
        # read them through the team), owners and admins, not to the rest of the org.
        if self._org_role(actor, org) not in ("admin", "owner") and not (
            actor.user_id is not None and self.identities.is_team_member(team.id, actor.user_id)
        ):
            raise NotAuthorized(f"only members of team {team_name!r} and owners may see this")
        return {
            "team": team_json(team),
            "repositoryAccessList": [
                {"repository": name, "accessLevel": level}
                for name, level in self.identities.team_repository_grants(team.id)
            ],
        }

    # -- personal access tokens -------------------------------------------------------------

    def create_token(
        self,
        actor: Identity,
        label: object,
        for_username: str | None,
        user_agent: str,
        client: str | None = None,
    ) -> dict[str, Any]:
        me = require_user(actor)
        owner_name = for_username or me
        if owner_name != me and not actor.is_admin:
            raise NotAuthorized("only system administrators may create tokens for other users")
        owner = self.user(owner_name)
        label = check.text(label if label is not None else "", "tokenLabel", check.MAX_LABEL)
        secret, hashed = pat.new_pat()
        token = self.identities.create_token(owner.id, hashed, label, me, user_agent)
        self.audit.record(
            "token_create",
            owner_name,
            actor=me,
            client=client,
            details={"hashedToken": hashed, "tokenLabel": label},
        )
        return {**token_json(token), "token": secret}

    def _token(self, actor: Identity, hashed: str) -> ApiToken:
        me = require_user(actor)
        token = self.identities.get_token(hashed)
        # Another user's token answers exactly like a missing one.
        if token is None or (token.username != me and not actor.is_admin):
            raise NoSuch("no such access token", "NO_SUCH_API_TOKEN")
        return token

    def list_tokens(
        self, actor: Identity, username: str | None, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        me = require_user(actor)
        if not actor.is_admin:
            if username not in (None, me):
                raise NotAuthorized("only system administrators may list other users' tokens")
            username = me
        return [token_json(t) for t in self.identities.list_tokens(username, start, limit)]

    def get_token(self, actor: Identity, hashed: str) -> dict[str, Any]:
        return token_json(self._token(actor, hashed))

    def update_token(
        self, actor: Identity, hashed: str, data: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        token = self._token(actor, hashed)
        changes: dict[str, Any] = {}
        if "tokenLabel" in data:
            changes["label"] = check.text(data["tokenLabel"], "tokenLabel", check.MAX_LABEL)
        if "isActive" in data:
            changes["is_active"] = _bool(data, "isActive")
        unknown = set(data) - {"tokenLabel", "isActive"}
        if unknown:
            raise Invalid(f"unknown fields: {', '.join(sorted(unknown))}")
        if changes:
            self.identities.update_token(hashed, **changes)
            self._changed()
            self.audit.record(
                "token_update",
                token.username,
                actor=actor.username,
                client=client,
                details={"hashedToken": hashed, **{k: v for k, v in data.items()}},
            )
        return token_json(self._token(actor, hashed))

    def delete_token(self, actor: Identity, hashed: str, client: str | None = None) -> None:
        token = self._token(actor, hashed)
        self.identities.delete_tokens([hashed])
        self._changed()
        self.audit.record(
            "token_delete",
            token.username,
            actor=actor.username,
            client=client,
            details={"hashedToken": hashed},
        )

    def delete_tokens(
        self,
        actor: Identity,
        username: str | None,
        used_before: datetime | None,
        client: str | None = None,
    ) -> int:
        me = require_user(actor)
        # Without a username, the caller's own tokens, admins included: a bare DELETE must
        # never sweep away every user's tokens.
        username = username or me
        if username != me and not actor.is_admin:
            raise NotAuthorized("only system administrators may delete other users' tokens")
        hashed = self.identities.tokens_matching(username, utc(used_before))
        count = self.identities.delete_tokens(hashed)
        self._changed()
        self.audit.record(
            "token_delete",
            username,
            actor=me,
            client=client,
            details={"count": count},
        )
        return count

    # -- settings and audit -----------------------------------------------------------------

    def get_settings(self, actor: Identity) -> dict[str, Any]:
        require_admin(actor)
        return self.policy.settings().to_dict()

    def update_settings(
        self, actor: Identity, changes: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        require_admin(actor)
        try:
            new = self.policy.update_settings(changes)
        except ValueError as e:
            raise Invalid(str(e), "INVALID_SETTINGS") from None
        self.audit.record(
            "settings_update", "settings", actor=actor.username, client=client, details=changes
        )
        return new.to_dict()

    def audit_events(
        self,
        actor: Identity,
        *,
        action: str | None,
        actor_name: str | None,
        before_id: int | None,
        since: datetime | None,
        until: datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        require_admin(actor)
        events = self.identities.list_events(
            action=action,
            actor=actor_name,
            before_id=before_id,
            since=utc(since),
            until=utc(until),
            limit=limit,
        )

        return [
            {
                "id": e.id,
                "at": iso(e.at),
                "actor": e.actor,
                "client": e.client,
                "action": e.action,
                "target": e.target,
                "success": e.success,
                "details": json.loads(e.details) if e.details else None,
            }
            for e in events
        ]
