"""Table definitions used by the queries (SQLAlchemy Core).

The schema itself is created and changed only by the Alembic migrations in `migrations/`;
this module must describe the state those migrations produce.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

DIGEST = String(150)  # "sha512:" + 128 hex digits fits


def _fk(table: str) -> ForeignKey:
    return ForeignKey(f"{table}.id", ondelete="CASCADE")


# A namespace is a user or an organisation; both are accounts, so their names cannot collide.
accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("is_org", Boolean, nullable=False, default=False),
    Column("full_name", String(255), nullable=False, default=""),
    Column("password_hash", String(255)),  # NULL for organisations and LDAP users
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("source", String(16), nullable=False, default="local"),  # "local" | "ldap"
    Column("ldap_dn", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,  # ids are never reused: tokens carry them
)

org_members = Table(
    "org_members",
    metadata,
    Column("org_id", Integer, _fk("accounts"), primary_key=True),
    Column("user_id", Integer, _fk("accounts"), primary_key=True),
    Column("is_owner", Boolean, nullable=False, default=False),
)
Index("ix_org_members_user_id", org_members.c.user_id)

teams = Table(
    "teams",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", Integer, _fk("accounts"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("ldap_group_dn", Text),  # members are synced from this LDAP group when set
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("org_id", "name", name="uq_teams_org_name"),
)

team_members = Table(
    "team_members",
    metadata,
    Column("team_id", Integer, _fk("teams"), primary_key=True),
    Column("user_id", Integer, _fk("accounts"), primary_key=True),
)
Index("ix_team_members_user_id", team_members.c.user_id)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("hashed_token", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("account_id", Integer, _fk("accounts"), nullable=False),
    Column("label", String(255), nullable=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("generated_by", String(255), nullable=False),
    Column("creator_ua", String(255), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used", DateTime(timezone=True)),
)
Index("ix_api_tokens_account_id", api_tokens.c.account_id)

settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),  # JSON
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255)),
    Column("client", String(64)),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("details", Text),  # JSON
)
Index("ix_audit_events_at", audit_events.c.at)
Index("ix_audit_events_action", audit_events.c.action)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("visibility", String(16), nullable=False, default="private"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("namespace", String(255), nullable=False),  # first path component of the name
    Column("short_description", String(140), nullable=False, default=""),
    Column("long_description", Text, nullable=False, default=""),
)
Index("ix_repositories_namespace", repositories.c.namespace)

# Grants of a level ("read-only" < "read-write" < "admin") to a team, on one repository or on
# every repository of an organisation's namespace.
repository_team_access = Table(
    "repository_team_access",
    metadata,
    Column("repository_id", Integer, _fk("repositories"), primary_key=True),
    Column("team_id", Integer, _fk("teams"), primary_key=True),
    Column("level", String(16), nullable=False),
)
Index("ix_repository_team_access_team_id", repository_team_access.c.team_id)

namespace_team_access = Table(
    "namespace_team_access",
    metadata,
    Column("org_id", Integer, _fk("accounts"), primary_key=True),
    Column("team_id", Integer, _fk("teams"), primary_key=True),
    Column("level", String(16), nullable=False),
)
Index("ix_namespace_team_access_team_id", namespace_team_access.c.team_id)

# One row per stored blob, whatever repositories link it.
blobs = Table(
    "blobs",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A blob is visible in a repository only through a link (pushed there or mounted).
repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column(
        "repository_id",
        Integer,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("digest", DIGEST, ForeignKey("blobs.digest"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_repository_blobs_digest", repository_blobs.c.digest)

manifests = Table(
    "manifests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "repository_id",
        Integer,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("digest", DIGEST, nullable=False),  # as pushed: what a GET by tag reports
    Column("sha256", DIGEST, nullable=False),
    Column("sha512", DIGEST, nullable=False),
    Column("media_type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("content", LargeBinary, nullable=False),
    Column("artifact_type", String(255)),
    Column("subject", DIGEST),
    Column("annotations", Text),  # JSON, for the referrers API
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("repository_id", "sha256", name="uq_manifests_repository_sha256"),
    UniqueConstraint("repository_id", "sha512", name="uq_manifests_repository_sha512"),
)
Index("ix_manifests_repository_subject", manifests.c.repository_id, manifests.c.subject)

# What each manifest needs: blobs (config, layers) and child manifests (of an index).
manifest_references = Table(
    "manifest_references",
    metadata,
    Column(
        "manifest_id",
        Integer,
        ForeignKey("manifests.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("kind", String(8), primary_key=True),  # "blob" | "manifest"
    Column("digest", DIGEST, primary_key=True),
)
Index("ix_manifest_references_digest", manifest_references.c.digest)

tags = Table(
    "tags",
    metadata,
    Column(
        "repository_id",
        Integer,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(128), primary_key=True),
    Column(
        "manifest_id",
        Integer,
        ForeignKey("manifests.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("author", String(255)),  # who last pointed the tag
    Column("created_at", DateTime(timezone=True)),
)
Index("ix_tags_manifest_id", tags.c.manifest_id)

# Upload sessions live here (and their bytes in blob storage), never only in a process.
uploads = Table(
    "uploads",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "repository_id",
        Integer,
        ForeignKey("repositories.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("size", BigInteger, nullable=False, default=0),
    # While a request appends, it holds a lease so that no other request writes concurrently.
    Column("lease_until", DateTime(timezone=True)),
    Column("lease_token", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every replica of the cluster, kept up to date by its own heartbeat.
replicas = Table(
    "replicas",
    metadata,
    Column("id", String(12), primary_key=True),  # 12 hex digits, kept in the data directory
    Column("hostname", String(255), nullable=False),
    Column("address", String(255), nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)
