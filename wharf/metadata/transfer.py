"""Copy a whole metadata store into another one (`wharf migrate-metadata`): the embedded
SQLite store of a registry that outgrew one machine into PostgreSQL.

Rows are read from one snapshot of the source (a single read transaction) and written in
batches in foreign-key order inside one transaction of the target, so the target ends with
all of it or none of it, and memory stays bounded whatever the size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Integer, Table, delete, func, select, text

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore

BATCH_ROWS = 200  # manifests may be up to 4 MiB each: bounded by rows, not bytes


class TargetNotEmpty(Exception):
    def __init__(self, counts: dict[str, int]) -> None:
        listed = ", ".join(f"{name}: {n}" for name, n in counts.items() if n)
        super().__init__(f"the target metadata store is not empty ({listed})")
        self.counts = counts


@dataclass
class TransferReport:
    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _tables() -> list[Table]:
    return list(t.metadata.sorted_tables)  # parents before children


def row_counts(store: MetadataStore) -> dict[str, int]:
    with store._read() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in _tables()
        }


def transfer(
    source: MetadataStore,
    target: MetadataStore,
    *,
    overwrite: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> TransferReport:
    """Copy every row of `source` into `target` (whose schema is brought to the source's
    revision first). Refuses a target that holds anything unless `overwrite`, and a source
    that this software does not run (UpgradeRefused: upgrade it first)."""
    from wharf.upgrade.engine import check_start

    target.migrate(check_start(source).schema or "head")
    existing = row_counts(target)
    if any(existing.values()) and not overwrite:
        raise TargetNotEmpty(existing)
    copied: dict[str, int] = {}
    with source.engine.connect() as src, target.engine.connect() as dst, dst.begin():
        # One snapshot of the source for every table (SQLite: a read transaction in WAL mode;
        # PostgreSQL: repeatable read).
        # (The first statement begins the transaction; on PostgreSQL it must be this one.)
        if src.dialect.name == "postgresql":
            src.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        if overwrite:
            for table in reversed(_tables()):
                dst.execute(delete(table))
        for table in _tables():
            count = 0
            result = src.execution_options(stream_results=True, yield_per=BATCH_ROWS).execute(
                select(table)
            )
            for rows in result.mappings().partitions(BATCH_ROWS):
                dst.execute(table.insert(), [dict(r) for r in rows])
                count += len(rows)
                if progress:
                    progress(table.name, count)
            copied[table.name] = count
        if dst.dialect.name == "postgresql":
            _advance_sequences(dst)
    after = row_counts(target)
    if after != copied:
        raise RuntimeError(f"row counts differ after the copy: copied {copied}, found {after}")
    return TransferReport(copied)


def _advance_sequences(conn) -> None:  # type: ignore[no-untyped-def]
    """Ids were copied as they were: move each serial sequence past the highest."""
    for table in _tables():
        key = list(table.primary_key.columns)
        if len(key) == 1 and isinstance(key[0].type, Integer):
            column = key[0]
            following = select(func.coalesce(func.max(column), 0) + 1).scalar_subquery()
            sequence = func.pg_get_serial_sequence(table.name, column.name)
            conn.execute(select(func.setval(sequence, following, False)))
