"""Release 0.2.0: manifests record their image size (backfilled for older manifests by the
`manifest-image-size` background migration); removed replicas keep a tombstone so that they
cannot rejoin by restarting.

Additive only: replicas still running 0.1.0 work unchanged on this schema.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("manifests") as batch:
        # Bytes of the image (manifest + config + layers); NULL until computed.
        batch.add_column(sa.Column("image_size", sa.BigInteger))
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(sa.Column("removed_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("removed_at")
    with op.batch_alter_table("manifests") as batch:
        batch.drop_column("image_size")
