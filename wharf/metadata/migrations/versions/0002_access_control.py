"""Identity and access control: accounts (users and organisations), teams, grants,
personal access tokens, settings and the audit trail; repository namespaces and descriptions;
tag authorship.

`users` becomes `accounts`, since a namespace is a user or an organisation and both share
one name space (a unique constraint, not a convention).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey(f"{table}.id", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("is_org", sa.Boolean, nullable=False),
        sa.Column("full_name", sa.String(255), nullable=False),
        sa.Column("password_hash", sa.String(255)),
        sa.Column("is_admin", sa.Boolean, nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("ldap_dn", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        # Ids are never reused (SQLite would reuse the highest after a delete): tokens name
        # the account id, and must not pass to a new account of a deleted one's name.
        sqlite_autoincrement=True,
    )
    op.execute(
        "INSERT INTO accounts (id, name, is_org, full_name, password_hash, is_admin, is_active,"
        " source, created_at, updated_at)"
        " SELECT id, username, false, '', password_hash, is_admin, is_active, 'local',"
        " created_at, created_at FROM users"
    )
    op.drop_table("users")

    op.create_table(
        "org_members",
        sa.Column("org_id", sa.Integer, _fk("accounts"), primary_key=True),
        sa.Column("user_id", sa.Integer, _fk("accounts"), primary_key=True),
        sa.Column("is_owner", sa.Boolean, nullable=False),
    )
    op.create_index("ix_org_members_user_id", "org_members", ["user_id"])
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("org_id", sa.Integer, _fk("accounts"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("ldap_group_dn", sa.Text),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("org_id", "name", name="uq_teams_org_name"),
    )
    op.create_table(
        "team_members",
        sa.Column("team_id", sa.Integer, _fk("teams"), primary_key=True),
        sa.Column("user_id", sa.Integer, _fk("accounts"), primary_key=True),
    )
    op.create_index("ix_team_members_user_id", "team_members", ["user_id"])
    op.create_table(
        "repository_team_access",
        sa.Column("repository_id", sa.Integer, _fk("repositories"), primary_key=True),
        sa.Column("team_id", sa.Integer, _fk("teams"), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
    )
    op.create_index("ix_repository_team_access_team_id", "repository_team_access", ["team_id"])
    op.create_table(
        "namespace_team_access",
        sa.Column("org_id", sa.Integer, _fk("accounts"), primary_key=True),
        sa.Column("team_id", sa.Integer, _fk("teams"), primary_key=True),
        sa.Column("level", sa.String(16), nullable=False),
    )
    op.create_index("ix_namespace_team_access_team_id", "namespace_team_access", ["team_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("hashed_token", sa.String(64), nullable=False, unique=True),
        sa.Column("account_id", sa.Integer, _fk("accounts"), nullable=False),
        sa.Column("label", sa.String(255), nullable=False),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("generated_by", sa.String(255), nullable=False),
        sa.Column("creator_ua", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used", TS),
    )
    op.create_index("ix_api_tokens_account_id", "api_tokens", ["account_id"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("client", sa.String(64)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("details", sa.Text),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])

    # Plain ADD COLUMN, never a batch "recreate": on SQLite, re-creating a table that others
    # reference with ON DELETE CASCADE would empty those tables.
    op.add_column(
        "repositories", sa.Column("namespace", sa.String(255), nullable=False, server_default="")
    )
    op.add_column(
        "repositories",
        sa.Column("short_description", sa.String(140), nullable=False, server_default=""),
    )
    op.add_column(
        "repositories",
        sa.Column("long_description", sa.Text, nullable=False, server_default=""),
    )
    # The namespace is the first path component ("acme/web/api" -> "acme").
    op.execute(
        "UPDATE repositories SET namespace = CASE WHEN instr(name, '/') > 0"
        " THEN substr(name, 1, instr(name, '/') - 1) ELSE name END"
        if op.get_context().dialect.name == "sqlite"
        else "UPDATE repositories SET namespace = split_part(name, '/', 1)"
    )
    op.create_index("ix_repositories_namespace", "repositories", ["namespace"])

    op.add_column("tags", sa.Column("author", sa.String(255)))
    op.add_column("tags", sa.Column("created_at", TS))
    op.execute("UPDATE tags SET created_at = updated_at")


def downgrade() -> None:
    raise NotImplementedError("Wharf migrations are forward-only; restore a backup instead")
