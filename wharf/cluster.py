"""The replicas of a cluster: each registers itself in the metadata store and keeps a
heartbeat there, so that `wharf status` and `/api/v0/meta/cluster_status` can show every
replica's health, with the state of the metadata store and the blob storage.

A replica's id (12 hex digits) is created once and kept in its data directory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from wharf import __version__
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, aware, utcnow
from wharf.storage import StorageDriver

log = logging.getLogger("wharf.cluster")

REPLICA_ID_FILE = "replica-id"
HEARTBEAT_SECONDS = 10.0
# A replica whose last heartbeat is older than this is reported unhealthy.
STALE_SECONDS = 3 * HEARTBEAT_SECONDS


def replica_id(data_dir: Path) -> str:
    """This replica's id: read from the data directory, created there the first time."""
    path = data_dir / REPLICA_ID_FILE
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_hex(6)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
    if len(value) != 12 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{path} does not hold a 12-hex-digit replica id")
    return value


def register(store: MetadataStore, rid: str, address: str) -> None:
    """Record this replica as (re)started now."""
    now = utcnow()
    values = {
        "hostname": socket.gethostname()[:255],
        "address": address[:255],
        "version": __version__,
        "started_at": now,
        "heartbeat_at": now,
    }
    with store._write() as conn:
        conn.execute(
            store._insert(t.replicas)
            .values(id=rid, **values)
            .on_conflict_do_update(index_elements=[t.replicas.c.id], set_=values)
        )


def registered_replicas(store: MetadataStore) -> list[str]:
    """Ids of every replica the cluster knows, healthy or not."""
    with store.engine.connect() as conn:
        return list(conn.execute(select(t.replicas.c.id).order_by(t.replicas.c.id)).scalars())


def beat(store: MetadataStore, rid: str) -> None:
    with store._write(durable=False) as conn:
        conn.execute(
            t.replicas.update().where(t.replicas.c.id == rid).values(heartbeat_at=utcnow())
        )


async def heartbeat_forever(store: MetadataStore, rid: str) -> None:
    """Run in every worker of the replica (they share the row; any one alive keeps it fresh)."""
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            await asyncio.to_thread(beat, store, rid)
        except Exception:
            log.exception("replica heartbeat failed")


def status(store: MetadataStore, storage: StorageDriver | None) -> dict[str, Any]:
    """Replicas with their health, the metadata store, the blob storage."""
    report: dict[str, Any] = {"replicas": [], "database": {}, "storage": {}}
    started = time.monotonic()
    try:
        with store._read() as conn:
            rows = conn.execute(select(t.replicas).order_by(t.replicas.c.id)).mappings().all()
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        report["database"] = {
            "healthy": True,
            "dialect": store.engine.dialect.name,
            "embedded": store.embedded,
            "schemaRevision": revision,
            "latencyMs": round((time.monotonic() - started) * 1000, 1),
        }
    except Exception as e:  # the report says what is wrong instead of failing
        report["database"] = {"healthy": False, "error": str(e).splitlines()[0]}
        rows = []
    now = datetime.now(UTC)
    for row in rows:
        age = (now - aware(row["heartbeat_at"])).total_seconds()
        report["replicas"].append(
            {
                "id": row["id"],
                "hostname": row["hostname"],
                "address": row["address"],
                "version": row["version"],
                "startedAt": aware(row["started_at"]).isoformat(),
                "heartbeatAt": aware(row["heartbeat_at"]).isoformat(),
                "secondsSinceHeartbeat": round(age, 1),
                "healthy": age <= STALE_SECONDS,
            }
        )
    if storage is not None:
        report["storage"] = storage_probe(storage)
    report["healthy"] = (
        report["database"].get("healthy", False)
        and report["storage"].get("healthy", True)
        and any(r["healthy"] for r in report["replicas"])
    )
    return report


def storage_probe(storage: StorageDriver) -> dict[str, Any]:
    """Write, read back and delete a small probe object."""
    probe = f"_health/{secrets.token_hex(8)}"
    payload = secrets.token_bytes(16)
    started = time.monotonic()
    try:
        writer = storage.writer(probe)
        writer.write(payload)
        writer.commit()
        with storage.open_read(probe) as f:
            ok = f.read() == payload
        storage.delete(probe)
    except Exception as e:
        return {"healthy": False, "url": storage.describe(), "error": str(e).splitlines()[0]}
    return {
        "healthy": ok,
        "driver": type(storage).__name__,
        "url": storage.describe(),
        "latencyMs": round((time.monotonic() - started) * 1000, 1),
    }


def stale_cutoff() -> datetime:
    return utcnow() - timedelta(seconds=STALE_SECONDS)
