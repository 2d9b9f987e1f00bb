"""Operator commands for identity and access: users, organisations, teams, grants,
repositories, access tokens and LDAP sync, run against the installation's metadata store.

They act as a system administrator (audited as `wharf-cli`). Passwords come from
WHARF_USER_PASSWORD or a prompt, never from the command line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from wharf.auth.identity import Identity
from wharf.config import ConfigError, load_settings
from wharf.management.errors import NotAuthorized, ServiceError

CLI_ACTOR = Identity("wharf-cli", is_admin=True, user_id=None, method="cli")
EXIT_FAILURE, EXIT_USAGE, EXIT_REFUSED = 1, 2, 3


def installation_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("--db", help="Metadata store URL (default: the installation's).")(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(path_type=Path, exists=True, dir_okay=False),
        help="TOML configuration file.",
    )(func)
    return click.option(
        "--data-dir",
        type=click.Path(path_type=Path),
        envvar="WHARF_DATA_DIR",
        help="Data directory (default ./wharf-data).",
    )(func)


def require_installation(settings: Any) -> None:
    """Exit 1 with a message when the embedded store the settings name does not exist (a
    command pointed at the wrong directory must not create an empty installation)."""
    embedded = settings.data_dir / "wharf.db"
    if settings.db_url == f"sqlite:///{embedded}" and not embedded.exists():
        click.echo(
            f"wharf: no installation in {settings.data_dir} (run `wharf serve` once, "
            "or give --data-dir)",
            err=True,
        )
        sys.exit(EXIT_FAILURE)


@contextmanager
def services_for(data_dir: Path | None, config_file: Path | None, db: str | None) -> Iterator[Any]:
    from wharf.services import build_services

    try:
        settings = load_settings(config_file, {"data_dir": data_dir, "db": db})
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    require_installation(settings)
    from wharf.upgrade.engine import UpgradeRefused, check_start

    services = build_services(settings)
    try:
        try:
            check_start(services.store)
        except UpgradeRefused as e:
            click.echo(f"wharf: refused: {e}", err=True)
            sys.exit(EXIT_REFUSED)
        yield services
    except NotAuthorized as e:
        click.echo(f"wharf: {e.message}", err=True)
        sys.exit(EXIT_REFUSED)
    except ServiceError as e:
        click.echo(f"wharf: {e.code}: {e.message}", err=True)
        sys.exit(EXIT_FAILURE)
    finally:
        services.close()


def read_password(prompt: str) -> str:
    value = os.environ.get("WHARF_USER_PASSWORD")
    if value:
        return value
    if not sys.stdin.isatty():
        raise click.UsageError("set WHARF_USER_PASSWORD or run on a terminal to be prompted")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=True)


def emit(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


# -- users -----------------------------------------------------------------------------------


@click.group()
def user() -> None:
    """Manage user accounts."""


@user.command("create")
@click.argument("name")
@click.option("--admin", is_flag=True, help="Make the user a system administrator.")
@click.option("--full-name", default="", help="Display name.")
@installation_options
def user_create(name: str, admin: bool, full_name: str, **where: Any) -> None:
    """Create a local user (password from WHARF_USER_PASSWORD or a prompt)."""
    password = read_password(f"Password for {name}")
    with services_for(**where) as svc:
        emit(
            svc.accounts.create_account(
                CLI_ACTOR,
                {"name": name, "password": password, "isAdmin": admin, "fullName": full_name},
            )
        )


@user.command("list")
@click.option(
    "--filter",
    "kind",
    default="users",
    type=click.Choice(["all", "users", "orgs", "admins", "inactive"]),
)
@installation_options
def user_list(kind: str, **where: Any) -> None:
    """List accounts."""
    with services_for(**where) as svc:
        start = None
        while True:
            page = svc.accounts.list_accounts(CLI_ACTOR, kind, start, 501)
            for account in page[:500]:
                flags = [
                    f
                    for f, on in (
                        ("admin", account["isAdmin"]),
                        ("org", account["isOrg"]),
                        ("inactive", not account["isActive"]),
                        (account["source"], account["source"] != "local"),
                    )
                    if on
                ]
                click.echo(account["name"] + (f"  ({', '.join(flags)})" if flags else ""))
            if len(page) <= 500:
                break
            start = page[500]["name"]


@user.command("set-password")
@click.argument("name")
@installation_options
def user_set_password(name: str, **where: Any) -> None:
    """Set a local user's password (from WHARF_USER_PASSWORD or a prompt)."""
    password = read_password(f"New password for {name}")
    with services_for(**where) as svc:
        svc.accounts.update_account(CLI_ACTOR, name, {"password": password})
        click.echo(f"password of {name} changed")


