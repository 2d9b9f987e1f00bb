"""Repositories as the management API sees them: create, list, get, update, delete, tags,
and the team grants on repositories and organisation namespaces.

A repository the caller may not read answers NO_SUCH_REPOSITORY, exactly like a missing one.
"""

from __future__ import annotations

from typing import Any

from wharf.auth.access import ADMIN, READ, WRITE, AccessService, level_name, namespace_of
from wharf.auth.audit import Audit
from wharf.auth.identity import Identity
from wharf.management import validation as check
from wharf.management.accounts import account_json, iso, require_user, team_json
from wharf.management.errors import Conflict, Invalid, NoSuch, NotAuthenticated, NotAuthorized
from wharf.metadata.identity import IdentityStore
from wharf.metadata.models import Account, Repository
from wharf.metadata.store import AlreadyExists, MetadataStore, image_size
from wharf.settings import Policy


class RepositoryService:
    def __init__(
        self,
        store: MetadataStore,
        identities: IdentityStore,
        policy: Policy,
        access: AccessService,
        audit: Audit,
    ) -> None:
        self.store = store
        self.identities = identities
        self.policy = policy
        self.access = access
        self.audit = audit

    # -- helpers ----------------------------------------------------------------------------

    def _namespace(self, name: str) -> Account:
        found = self.identities.get_account(name)
        if found is None:
            raise NoSuch(f"no account named {name!r}", "NO_SUCH_ACCOUNT")
        return found

    def _anonymous_allowed(self, actor: Identity) -> None:
        """Anonymous callers browse public repositories only while anonymous pulls are on;
        otherwise they are asked to sign in (as the registry API does)."""
        if actor.username is None and not self.policy.settings().anonymousPull:
            raise NotAuthenticated("authentication required")

    def _visible(self, actor: Identity, full_name: str, needed: int = READ) -> dict[str, Any]:
        """The repository's row if the caller holds `needed` on it; a caller who cannot even
        read it is told it does not exist."""
        self._anonymous_allowed(actor)
        details = self.identities.repository_details(full_name)
        repo = None
        if details is not None:
            repo = Repository(
                details["id"], details["name"], details["visibility"], details["namespace"]
            )
        level = self.access.level(actor, full_name, repo)
        if details is None or level < READ:
            raise NoSuch(f"no repository {full_name!r}", "NO_SUCH_REPOSITORY")
        if level < needed:
            raise NotAuthorized(f"{level_name(needed)} access to {full_name!r} is needed for this")
        details["level"] = level
        return details

    def _json(self, details: dict[str, Any]) -> dict[str, Any]:
        namespace = details["namespace"]
        owner = self.identities.get_account(namespace)
        return {
            "id": details["id"],
            "namespace": namespace,
            "namespaceType": ("organization" if owner and owner.is_org else "user"),
            "name": details["name"][len(namespace) + 1 :] or details["name"],
            "fullName": details["name"],
            "shortDescription": details["short_description"],
            "longDescription": details["long_description"],
            "visibility": details["visibility"],
            "createdAt": iso(details["created_at"]),
        }

    # -- repositories -----------------------------------------------------------------------

    def list(
        self, actor: Identity, namespace: str | None, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        self._anonymous_allowed(actor)
        if namespace is not None:
            self._namespace(namespace)
        # pageStart names the first repository of the page (inclusive).
        rows = self.access.readable(actor, None, limit, namespace=namespace, start=start)
        return [
            self._json(d)
            for name, _ in rows
            if (d := self.identities.repository_details(name)) is not None
        ]

    def create(
        self, actor: Identity, namespace: str, data: dict[str, Any], client: str | None = None
    ) -> dict[str, Any]:
        require_user(actor)
        self._namespace(namespace)
        name = check.repository_name(data.get("name"))
        full_name = f"{namespace}/{name}"
        visibility = check.visibility(data.get("visibility", "private"))
        short = check.text(data.get("shortDescription", ""), "shortDescription", 140)
        long = check.text(data.get("longDescription", ""), "longDescription", 100_000)
        if self.access.level(actor, full_name, None) < ADMIN:
            raise NotAuthorized(f"you may not create repositories in {namespace!r}")
        try:
            self.store.create_repository(
                full_name, visibility=visibility, short_description=short, long_description=long
            )
        except AlreadyExists:
            raise Conflict(f"repository {full_name!r} exists", "REPOSITORY_EXISTS") from None
        self.audit.record(
            "repository_create",
            full_name,
            actor=actor.username,
            client=client,
            details={"visibility": visibility},
        )
        return self.get(actor, namespace, name)

    def get(self, actor: Identity, namespace: str, name: str) -> dict[str, Any]:
        return self._json(self._visible(actor, f"{namespace}/{name}"))

    def update(
        self,
        actor: Identity,
        namespace: str,
        name: str,
        data: dict[str, Any],
        client: str | None = None,
    ) -> dict[str, Any]:
        require_user(actor)
        full_name = f"{namespace}/{name}"
        self._visible(actor, full_name, ADMIN)
        changes: dict[str, Any] = {}
        if "visibility" in data:
            changes["visibility"] = check.visibility(data["visibility"])
        if "shortDescription" in data:
            changes["short_description"] = check.text(
                data["shortDescription"], "shortDescription", 140
            )
        if "longDescription" in data:
            changes["long_description"] = check.text(
                data["longDescription"], "longDescription", 100_000
            )
        unknown = set(data) - {"visibility", "shortDescription", "longDescription"}
        if unknown:
            raise Invalid(f"unknown or unchangeable fields: {', '.join(sorted(unknown))}")
        if changes:
            self.identities.update_repository(full_name, **changes)
            self.policy.changed()
            self.audit.record(
                "repository_update",
                full_name,
                actor=actor.username,
                client=client,
                details={k: v for k, v in data.items() if k == "visibility"} or None,
            )
        return self.get(actor, namespace, name)

    def delete(self, actor: Identity, namespace: str, name: str, client: str | None = None) -> None:
        require_user(actor)
        full_name = f"{namespace}/{name}"
        self._visible(actor, full_name, ADMIN)
        self.identities.delete_repository(full_name)
        self.policy.changed()
        self.audit.record("repository_delete", full_name, actor=actor.username, client=client)

    # -- tags -------------------------------------------------------------------------------

    def _tag_json(self, row: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": row["name"],
            "digest": row["digest"],
            "mediaType": row["media_type"],
            "size": row["image_size"]
            if row["image_size"] is not None
            else image_size(row["media_type"], row["content"]),
            "manifestSize": row["size"],
            "author": row["author"],
            "createdAt": iso(row["created_at"]),
            "updatedAt": iso(row["updated_at"]),
        }

    def tags(
        self, actor: Identity, namespace: str, name: str, start: str | None, limit: int
    ) -> list[dict[str, Any]]:
        repo = self._visible(actor, f"{namespace}/{name}")
        return [self._tag_json(r) for r in self.identities.tag_details(repo["id"], start, limit)]

    def tag(self, actor: Identity, namespace: str, name: str, tag: str) -> dict[str, Any]:
        repo = self._visible(actor, f"{namespace}/{name}")
        rows = self.identities.tag_details(repo["id"], None, 1, name=tag)
        if not rows:
            raise NoSuch(f"no tag {tag!r} in {namespace}/{name}", "NO_SUCH_TAG")
        return self._tag_json(rows[0])

    def delete_tag(
        self, actor: Identity, namespace: str, name: str, tag: str, client: str | None = None
    ) -> None:
        require_user(actor)
        full_name = f"{namespace}/{name}"
        self._visible(actor, full_name, WRITE)
        if not self.store.delete_tag(full_name, tag):
            raise NoSuch(f"no tag {tag!r} in {full_name}", "NO_SUCH_TAG")
        self.audit.record("tag_delete", f"{full_name}:{tag}", actor=actor.username, client=client)

    # -- grants on a repository -------------------------------------------------------------

    def _org_team(self, org: Account, team_name: str):  # type: ignore[no-untyped-def]
        team = self.identities.get_team(org.id, team_name)
        if team is None:
            raise NoSuch(f"no team {team_name!r} in {org.name!r}", "NO_SUCH_TEAM")
        return team

    def team_access(self, actor: Identity, namespace: str, name: str) -> dict[str, Any]:
        repo = self._visible(actor, f"{namespace}/{name}", ADMIN)
        return {
            "repository": self._json(repo),
            "teamAccessList": [
                {"team": team_json(team), "accessLevel": level}
                for team, level in self.identities.repository_grants(repo["id"])
            ],
        }

    def set_team_access(
        self,
        actor: Identity,
        namespace: str,
        name: str,
        team_name: str,
        level: object,
        client: str | None = None,
    ) -> dict[str, Any]:
        require_user(actor)
        full_name = f"{namespace}/{name}"
        repo = self._visible(actor, full_name, ADMIN)
        level = check.level(level)
        org = self._namespace(namespace)
        if not org.is_org:
            raise Invalid(
                "teams can be granted access only to repositories of organizations",
                "NOT_AN_ORGANIZATION",
            )
        team = self._org_team(org, team_name)
        self.identities.set_repository_grant(repo["id"], team.id, level)
        self.policy.changed()
        self.audit.record(
            "grant_set",
            f"{full_name} -> {namespace}/{team_name}",
            actor=actor.username,
            client=client,
            details={"accessLevel": level},
        )
        return {"team": team_json(team), "accessLevel": level}

    def delete_team_access(
        self,
        actor: Identity,
        namespace: str,
        name: str,
        team_name: str,
        client: str | None = None,
    ) -> None:
        require_user(actor)
        full_name = f"{namespace}/{name}"
        repo = self._visible(actor, full_name, ADMIN)
        org = self._namespace(namespace)
        team = self._org_team(org, team_name) if org.is_org else None
        if team is None or not self.identities.delete_repository_grant(repo["id"], team.id):
            raise NoSuch(f"team {team_name!r} has no grant on {full_name}", "NO_SUCH_TEAM_ACCESS")
        self.policy.changed()
        self.audit.record(
            "grant_delete",
            f"{full_name} -> {namespace}/{team_name}",
            actor=actor.username,
            client=client,
        )

    # -- grants on an organisation's namespace ----------------------------------------------

    def _namespace_admin(self, actor: Identity, namespace: str) -> Account:
        require_user(actor)
        org = self._namespace(namespace)
        if not org.is_org:
            raise Invalid("namespace grants exist only for organizations", "NOT_AN_ORGANIZATION")
        # Owners and system admins only: a team granted admin on the whole namespace
        # administers its repositories, not the namespace's grants.
        owner = actor.user_id is not None and self.identities.org_membership(org.id, actor.user_id)
        if not actor.is_admin and not owner:
            raise NotAuthorized(f"only owners of {namespace!r} may manage its grants")
        return org

    def namespace_access(self, actor: Identity, namespace: str) -> dict[str, Any]:
        org = self._namespace_admin(actor, namespace)
        return {
            "namespace": account_json(org),
            "teamAccessList": [
                {"team": team_json(team), "accessLevel": level}
                for team, level in self.identities.namespace_grants(org.id)
            ],
        }

    def namespace_team_access(
        self, actor: Identity, namespace: str, team_name: str
    ) -> dict[str, Any]:
        org = self._namespace_admin(actor, namespace)
        team = self._org_team(org, team_name)
        for granted, level in self.identities.namespace_grants(org.id):
            if granted.id == team.id:
                return {"team": team_json(team), "accessLevel": level}
        raise NoSuch(
            f"team {team_name!r} has no grant on {namespace!r}", "NO_SUCH_NAMESPACE_TEAM_ACCESS"
        )

    def set_namespace_team_access(
        self,
        actor: Identity,
        namespace: str,
        team_name: str,
        level: object,
        client: str | None = None,
    ) -> dict[str, Any]:
        org = self._namespace_admin(actor, namespace)
        level = check.level(level)
        team = self._org_team(org, team_name)
        self.identities.set_namespace_grant(org.id, team.id, level)
        self.policy.changed()
        self.audit.record(
            "grant_set",
            f"{namespace}/* -> {namespace}/{team_name}",
            actor=actor.username,
            client=client,
            details={"accessLevel": level},
        )
        return {"team": team_json(team), "accessLevel": level}

    def delete_namespace_team_access(
        self, actor: Identity, namespace: str, team_name: str, client: str | None = None
    ) -> None:
        org = self._namespace_admin(actor, namespace)
        team = self._org_team(org, team_name)
        if not self.identities.delete_namespace_grant(org.id, team.id):
            raise NoSuch(
                f"team {team_name!r} has no grant on {namespace!r}",
                "NO_SUCH_NAMESPACE_TEAM_ACCESS",
            )
        self.policy.changed()
        self.audit.record(
            "grant_delete",
            f"{namespace}/* -> {namespace}/{team_name}",
            actor=actor.username,
            client=client,
        )

    # -- effective access -------------------------------------------------------------------

    def user_access(
        self, actor: Identity, username: str, namespace: str, name: str
    ) -> dict[str, Any]:
        """A user's effective level on a repository: for that user, or for an admin of it."""
        me = require_user(actor)
        full_name = f"{namespace}/{name}"
        if me != username:
            self._visible(actor, full_name, ADMIN)
        user = self.store.get_user(username)
        if user is None:
            raise NoSuch(f"no user named {username!r}", "NO_SUCH_USER")
        subject = Identity(user.username, user.is_admin, user.id, "password")
        repo_row = self.store.get_repository(full_name)
        level = self.access.level(subject, full_name, repo_row) if user.is_active else 0
        if repo_row is None or (me == username and level < READ):
            raise NoSuch(f"no repository {full_name!r}", "NO_SUCH_REPOSITORY")
        return {
            "user": user.username,
            "repository": full_name,
            "accessLevel": level_name(level) or "none",
        }

    @staticmethod
    def namespace_of(name: str) -> str:
        return namespace_of(name)
