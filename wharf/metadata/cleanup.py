"""Stored names that today's validators refuse (tags, accounts, teams, repositories stored
before names were matched whole): the rows, and the changes that repair them, inside the
caller's transaction. Which names are valid and what a repair is are the caller's decision
(wharf.upgrade.names)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, select, update

from wharf.metadata import schema as t
from wharf.metadata.identity import EPOCH_KEY
from wharf.metadata.store import utcnow


@dataclass(frozen=True)
class StoredTag:
    repository_id: int
    repository: str
    name: str
    digest: str


@dataclass(frozen=True)
class StoredAccount:
    id: int
    name: str
    is_org: bool
    is_active: bool
    source: str  # "local" | "ldap"


@dataclass(frozen=True)
class StoredTeam:
    id: int
    org_id: int
    org: str
    name: str


@dataclass(frozen=True)
class StoredRepository:
    id: int
    name: str
    namespace: str


def tags(conn: Connection) -> Iterator[StoredTag]:
    q = (
        select(t.tags.c.repository_id, t.repositories.c.name, t.tags.c.name, t.manifests.c.digest)
        .join(t.repositories, t.repositories.c.id == t.tags.c.repository_id)
        .join(t.manifests, t.manifests.c.id == t.tags.c.manifest_id)
        .order_by(t.repositories.c.name, t.tags.c.name)
        .execution_options(yield_per=1000)  # every tag of the registry: streamed
    )
    for row in conn.execute(q):
        yield StoredTag(*row)


def delete_tag(conn: Connection, tag: StoredTag) -> None:
    conn.execute(
        delete(t.tags).where(t.tags.c.repository_id == tag.repository_id, t.tags.c.name == tag.name)
    )


def accounts(conn: Connection) -> list[StoredAccount]:
    q = select(
        t.accounts.c.id,
        t.accounts.c.name,
        t.accounts.c.is_org,
        t.accounts.c.is_active,
        t.accounts.c.source,
    ).order_by(t.accounts.c.id)
    return [StoredAccount(*row) for row in conn.execute(q)]


def namespace_taken(conn: Connection, name: str) -> bool:
    """An account has this name, or repositories are in a namespace of this name."""
    return bool(
        conn.execute(
            select(
                exists().where(t.accounts.c.name == name)
                | exists().where(t.repositories.c.namespace == name)
            )
        ).scalar()
    )


def rename_account(conn: Connection, account: StoredAccount, new: str, deactivate: bool) -> int:
    """Rename an account and move the repositories of its namespace along; returns how many
    repositories moved."""
    values: dict[str, Any] = {"name": new, "updated_at": utcnow()}
    if deactivate:
        values["is_active"] = False
    conn.execute(update(t.accounts).where(t.accounts.c.id == account.id).values(**values))
    moved = conn.execute(
        select(t.repositories.c.id, t.repositories.c.name).where(
            t.repositories.c.namespace == account.name
        )
    ).all()
    for repository_id, name in moved:
        rest = name[len(account.name) + 1 :]  # the name after "<namespace>/"
        conn.execute(
            update(t.repositories)
            .where(t.repositories.c.id == repository_id)
            .values(name=f"{new}/{rest}", namespace=new)
        )
    _bump_epoch(conn)
    return len(moved)


def teams(conn: Connection) -> list[StoredTeam]:
    q = (
        select(t.teams.c.id, t.teams.c.org_id, t.accounts.c.name, t.teams.c.name)
        .join(t.accounts, t.accounts.c.id == t.teams.c.org_id)
        .order_by(t.teams.c.id)
    )
    return [StoredTeam(*row) for row in conn.execute(q)]


def team_taken(conn: Connection, org_id: int, name: str) -> bool:
    return bool(
        conn.execute(
            select(exists().where(and_(t.teams.c.org_id == org_id, t.teams.c.name == name)))
        ).scalar()
    )


def rename_team(conn: Connection, team: StoredTeam, new: str) -> None:
    conn.execute(update(t.teams).where(t.teams.c.id == team.id).values(name=new))
    _bump_epoch(conn)


def repositories(conn: Connection) -> list[StoredRepository]:
    q = select(t.repositories.c.id, t.repositories.c.name, t.repositories.c.namespace).order_by(
        t.repositories.c.id
    )
    return [StoredRepository(*row) for row in conn.execute(q)]


def repository_taken(conn: Connection, name: str) -> bool:
    return bool(conn.execute(select(exists().where(t.repositories.c.name == name))).scalar())


def rename_repository(conn: Connection, repository: StoredRepository, new: str) -> None:
    namespace = new.split("/", 1)[0]
    conn.execute(
        update(t.repositories)
        .where(t.repositories.c.id == repository.id)
        .values(name=new, namespace=namespace)
    )
    _bump_epoch(conn)


def audit(conn: Connection, action: str, target: str, details: dict[str, Any]) -> None:
    """An audit event of the upgrade (actor "wharf upgrade"), kept with the data it changed."""
    conn.execute(
        t.audit_events.insert().values(
            at=utcnow(),
            actor="wharf upgrade",
            client=None,
            action=action,
            target=target[:512],
            success=True,
            details=json.dumps(details),
        )
    )


def _bump_epoch(conn: Connection) -> None:
    """Renames can take access away: processes caching credentials or decisions drop their
    caches when this counter moves (as wharf.metadata.identity does)."""
    current = conn.execute(select(t.settings.c.value).where(t.settings.c.key == EPOCH_KEY)).scalar()
    value = str(int(current or "0") + 1)
    if current is None:
        conn.execute(t.settings.insert().values(key=EPOCH_KEY, value=value, updated_at=utcnow()))
    else:
        conn.execute(
            update(t.settings)
            .where(t.settings.c.key == EPOCH_KEY)
            .values(value=value, updated_at=utcnow())
        )
