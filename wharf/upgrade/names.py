"""Release 0.2.1's data step: repair the names stored while validators matched with `^...$`
(which let "v1\\n" through) by what an operator would want, and report every change.

- a tag its validator refuses is deleted (its manifest stays, reachable by digest: the report
  names the digest so that it can be tagged again under a valid name);
- an account, team or repository is never deleted: it is renamed to a valid name that nobody
  uses (its name without the refused characters, else `renamed-<id>`), keeping its grants,
  memberships, repositories and content; a renamed user is also deactivated, since they log in
  under a name they were never told (an admin reactivates them once they know it); the
  repositories of a renamed account move to the new namespace along with it. A directory
  (LDAP) user whose name differed only in case is renamed to it in lower case and stays
  active: logins and the sync now map directory names to lower-case account names.

Each change is logged, printed by `wharf upgrade`, and recorded in the audit trail (actor
"wharf upgrade"), in the transaction that makes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from sqlalchemy import Connection

from wharf.management import validation
from wharf.management.errors import Invalid
from wharf.metadata import cleanup
from wharf.registry.names import is_valid_name, is_valid_tag

log = logging.getLogger("wharf.upgrade")

_NOT_NAME_CHAR = re.compile(r"[^a-z0-9._-]")
_NOT_TEAM_CHAR = re.compile(r"[^A-Za-z0-9._-]")


def repair_stored_names(conn: Connection) -> list[str]:
    """The step: returns the report, one line per change (empty when nothing was refused)."""
    report: list[str] = []
    _tags(conn, report)
    _accounts(conn, report)  # before repositories: a renamed account moves its repositories
    _teams(conn, report)
    _repositories(conn, report)
    for line in report:
        log.warning("upgrade: %s", line)
    return report


def _tags(conn: Connection, report: list[str]) -> None:
    refused = [tag for tag in cleanup.tags(conn) if not is_valid_tag(tag.name)]
    for tag in refused:
        cleanup.delete_tag(conn, tag)
        cleanup.audit(
            conn,
            "upgrade_tag_deleted",
            tag.repository,
            {"tag": tag.name, "digest": tag.digest},
        )
        report.append(
            f"deleted the tag {tag.name!r} of {tag.repository!r}, an invalid tag name (it "
            f"pointed at {tag.digest}: tag that digest again to keep it)"
        )


def _accounts(conn: Connection, report: list[str]) -> None:
    for account in cleanup.accounts(conn):
        if _valid(validation.account_name, account.name):
            continue
        cleaned = _NOT_NAME_CHAR.sub("", account.name.lower())[: validation.MAX_ACCOUNT_NAME]
        new = _free_name(
            [cleaned],
            f"renamed-{account.id}",
            lambda n: _valid(validation.account_name, n) and not cleanup.namespace_taken(conn, n),
        )
        # A directory user renamed to their directory name in lower case (how logins and the
        # sync now map it) keeps working; any other renamed user does not know their name.
        known = account.source == "ldap" and new == account.name.lower()
        deactivate = not account.is_org and account.is_active and not known
        moved = cleanup.rename_account(conn, account, new, deactivate)
        cleanup.audit(
            conn,
            "upgrade_account_renamed",
            new,
            {"from": account.name, "deactivated": deactivate, "repositoriesMoved": moved},
        )
        kind = "organisation" if account.is_org else "user"
        line = f"renamed the {kind} {account.name!r} to {new!r}, an invalid account name"
        if moved:
            line += f" ({moved} repositories moved to the namespace {new!r})"
        if deactivate:
            line += "; deactivated until an admin reactivates it, once its owner knows the name"
        report.append(line)


def _teams(conn: Connection, report: list[str]) -> None:
    for team in cleanup.teams(conn):
        if _valid(validation.team_name, team.name):
            continue
        cleaned = _NOT_TEAM_CHAR.sub("", team.name)[:100]
        new = _free_name(
            [cleaned],
            f"renamed-{team.id}",
            lambda n, org_id=team.org_id: (
                _valid(validation.team_name, n) and not cleanup.team_taken(conn, org_id, n)
            ),
        )
        cleanup.rename_team(conn, team, new)
        cleanup.audit(conn, "upgrade_team_renamed", f"{team.org}/{new}", {"from": team.name})
        report.append(
            f"renamed the team {team.name!r} of {team.org!r} to {new!r}, an invalid team name"
        )


def _repositories(conn: Connection, report: list[str]) -> None:
    for repository in cleanup.repositories(conn):
        if is_valid_name(repository.name):
            continue
        namespace, _, rest = repository.name.partition("/")
        if not _valid(validation.account_name, namespace):
            namespace = f"renamed-{repository.id}"  # a namespace no account owns
        cleaned = "/".join(
            part for part in (_NOT_NAME_CHAR.sub("", p.lower()) for p in rest.split("/")) if part
        )
        new = _free_name(
            [f"{namespace}/{cleaned}"],
            f"{namespace}/renamed-{repository.id}",
            lambda n: is_valid_name(n) and not cleanup.repository_taken(conn, n),
        )
        cleanup.rename_repository(conn, repository, new)
        cleanup.audit(conn, "upgrade_repository_renamed", new, {"from": repository.name})
        report.append(
            f"renamed the repository {repository.name!r} to {new!r}, an invalid repository name"
        )


def _valid(validator: Callable[[str], object], name: str) -> bool:
    try:
        validator(name)
    except Invalid:
        return False
    return True


def _free_name(candidates: list[str], fallback: str, usable: Callable[[str], bool]) -> str:
    for name in candidates:
        if usable(name):
            return name
    name, n = fallback, 1
    while not usable(name):
        n += 1
        name = f"{fallback}-{n}"
    return name