@user.command("deactivate")
@click.argument("name")
@installation_options
def user_deactivate(name: str, **where: Any) -> None:
    """Deactivate an account: its passwords and tokens stop working at once."""
    with services_for(**where) as svc:
        svc.accounts.update_account(CLI_ACTOR, name, {"isActive": False})
        click.echo(f"{name} deactivated")


@user.command("activate")
@click.argument("name")
@installation_options
def user_activate(name: str, **where: Any) -> None:
    """Reactivate an account."""
    with services_for(**where) as svc:
        svc.accounts.update_account(CLI_ACTOR, name, {"isActive": True})
        click.echo(f"{name} activated")


# -- organisations and teams ----------------------------------------------------------------


@click.group()
def org() -> None:
    """Manage organisations and their members."""


@org.command("create")
@click.argument("name")
@click.option("--full-name", default="")
@click.option("--owner", "owners", multiple=True, help="A user to make owner (repeatable).")
@installation_options
def org_create(name: str, full_name: str, owners: tuple[str, ...], **where: Any) -> None:
    """Create an organisation."""
    with services_for(**where) as svc:
        emit(
            svc.accounts.create_account(
                CLI_ACTOR, {"name": name, "isOrg": True, "fullName": full_name}
            )
        )
        for owner in owners:
            svc.accounts.set_member(CLI_ACTOR, name, owner, True)


@org.command("add-member")
@click.argument("org_name", metavar="ORG")
@click.argument("username")
@click.option("--owner", is_flag=True, help="Make the member an owner.")
@installation_options
def org_add_member(org_name: str, username: str, owner: bool, **where: Any) -> None:
    """Add a user to an organisation (or change whether they own it)."""
    with services_for(**where) as svc:
        svc.accounts.set_member(CLI_ACTOR, org_name, username, owner)
        click.echo(f"{username} is {'an owner' if owner else 'a member'} of {org_name}")


@click.group()
def team() -> None:
    """Manage teams inside organisations."""


@team.command("create")
@click.argument("org_name", metavar="ORG")
@click.argument("name")
@click.option("--description", default="")
@click.option("--ldap-group", default=None, help="DN of an LDAP group whose members sync here.")
@installation_options
def team_create(
    org_name: str, name: str, description: str, ldap_group: str | None, **where: Any
) -> None:
    """Create a team."""
    with services_for(**where) as svc:
        emit(
            svc.accounts.create_team(
                CLI_ACTOR,
                org_name,
                {"name": name, "description": description, "ldapGroupDN": ldap_group},
            )
        )


@team.command("add-member")
@click.argument("org_name", metavar="ORG")
@click.argument("name")
@click.argument("username")
@installation_options
def team_add_member(org_name: str, name: str, username: str, **where: Any) -> None:
    """Add a user to a team."""
    with services_for(**where) as svc:
        svc.accounts.add_team_member(CLI_ACTOR, org_name, name, username)
        click.echo(f"{username} added to {org_name}/{name}")


# -- repositories and grants ----------------------------------------------------------------


@click.group()
def repo() -> None:
    """Manage repositories."""


@repo.command("create")
@click.argument("full_name", metavar="NAMESPACE/NAME")
@click.option("--public", is_flag=True, help="Anyone may pull it.")
@click.option("--description", default="")
@installation_options
def repo_create(full_name: str, public: bool, description: str, **where: Any) -> None:
    """Create a repository."""
    namespace, sep, name = full_name.partition("/")
    if not sep:
        raise click.UsageError("give the repository as NAMESPACE/NAME")
    with services_for(**where) as svc:
        emit(
            svc.repositories.create(
                CLI_ACTOR,
                namespace,
                {
                    "name": name,
                    "visibility": "public" if public else "private",
                    "shortDescription": description,
                },
            )
        )


