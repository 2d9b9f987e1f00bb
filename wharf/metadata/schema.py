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
    # Last pushed or mounted: garbage collection spares blobs touched after it started.
    Column("touched_at", DateTime(timezone=True)),
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
    # Manifest + config + layers; NULL for manifests pushed before 0.2.0 until the
    # `manifest-image-size` background migration has filled it in.
    Column("image_size", BigInteger),
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
    # Set by `wharf remove`: the replica stops, and may not come back by restarting.
    Column("removed_at", DateTime(timezone=True)),
)

# -- jobs ------------------------------------------------------------------------------------

# Background work (garbage collection, LDAP sync, history clean-up), claimed by the job
# workers of any replica. `state`: waiting, running, done, errored, canceled.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("action", String(64), nullable=False),
    Column("parameters", Text, nullable=False),  # JSON object
    Column("state", String(16), nullable=False),
    Column("worker_id", String(64)),
    Column("retries_left", Integer, nullable=False),
    Column("scheduled_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True)),
    Column("ended_at", DateTime(timezone=True)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("cron", String(64)),  # the cron that scheduled it, if any
    Column("created_by", String(255)),
    Column("log_lines", Integer, nullable=False, default=0),
)
Index("ix_jobs_state_scheduled", jobs.c.state, jobs.c.scheduled_at)
Index("ix_jobs_created", jobs.c.created_at)

job_logs = Table(
    "job_logs",
    metadata,
    Column("job_id", String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("text", Text, nullable=False),
)

# One schedule per action (DTR's model): a cron expression in UTC.
crons = Table(
    "crons",
    metadata,
    Column("action", String(64), primary_key=True),
    Column("schedule", String(128), nullable=False),
    Column("parameters", Text, nullable=False),  # JSON object
    Column("retries", Integer, nullable=False),
    Column("next_run", DateTime(timezone=True), nullable=False),
    Column("last_job_id", String(36)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Job workers (one per serving process of every replica), with their heartbeat.
job_workers = Table(
    "job_workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("replica_id", String(12), nullable=False),
    Column("hostname", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
)
