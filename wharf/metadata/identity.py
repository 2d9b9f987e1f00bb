"""Identity and access-control records: accounts, organisation membership, teams, grants,
personal access tokens, settings and the audit trail.

Blocking methods over the same engine as `MetadataStore`; the domain services in
`wharf.auth` decide what is allowed, this module only reads and writes rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, case, delete, literal, or_, select, union_all, update

from wharf.metadata import schema as t
from wharf.metadata.models import Account, ApiToken, AuditEvent, Team
from wharf.metadata.store import AlreadyExists, MetadataStore, utcnow

LEVELS = ("read-only", "read-write", "admin")


class NamespaceInUse(Exception):
    """Repositories exist under a name that has no account."""


EPOCH_KEY = "auth_epoch"

_ACCOUNT_COLUMNS = (
    t.accounts.c.id,
    t.accounts.c.name,
    t.accounts.c.is_org,
    t.accounts.c.full_name,
    t.accounts.c.is_admin,
    t.accounts.c.is_active,
    t.accounts.c.source,
    t.accounts.c.created_at,
    t.accounts.c.updated_at,
)
_TEAM_COLUMNS = (
    t.teams.c.id,
    t.teams.c.org_id,
    t.accounts.c.name,
    t.teams.c.name,
    t.teams.c.description,
    t.teams.c.ldap_group_dn,
    t.teams.c.created_at,
)
_TOKEN_COLUMNS = (
    t.api_tokens.c.id,
    t.api_tokens.c.hashed_token,
    t.accounts.c.name,
    t.api_tokens.c.label,
    t.api_tokens.c.is_active,
    t.api_tokens.c.generated_by,
    t.api_tokens.c.creator_ua,
    t.api_tokens.c.created_at,
    t.api_tokens.c.last_used,
)


def _account(row: Any) -> Account:
    return Account(
        row[0], row[1], bool(row[2]), row[3], bool(row[4]), bool(row[5]), row[6], row[7], row[8]
    )


def _team(row: Any) -> Team:
    return Team(*row)


def _token(row: Any) -> ApiToken:
    return ApiToken(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7], row[8])


class IdentityStore:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def _read(self):  # type: ignore[no-untyped-def]
        return self.store._read()

    def _write(self):  # type: ignore[no-untyped-def]
        return self.store._write()

    def _bump_epoch(self, conn: Connection) -> None:
        """Every change that can take access away bumps this counter; processes that cache
        credentials or decisions drop their caches when it moves."""
        current = conn.execute(
            select(t.settings.c.value).where(t.settings.c.key == EPOCH_KEY)
        ).scalar()
        value = str(int(current or "0") + 1)
        stmt = self.store._insert(t.settings).values(
            key=EPOCH_KEY, value=value, updated_at=utcnow()
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.settings.c.key], set_={"value": value, "updated_at": utcnow()}
            )
        )

    def epoch(self) -> str:
        with self._read() as conn:
            return (
                conn.execute(
                    select(t.settings.c.value).where(t.settings.c.key == EPOCH_KEY)
                ).scalar()
                or "0"
            )

    # -- accounts ---------------------------------------------------------------------------

    def get_account(self, name: str) -> Account | None:
        with self._read() as conn:
            row = conn.execute(select(*_ACCOUNT_COLUMNS).where(t.accounts.c.name == name)).first()
        return _account(row) if row else None

    def account_ldap_dn(self, name: str) -> str | None:
        with self._read() as conn:
            return conn.execute(
                select(t.accounts.c.ldap_dn).where(t.accounts.c.name == name)
            ).scalar()

    def list_accounts(
        self, kind: str = "all", start: str | None = None, limit: int = 10
    ) -> list[Account]:
        q = select(*_ACCOUNT_COLUMNS).order_by(t.accounts.c.name).limit(limit)
        if kind == "users":
            q = q.where(t.accounts.c.is_org.is_(False))
        elif kind == "orgs":
            q = q.where(t.accounts.c.is_org.is_(True))
        elif kind == "admins":
            q = q.where(t.accounts.c.is_admin.is_(True))
        elif kind == "inactive":
            q = q.where(t.accounts.c.is_active.is_(False))
        if start:
            q = q.where(t.accounts.c.name >= start)
        with self._read() as conn:
            return [_account(r) for r in conn.execute(q)]

    def create_account(
        self,
        name: str,
        *,
        is_org: bool,
        full_name: str = "",
        password_hash: str | None = None,
        is_admin: bool = False,
        is_active: bool = True,
        source: str = "local",
        ldap_dn: str | None = None,
    ) -> Account:
        now = utcnow()
        with self._write() as conn:
            # Repositories an admin pushed into a namespace nobody owns must not pass to
            # whoever later registers that name (they would become its admin).
            orphans = conn.execute(
                select(t.repositories.c.id).where(t.repositories.c.namespace == name).limit(1)
            ).first()
            if orphans is not None:
                raise NamespaceInUse(name)
            created = conn.execute(
                self.store._insert(t.accounts)
                .values(
                    name=name,
                    is_org=is_org,
                    full_name=full_name,
                    password_hash=password_hash,
                    is_admin=is_admin and not is_org,
                    is_active=is_active,
                    source=source,
                    ldap_dn=ldap_dn,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
                .returning(t.accounts.c.id)
            ).scalar()
            if created is None:
                raise AlreadyExists(name)
        account = self.get_account(name)
        assert account is not None
        return account

    def update_account(self, name: str, **values: Any) -> Account | None:
        """Change fields (full_name, is_admin, is_active, password_hash, ldap_dn, source)."""
        allowed = {"full_name", "is_admin", "is_active", "password_hash", "ldap_dn", "source"}
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"unknown account fields {sorted(unknown)}")
        with self._write() as conn:
            result = conn.execute(
                update(t.accounts)
                .where(t.accounts.c.name == name)
                .values(**values, updated_at=utcnow())
            )
            if result.rowcount and values.keys() & {"is_admin", "is_active", "password_hash"}:
                self._bump_epoch(conn)
        return self.get_account(name) if result.rowcount else None

    def delete_account(self, name: str) -> bool:
        """Delete an account, and, for a namespace, every repository in it."""
        with self._write() as conn:
            conn.execute(delete(t.repositories).where(t.repositories.c.namespace == name))
            result = conn.execute(delete(t.accounts).where(t.accounts.c.name == name))
            self._bump_epoch(conn)
        return result.rowcount > 0

    # -- organisation membership ------------------------------------------------------------

    def org_members(
        self, org_id: int, start: str | None = None, limit: int = 10
    ) -> list[tuple[Account, bool]]:
        q = (
            select(*_ACCOUNT_COLUMNS, t.org_members.c.is_owner)
            .join(t.org_members, t.org_members.c.user_id == t.accounts.c.id)
            .where(t.org_members.c.org_id == org_id)
            .order_by(t.accounts.c.name)
            .limit(limit)
        )
        if start:
            q = q.where(t.accounts.c.name >= start)
        with self._read() as conn:
            return [(_account(r), bool(r[-1])) for r in conn.execute(q)]

    def org_membership(self, org_id: int, user_id: int) -> bool | None:
        """None if not a member, else whether the member is an owner."""
        with self._read() as conn:
            value = conn.execute(
                select(t.org_members.c.is_owner).where(
                    t.org_members.c.org_id == org_id, t.org_members.c.user_id == user_id
                )
            ).first()
        return None if value is None else bool(value[0])

    def set_org_member(self, org_id: int, user_id: int, *, is_owner: bool) -> None:
        with self._write() as conn:
            self._set_org_member(conn, org_id, user_id, is_owner)
            self._bump_epoch(conn)

    def _set_org_member(
        self, conn: Connection, org_id: int, user_id: int, is_owner: bool | None
    ) -> None:
        stmt = self.store._insert(t.org_members).values(
            org_id=org_id, user_id=user_id, is_owner=bool(is_owner)
        )
        if is_owner is None:  # keep an existing membership as it is
            conn.execute(stmt.on_conflict_do_nothing())
        else:
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[t.org_members.c.org_id, t.org_members.c.user_id],
                    set_={"is_owner": is_owner},
                )
            )

    def remove_org_member(self, org_id: int, user_id: int) -> bool:
        """Remove a member from the organisation and from all its teams."""
        with self._write() as conn:
            conn.execute(
                delete(t.team_members).where(
                    t.team_members.c.user_id == user_id,
                    t.team_members.c.team_id.in_(
                        select(t.teams.c.id).where(t.teams.c.org_id == org_id)
                    ),
                )
            )
            result = conn.execute(
                delete(t.org_members).where(
                    t.org_members.c.org_id == org_id, t.org_members.c.user_id == user_id
                )
            )
            self._bump_epoch(conn)
        return result.rowcount > 0

    def organizations_of(self, user_id: int) -> list[tuple[str, bool]]:
        q = (
            select(t.accounts.c.name, t.org_members.c.is_owner)
            .join(t.org_members, t.org_members.c.org_id == t.accounts.c.id)
            .where(t.org_members.c.user_id == user_id)
            .order_by(t.accounts.c.name)
        )
        with self._read() as conn:
            return [(r[0], bool(r[1])) for r in conn.execute(q)]

    # -- teams ------------------------------------------------------------------------------

    def _teams(self):  # type: ignore[no-untyped-def]
        return select(*_TEAM_COLUMNS).join(t.accounts, t.accounts.c.id == t.teams.c.org_id)

    def list_teams(self, org_id: int, start: str | None = None, limit: int = 10) -> list[Team]:
        q = self._teams().where(t.teams.c.org_id == org_id).order_by(t.teams.c.name).limit(limit)
        if start:
            q = q.where(t.teams.c.name >= start)
        with self._read() as conn:
            return [_team(r) for r in conn.execute(q)]

    def teams_with_ldap_group(self) -> list[Team]:
        q = self._teams().where(t.teams.c.ldap_group_dn.is_not(None)).order_by(t.teams.c.id)
        with self._read() as conn:
            return [_team(r) for r in conn.execute(q)]

    def get_team(self, org_id: int, name: str) -> Team | None:
        q = self._teams().where(t.teams.c.org_id == org_id, t.teams.c.name == name)
        with self._read() as conn:
            row = conn.execute(q).first()
        return _team(row) if row else None

    def create_team(
        self, org_id: int, name: str, description: str = "", ldap_group_dn: str | None = None
    ) -> Team:
        with self._write() as conn:
            created = conn.execute(
                self.store._insert(t.teams)
                .values(
                    org_id=org_id,
                    name=name,
                    description=description,
                    ldap_group_dn=ldap_group_dn,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing()
                .returning(t.teams.c.id)
            ).scalar()
            if created is None:
                raise AlreadyExists(name)
        team = self.get_team(org_id, name)
        assert team is not None
        return team

    def update_team(self, team_id: int, **values: Any) -> None:
        allowed = {"name", "description", "ldap_group_dn"}
        if set(values) - allowed:
            raise ValueError(f"unknown team fields {sorted(set(values) - allowed)}")
        with self._write() as conn:
            conn.execute(update(t.teams).where(t.teams.c.id == team_id).values(**values))

    def delete_team(self, team_id: int) -> bool:
        with self._write() as conn:
            result = conn.execute(delete(t.teams).where(t.teams.c.id == team_id))
            self._bump_epoch(conn)
        return result.rowcount > 0

    def team_members(
        self, team_id: int, start: str | None = None, limit: int = 10
    ) -> list[Account]:
        q = (
            select(*_ACCOUNT_COLUMNS)
            .join(t.team_members, t.team_members.c.user_id == t.accounts.c.id)
            .where(t.team_members.c.team_id == team_id)
            .order_by(t.accounts.c.name)
            .limit(limit)
        )
        if start:
            q = q.where(t.accounts.c.name >= start)
        with self._read() as conn:
            return [_account(r) for r in conn.execute(q)]

    def is_team_member(self, team_id: int, user_id: int) -> bool:
        with self._read() as conn:
            return (
                conn.execute(
                    select(t.team_members.c.user_id).where(
                        t.team_members.c.team_id == team_id, t.team_members.c.user_id == user_id
                    )
                ).first()
                is not None
            )

    def add_team_member(self, team: Team, user_id: int) -> None:
        """Add a user to a team (and to the team's organisation, as a plain member)."""
        with self._write() as conn:
            self._set_org_member(conn, team.org_id, user_id, None)
            conn.execute(
                self.store._insert(t.team_members)
                .values(team_id=team.id, user_id=user_id)
                .on_conflict_do_nothing()
            )
            self._bump_epoch(conn)

    def remove_team_member(self, team_id: int, user_id: int) -> bool:
        with self._write() as conn:
            result = conn.execute(
                delete(t.team_members).where(
                    t.team_members.c.team_id == team_id, t.team_members.c.user_id == user_id
                )
            )
            self._bump_epoch(conn)
        return result.rowcount > 0

    def set_team_members(self, team: Team, user_ids: Iterable[int]) -> tuple[int, int]:
        """Make the team's members exactly `user_ids` (LDAP sync). Returns (added, removed)."""
        wanted = set(user_ids)
        with self._write() as conn:
            current = set(
                conn.execute(
                    select(t.team_members.c.user_id).where(t.team_members.c.team_id == team.id)
                ).scalars()
            )
            added, removed = wanted - current, current - wanted
            if removed:
                conn.execute(
                    delete(t.team_members).where(
                        t.team_members.c.team_id == team.id,
                        t.team_members.c.user_id.in_(removed),
                    )
                )
            for user_id in added:
                self._set_org_member(conn, team.org_id, user_id, None)
                conn.execute(t.team_members.insert().values(team_id=team.id, user_id=user_id))
            if added or removed:
                self._bump_epoch(conn)
        return len(added), len(removed)

    # -- grants -----------------------------------------------------------------------------

    def repository_grants(self, repository_id: int) -> list[tuple[Team, str]]:
        q = (
            self._teams()
            .add_columns(t.repository_team_access.c.level)
            .join(t.repository_team_access, t.repository_team_access.c.team_id == t.teams.c.id)
            .where(t.repository_team_access.c.repository_id == repository_id)
            .order_by(t.teams.c.name)
        )
        with self._read() as conn:
            return [(_team(r[:-1]), r[-1]) for r in conn.execute(q)]

    def set_repository_grant(self, repository_id: int, team_id: int, level: str) -> None:
        self._set_grant(
            t.repository_team_access, {"repository_id": repository_id, "team_id": team_id}, level
        )

    def delete_repository_grant(self, repository_id: int, team_id: int) -> bool:
        return self._delete_grant(
            t.repository_team_access,
            t.repository_team_access.c.repository_id == repository_id,
            t.repository_team_access.c.team_id == team_id,
        )

    def namespace_grants(self, org_id: int) -> list[tuple[Team, str]]:
        q = (
            self._teams()
            .add_columns(t.namespace_team_access.c.level)
            .join(t.namespace_team_access, t.namespace_team_access.c.team_id == t.teams.c.id)
            .where(t.namespace_team_access.c.org_id == org_id)
            .order_by(t.teams.c.name)
        )
        with self._read() as conn:
            return [(_team(r[:-1]), r[-1]) for r in conn.execute(q)]

    def set_namespace_grant(self, org_id: int, team_id: int, level: str) -> None:
        self._set_grant(t.namespace_team_access, {"org_id": org_id, "team_id": team_id}, level)

    def delete_namespace_grant(self, org_id: int, team_id: int) -> bool:
        return self._delete_grant(
            t.namespace_team_access,
            t.namespace_team_access.c.org_id == org_id,
            t.namespace_team_access.c.team_id == team_id,
        )

    def _set_grant(self, table: Any, key: dict[str, int], level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown access level {level!r}")
        with self._write() as conn:
            conn.execute(
                self.store._insert(table)
                .values(**key, level=level)
                .on_conflict_do_update(index_elements=list(key), set_={"level": level})
            )
            self._bump_epoch(conn)

    def _delete_grant(self, table: Any, *where: Any) -> bool:
        with self._write() as conn:
            result = conn.execute(delete(table).where(*where))
            self._bump_epoch(conn)
        return result.rowcount > 0

    def team_repository_grants(self, team_id: int) -> list[tuple[str, str]]:
        q = (
            select(t.repositories.c.name, t.repository_team_access.c.level)
            .join(
                t.repository_team_access,
                t.repository_team_access.c.repository_id == t.repositories.c.id,
            )
            .where(t.repository_team_access.c.team_id == team_id)
            .order_by(t.repositories.c.name)
        )
        with self._read() as conn:
            return [(r[0], r[1]) for r in conn.execute(q)]

    def granted_levels(self, user_id: int, org_id: int, repository_id: int | None) -> list[str]:
        """Every level a user holds on a repository of an organisation: team grants on the
        repository, team grants on the namespace, and "admin" for an owner."""
        tm = t.team_members
        parts = [
            select(t.namespace_team_access.c.level)
            .join(tm, tm.c.team_id == t.namespace_team_access.c.team_id)
            .where(tm.c.user_id == user_id, t.namespace_team_access.c.org_id == org_id),
            select(literal("admin")).where(
                t.org_members.c.org_id == org_id,
                t.org_members.c.user_id == user_id,
                t.org_members.c.is_owner.is_(True),
            ),
        ]
        if repository_id is not None:
            parts.append(
                select(t.repository_team_access.c.level)
                .join(tm, tm.c.team_id == t.repository_team_access.c.team_id)
                .where(
                    tm.c.user_id == user_id,
                    t.repository_team_access.c.repository_id == repository_id,
                )
            )
        with self._read() as conn:
            return list(conn.execute(union_all(*parts)).scalars())

    def readable_repositories(
        self,
        *,
        user_id: int | None,
        username: str | None,
        is_admin: bool,
        include_public: bool,
        last: str | None,
        limit: int | None,
        namespace: str | None = None,
        start: str | None = None,
    ) -> list[tuple[str, str]]:
        """(name, visibility) of repositories the caller may read, in name order."""
        r = t.repositories
        q = select(r.c.name, r.c.visibility).order_by(r.c.name)
        if not is_admin:
            visible = []
            if include_public:
                visible.append(r.c.visibility == "public")
            if user_id is not None:
                tm = t.team_members
                owned = (
                    select(t.accounts.c.name)
                    .join(t.org_members, t.org_members.c.org_id == t.accounts.c.id)
                    .where(t.org_members.c.user_id == user_id, t.org_members.c.is_owner.is_(True))
                )
                by_namespace = (
                    select(t.accounts.c.name)
                    .join(
                        t.namespace_team_access, t.namespace_team_access.c.org_id == t.accounts.c.id
                    )
                    .join(tm, tm.c.team_id == t.namespace_team_access.c.team_id)
                    .where(tm.c.user_id == user_id)
                )
                by_repository = (
                    select(t.repository_team_access.c.repository_id)
                    .join(tm, tm.c.team_id == t.repository_team_access.c.team_id)
                    .where(tm.c.user_id == user_id)
                )
                visible += [
                    r.c.namespace == username,
                    r.c.namespace.in_(owned),
                    r.c.namespace.in_(by_namespace),
                    r.c.id.in_(by_repository),
                ]
            if not visible:
                return []
            q = q.where(or_(*visible))
        if namespace is not None:
            q = q.where(r.c.namespace == namespace)
        if last:
            q = q.where(r.c.name > last)
        if start:
            q = q.where(r.c.name >= start)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [(row[0], row[1]) for row in conn.execute(q)]

    # -- repositories (management fields) ---------------------------------------------------

    def repository_details(self, name: str) -> dict[str, Any] | None:
        r = t.repositories
        with self._read() as conn:
            row = conn.execute(select(r).where(r.c.name == name)).mappings().first()
        return dict(row) if row else None

    def update_repository(self, name: str, **values: Any) -> bool:
        allowed = {"visibility", "short_description", "long_description"}
        if set(values) - allowed:
            raise ValueError(f"unknown repository fields {sorted(set(values) - allowed)}")
        with self._write() as conn:
            result = conn.execute(
                update(t.repositories).where(t.repositories.c.name == name).values(**values)
            )
            if "visibility" in values:
                self._bump_epoch(conn)
        return result.rowcount > 0

    def delete_repository(self, name: str) -> bool:
        """Delete a repository with its tags, manifests, links and grants (blobs stay for GC)."""
        with self._write() as conn:
            result = conn.execute(delete(t.repositories).where(t.repositories.c.name == name))
            self._bump_epoch(conn)
        return result.rowcount > 0

    def tag_details(
        self, repository_id: int, start: str | None, limit: int | None, name: str | None = None
    ) -> list[dict[str, Any]]:
        m = t.manifests
        q = (
            select(
                t.tags.c.name,
                m.c.digest,
                m.c.media_type,
                m.c.size,
                m.c.image_size,
                # Only manifests whose image size is not recorded yet need their content.
                case((m.c.image_size.is_(None), m.c.content), else_=None).label("content"),
                t.tags.c.author,
                t.tags.c.created_at,
                t.tags.c.updated_at,
            )
            .join(m, m.c.id == t.tags.c.manifest_id)
            .where(t.tags.c.repository_id == repository_id)
            .order_by(t.tags.c.name)
        )
        if name is not None:
            q = q.where(t.tags.c.name == name)
        if start:
            q = q.where(t.tags.c.name >= start)
        if limit is not None:
            q = q.limit(limit)
        with self._read() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    # -- personal access tokens -------------------------------------------------------------

    def _tokens(self):  # type: ignore[no-untyped-def]
        return select(*_TOKEN_COLUMNS).join(
            t.accounts, t.accounts.c.id == t.api_tokens.c.account_id
        )

    def create_token(
        self, account_id: int, hashed: str, label: str, generated_by: str, creator_ua: str
    ) -> ApiToken:
        with self._write() as conn:
            conn.execute(
                t.api_tokens.insert().values(
                    hashed_token=hashed,
                    account_id=account_id,
                    label=label,
                    is_active=True,
                    generated_by=generated_by,
                    creator_ua=creator_ua[:255],
                    created_at=utcnow(),
                )
            )
        token = self.get_token(hashed)
        assert token is not None
        return token

    def get_token(self, hashed: str) -> ApiToken | None:
        with self._read() as conn:
            row = conn.execute(self._tokens().where(t.api_tokens.c.hashed_token == hashed)).first()
        return _token(row) if row else None

    def list_tokens(
        self, username: str | None, start: str | None = None, limit: int = 10
    ) -> list[ApiToken]:
        q = self._tokens().order_by(t.api_tokens.c.hashed_token).limit(limit)
        if username is not None:
            q = q.where(t.accounts.c.name == username)
        if start:
            q = q.where(t.api_tokens.c.hashed_token >= start)
        with self._read() as conn:
            return [_token(r) for r in conn.execute(q)]

    def update_token(self, hashed: str, **values: Any) -> bool:
        allowed = {"label", "is_active"}
        if set(values) - allowed:
            raise ValueError(f"unknown token fields {sorted(set(values) - allowed)}")
        with self._write() as conn:
            result = conn.execute(
                update(t.api_tokens).where(t.api_tokens.c.hashed_token == hashed).values(**values)
            )
            if "is_active" in values:
                self._bump_epoch(conn)
        return result.rowcount > 0

    def delete_tokens(self, hashed: Iterable[str]) -> int:
        hashed = list(hashed)
        if not hashed:
            return 0
        with self._write() as conn:
            result = conn.execute(
                delete(t.api_tokens).where(t.api_tokens.c.hashed_token.in_(hashed))
            )
            self._bump_epoch(conn)
        return result.rowcount

    def tokens_matching(self, username: str | None, used_before: datetime | None) -> list[str]:
        q = select(t.api_tokens.c.hashed_token).join(
            t.accounts, t.accounts.c.id == t.api_tokens.c.account_id
        )
        if username is not None:
            q = q.where(t.accounts.c.name == username)
        if used_before is not None:
            q = q.where(
                or_(
                    t.api_tokens.c.last_used < used_before,
                    and_(
                        t.api_tokens.c.last_used.is_(None),
                        t.api_tokens.c.created_at < used_before,
                    ),
                )
            )
        with self._read() as conn:
            return list(conn.execute(q).scalars())

    def token_login(self, hashed: str) -> tuple[str, bool, bool] | None:
        """(username, is_admin, usable) for a token; usable needs both active."""
        q = select(
            t.accounts.c.name,
            t.accounts.c.is_admin,
            t.accounts.c.is_active,
            t.api_tokens.c.is_active,
        ).join(t.accounts, t.accounts.c.id == t.api_tokens.c.account_id)
        with self._read() as conn:
            row = conn.execute(q.where(t.api_tokens.c.hashed_token == hashed)).first()
        if row is None:
            return None
        return row[0], bool(row[1]), bool(row[2]) and bool(row[3])

    def touch_token(self, hashed: str, when: datetime) -> None:
        with self.store._write(durable=False) as conn:
            conn.execute(
                update(t.api_tokens)
                .where(t.api_tokens.c.hashed_token == hashed)
                .values(last_used=when)
            )

    # -- settings ---------------------------------------------------------------------------

    def get_setting(self, key: str) -> Any:
        with self._read() as conn:
            value = conn.execute(select(t.settings.c.value).where(t.settings.c.key == key)).scalar()
        return None if value is None else json.loads(value)

    def set_setting(self, key: str, value: Any, *, affects_access: bool = False) -> None:
        encoded = json.dumps(value)
        now = utcnow()
        with self._write() as conn:
            conn.execute(
                self.store._insert(t.settings)
                .values(key=key, value=encoded, updated_at=now)
                .on_conflict_do_update(
                    index_elements=[t.settings.c.key], set_={"value": encoded, "updated_at": now}
                )
            )
            if affects_access:
                self._bump_epoch(conn)

    def set_setting_if_missing(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute(
                self.store._insert(t.settings)
                .values(key=key, value=json.dumps(value), updated_at=utcnow())
                .on_conflict_do_nothing()
            )

    # -- audit trail ------------------------------------------------------------------------

    def add_event(
        self,
        action: str,
        target: str,
        *,
        actor: str | None,
        client: str | None,
        success: bool = True,
        details: dict[str, Any] | None = None,
    ) -> None:
        with self.store._write(durable=False) as conn:
            conn.execute(
                t.audit_events.insert().values(
                    at=utcnow(),
                    actor=actor,
                    client=client,
                    action=action,
                    target=target[:512],
                    success=success,
                    details=json.dumps(details) if details else None,
                )
            )

    def list_events(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        before_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
    ) -> list[AuditEvent]:
        e = t.audit_events
        q = select(e).order_by(e.c.id.desc()).limit(limit)
        if action:
            q = q.where(e.c.action == action)
        if actor:
            q = q.where(e.c.actor == actor)
        if before_id is not None:
            q = q.where(e.c.id < before_id)
        if since is not None:
            q = q.where(e.c.at >= since)
        if until is not None:
            q = q.where(e.c.at < until)
        with self._read() as conn:
            return [AuditEvent(*row) for row in conn.execute(q)]