@click.command()
@click.argument("team_ref", metavar="ORG/TEAM")
@click.argument("target", metavar="ORG/REPO|ORG")
@click.argument("level", type=click.Choice(["read-only", "read-write", "admin", "none"]))
@installation_options
def grant(team_ref: str, target: str, level: str, **where: Any) -> None:
    """Grant a team a level on one repository (ORG/REPO) or on a whole organisation (ORG);
    `none` revokes."""
    org_name, sep, team_name = team_ref.partition("/")
    if not sep:
        raise click.UsageError("give the team as ORG/TEAM")
    namespace, _, name = target.partition("/")
    if namespace != org_name:
        raise click.UsageError("a team can be granted access only inside its own organisation")
    with services_for(**where) as svc:
        repos = svc.repositories
        if name:
            if level == "none":
                repos.delete_team_access(CLI_ACTOR, namespace, name, team_name)
            else:
                repos.set_team_access(CLI_ACTOR, namespace, name, team_name, level)
        elif level == "none":
            repos.delete_namespace_team_access(CLI_ACTOR, namespace, team_name)
        else:
            repos.set_namespace_team_access(CLI_ACTOR, namespace, team_name, level)
        click.echo(f"{team_ref}: {level} on {target}")


# -- tokens and LDAP ------------------------------------------------------------------------


@click.group()
def token() -> None:
    """Manage personal access tokens."""


@token.command("create")
@click.argument("username")
@click.option("--label", default="", help="What the token is for.")
@installation_options
def token_create(username: str, label: str, **where: Any) -> None:
    """Create an access token for a user; the secret is printed once."""
    with services_for(**where) as svc:
        created = svc.accounts.create_token(CLI_ACTOR, label, username, "wharf-cli")
        click.echo(created["token"])
        click.echo(
            f"hashed token: {created['hashedToken']} (the secret is not shown again)", err=True
        )


@click.group()
def ldap() -> None:
    """LDAP / Active Directory."""


@ldap.command("sync")
@installation_options
def ldap_sync(**where: Any) -> None:
    """Sync users and team memberships from the configured directory now."""
    with services_for(**where) as svc:
        emit(svc.directory.sync(CLI_ACTOR))


# -- moving the metadata store ----------------------------------------------------------------


@click.command("migrate-metadata")
@click.option(
    "--to",
    "target_url",
    required=True,
    help="The new metadata store, postgresql://user@host/db (password: WHARF_DB_PASSWORD).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace whatever the target holds (otherwise a non-empty target is refused).",
)
@installation_options
def migrate_metadata(target_url: str, overwrite: bool, **where: Any) -> None:
    """Copy this installation's metadata (the embedded SQLite store) into PostgreSQL.

    Stop the registry first. Nothing is deleted from the source; once the copy is verified,
    start the registry with `--db` pointing at the target. Blobs stay where they are.
    """
    from wharf.metadata.store import MetadataStore
    from wharf.metadata.transfer import TargetNotEmpty, transfer
    from wharf.upgrade.engine import UpgradeRefused

    try:
        settings = load_settings(where.pop("config_file"), where)
    except ConfigError as e:
        raise click.UsageError(str(e)) from None
    if settings.db_url == target_url:
        raise click.UsageError("--to names the store this installation already uses")
    if not target_url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        raise click.UsageError("--to must be a postgresql:// URL")
    require_installation(settings)
    source, target = MetadataStore(settings.db_url), MetadataStore(target_url)
    try:
        report = transfer(source, target, overwrite=overwrite)
    except UpgradeRefused as e:
        click.echo(f"wharf: refused: {e}", err=True)
        sys.exit(EXIT_REFUSED)
    except TargetNotEmpty as e:
        click.echo(
            f"wharf: refused: {e}. Point --to at an empty database, or add --overwrite to "
            "replace its contents.",
            err=True,
        )
        sys.exit(EXIT_REFUSED)
    finally:
        source.dispose()
        target.dispose()
    for table, rows in report.rows.items():
        click.echo(f"{table:24} {rows:>10}")
    click.echo(
        f"copied {report.total} rows; counts verified. Start the registry with "
        f"--db {_redacted(target_url)} (the embedded store is left as it was)."
    )


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


COMMANDS = (user, org, team, repo, grant, token, ldap, migrate_metadata)
