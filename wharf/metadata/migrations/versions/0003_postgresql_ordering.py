"""PostgreSQL: names compare byte-wise ("C" collation), as on SQLite and in the spec's
lexical ordering of tags and repositories; serial sequences follow ids copied by 0002.

No-op on SQLite, whose default collation is already binary.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# (table, column, type): every name listed or paged in order.
ORDERED = (
    ("repositories", "name", "varchar(255)"),
    ("repositories", "namespace", "varchar(255)"),
    ("tags", "name", "varchar(128)"),
    ("accounts", "name", "varchar(255)"),
    ("teams", "name", "varchar(255)"),
    ("api_tokens", "hashed_token", "varchar(64)"),
)


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, column, type_ in ORDERED:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE {type_} COLLATE "C"')
    op.execute(
        "SELECT setval(pg_get_serial_sequence('accounts', 'id'),"
        " (SELECT coalesce(max(id), 0) + 1 FROM accounts), false)"
    )


def downgrade() -> None:
    raise NotImplementedError("Wharf migrations are forward-only; restore a backup instead")
