"""LDAP / Active Directory: configuration, logins that bind against the directory, and the
sync that creates, updates and deactivates directory users and fills teams mapped to groups.

Local accounts (the admin created at install, users created through the API) never
authenticate against the directory; directory users have no local password.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wharf.auth.audit import Audit
from wharf.auth.identity import Identity
from wharf.management import validation
from wharf.management.errors import Invalid, NotAuthenticated, NotAuthorized, ServiceError
from wharf.metadata.identity import IdentityStore, NamespaceInUse
from wharf.metadata.models import User
from wharf.metadata.store import AlreadyExists, MetadataStore
from wharf.settings import Policy

if TYPE_CHECKING:
    from wharf.auth.ldap import LdapDirectory, LdapUser

log = logging.getLogger("wharf.ldap")

LDAP_KEY = "ldap"


class DirectoryUnavailable(ServiceError):
    status, code = 502, "LDAP_UNAVAILABLE"


def _require_admin(actor: Identity) -> None:
    if actor.username is None:
        raise NotAuthenticated("authentication required")
    if not actor.is_admin:
        raise NotAuthorized("only system administrators may do this")


class DirectoryService:
    def __init__(
        self, store: MetadataStore, identities: IdentityStore, policy: Policy, audit: Audit
    ) -> None:
        self.store = store
        self.identities = identities
        self.policy = policy
        self.audit = audit

    # -- configuration ----------------------------------------------------------------------

    def _stored(self) -> dict[str, Any]:
        return self.identities.get_setting(LDAP_KEY) or {}

    def _directory(self) -> LdapDirectory | None:
        stored = self._stored()
        if not stored.get("enabled"):
            return None
        # ldap3 costs ~15 MiB per process: imported only where a directory is configured.
        from wharf.auth.ldap import LdapConfig, LdapDirectory

        return LdapDirectory(LdapConfig.from_dict(stored["config"]))

    def get_config(self, actor: Identity) -> dict[str, Any]:
        from wharf.auth.ldap import LdapConfig

        _require_admin(actor)
        stored = self._stored()
        if not stored:
            return {"enabled": False, "config": None}
        config = LdapConfig.from_dict(stored["config"])
        return {
            "enabled": bool(stored.get("enabled")),
            "config": {**config.to_dict(), "bindPasswordSet": bool(config.bind_password)},
        }

    def set_config(
        self, actor: Identity, data: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        from wharf.auth.ldap import LdapConfig

        _require_admin(actor)
        enabled = data.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Invalid("enabled must be true or false", "INVALID_SETTINGS")
        raw = data.get("config")
        if not isinstance(raw, dict):
            raise Invalid("config must be an object", "INVALID_SETTINGS")
        raw = dict(raw)
        if "bindPassword" not in raw:  # keep the stored secret unless a new one is given
            previous = self._stored().get("config") or {}
            if "bindPassword" in previous:
                raw["bindPassword"] = previous["bindPassword"]
        try:
            config = LdapConfig.from_dict(raw)
        except ValueError as e:
            raise Invalid(str(e), "INVALID_SETTINGS") from None
        self.identities.set_setting(
            LDAP_KEY,
            {"enabled": enabled, "config": config.to_dict(include_secret=True)},
            affects_access=True,
        )
        self.policy.changed()
        self.audit.record(
            "ldap_configure",
            config.url,
            actor=actor.username,
            client=client,
            details={"enabled": enabled},
        )
        return self.get_config(actor)

    def check(self, actor: Identity) -> dict[str, Any]:
        from wharf.auth.ldap import LdapConfig, LdapDirectory, LdapError

        _require_admin(actor)
        stored = self._stored()
        if not stored:
            raise Invalid("LDAP is not configured", "LDAP_NOT_CONFIGURED")
        try:
            LdapDirectory(LdapConfig.from_dict(stored["config"])).check()
        except LdapError as e:
            raise DirectoryUnavailable(str(e)) from None
        return {"ok": True}

    # -- logins -----------------------------------------------------------------------------

    def login(self, username: str, password: str) -> User | None:
        """The user, provisioned or refreshed from the directory, if the bind succeeds."""
        from wharf.auth.ldap import LdapError

        try:
            directory = self._directory()
        except ValueError:
            log.error("the stored LDAP configuration is invalid; directory logins are off")
            return None
        if directory is None:
            return None
        try:
            found = directory.authenticate(username, password)
        except LdapError as e:
            log.warning("LDAP login for %r failed: %s", username, e)
            return None
        if found is None:
            return None
        found = _as_account(found)
        if found is None:
            return None
        existing = self.store.get_user(found.username)
        if existing is not None and existing.source != "ldap":
            return None  # a local account of the same name is not the directory's to log in
        if existing is None:
            if self._provision(found) == "blocked":
                return None
        else:
            self.identities.update_account(
                found.username, full_name=found.full_name, ldap_dn=found.dn
            )
        return self.store.get_user(found.username)

    def _provision(self, found: LdapUser) -> str:
        """Create the account of a directory user: "created", "exists" (made concurrently,
        or an organisation's name) or "blocked" (unowned repositories use the name)."""
        try:
            self.identities.create_account(
                found.username,
                is_org=False,
                full_name=found.full_name,
                source="ldap",
                ldap_dn=found.dn,
            )
        except AlreadyExists:
            return "exists"
        except NamespaceInUse:
            log.warning(
                "LDAP user %r not provisioned: repositories exist under that name",
                found.username,
            )
            return "blocked"
        return "created"

    # -- sync -------------------------------------------------------------------------------

    def sync(self, actor: Identity | None, client: str | None = None) -> dict[str, int]:
        """Create and update directory users, deactivate those gone from the directory,
        and make teams mapped to LDAP groups hold exactly the groups' members.
        `actor` None: the scheduled job."""
        from wharf.auth.ldap import LdapError

        if actor is not None:
            _require_admin(actor)
        try:
            directory = self._directory()
        except ValueError as e:
            raise Invalid(f"the stored LDAP configuration is invalid: {e}") from None
        if directory is None:
            raise Invalid("LDAP is not configured and enabled", "LDAP_NOT_CONFIGURED")
        report = dict.fromkeys(
            (
                "usersCreated",
                "usersUpdated",
                "usersDeactivated",
                "usersReactivated",
                "usersSkipped",
                "teamsSynced",
                "membersAdded",
                "membersRemoved",
            ),
            0,
        )
        try:
            users = directory.list_users()
            seen = set()
            for listed in users:
                found = _as_account(listed)
                if found is None:
                    report["usersSkipped"] += 1
                    continue
                seen.add(found.username)
                existing = self.identities.get_account(found.username)
                if existing is None:
                    outcome = self._provision(found)
                    report["usersCreated" if outcome == "created" else "usersSkipped"] += 1
                elif existing.source == "ldap":
                    changes: dict[str, Any] = {}
                    if existing.full_name != found.full_name:
                        changes["full_name"] = found.full_name
                    if self.identities.account_ldap_dn(found.username) != found.dn:
                        changes["ldap_dn"] = found.dn
                    if not existing.is_active:
                        changes["is_active"] = True
                        report["usersReactivated"] += 1
                    if changes:
                        self.identities.update_account(found.username, **changes)
                        report["usersUpdated"] += 1
            start = None
            while True:
                page = self.identities.list_accounts("users", start, 500)
                for account in page:
                    if account.source == "ldap" and account.is_active and account.name not in seen:
                        self.identities.update_account(account.name, is_active=False)
                        report["usersDeactivated"] += 1
                if len(page) < 500:
                    break
                start = page[-1].name + "\0"
            for team in self.identities.teams_with_ldap_group():
                assert team.ldap_group_dn is not None
                members = directory.group_members(team.ldap_group_dn)
                ids = []
                for username in sorted(members):
                    user = self.store.get_user(username.lower())
                    if user is not None and user.source == "ldap":
                        ids.append(user.id)
                added, removed = self.identities.set_team_members(team, ids)
                report["teamsSynced"] += 1
                report["membersAdded"] += added
                report["membersRemoved"] += removed
        except LdapError as e:
            self.audit.record(
                "ldap_sync",
                "ldap",
                actor=actor.username if actor else None,
                client=client,
                success=False,
                details={"error": str(e)},
            )
            raise DirectoryUnavailable(str(e)) from None
        self.policy.changed()
        self.audit.record(
            "ldap_sync",
            "ldap",
            actor=actor.username if actor else None,
            client=client,
            details=report,
        )
        return report


def _as_account(found: LdapUser) -> LdapUser | None:
    """The directory user under its account name: the directory's name in lower case
    (directories match names regardless of case; Active Directory's are often mixed-case),
    None when that is still not a valid account name (it is then not provisioned)."""
    name = found.username.lower()
    try:
        validation.account_name(name)
    except Invalid:
        log.warning("LDAP user %r not provisioned: not a valid account name", found.username)
        return None
    return replace(found, username=name)
