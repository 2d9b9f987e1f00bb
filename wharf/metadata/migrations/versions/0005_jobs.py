"""Jobs, their logs, cron schedules and job workers; blobs remember when they were last
pushed or mounted (garbage collection spares them).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("blobs") as batch:
        batch.add_column(sa.Column("touched_at", TS))
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("retries_left", sa.Integer, nullable=False),
        sa.Column("scheduled_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("heartbeat_at", TS),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("cron", sa.String(64)),
        sa.Column("created_by", sa.String(255)),
        sa.Column("log_lines", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_index("ix_jobs_state_scheduled", "jobs", ["state", "scheduled_at"])
    op.create_index("ix_jobs_created", "jobs", ["created_at"])
    op.create_table(
        "job_logs",
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("line", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "crons",
        sa.Column("action", sa.String(64), primary_key=True),
        sa.Column("schedule", sa.String(128), nullable=False),
        sa.Column("parameters", sa.Text, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("next_run", TS, nullable=False),
        sa.Column("last_job_id", sa.String(36)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "job_workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("replica_id", sa.String(12), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("heartbeat_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_workers")
    op.drop_table("crons")
    op.drop_table("job_logs")
    op.drop_index("ix_jobs_created", "jobs")
    op.drop_index("ix_jobs_state_scheduled", "jobs")
    op.drop_table("jobs")
    with op.batch_alter_table("blobs") as batch:
        batch.drop_column("touched_at")
