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

from wharf.faults import log_failure
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, aware, utcnow
from wharf.storage import StorageDriver
from wharf.upgrade.history import software_version

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


class ReplicaRemoved(Exception):
    """This replica was removed from the cluster (`wharf remove`)."""


def register(store: MetadataStore, rid: str, address: str) -> None:
    """Record this replica as (re)started now; ReplicaRemoved if it was removed."""
    now = utcnow()
    values = {
        "hostname": socket.gethostname()[:255],
        "address": address[:255],
        "version": software_version(),
        "started_at": now,
        "heartbeat_at": now,
    }
    with store._write() as conn:
        removed = conn.execute(
            select(t.replicas.c.removed_at).where(t.replicas.c.id == rid)
        ).scalar()
        if removed is not None:
            raise ReplicaRemoved(
                f"replica {rid} was removed from the cluster on {aware(removed):%Y-%m-%d %H:%M} "
                "UTC; to serve again, `wharf destroy` this data directory and `wharf join` anew"
            )
        conn.execute(
            store._insert(t.replicas)
            .values(id=rid, **values)
            .on_conflict_do_update(index_elements=[t.replicas.c.id], set_=values)
        )


def registered_replicas(store: MetadataStore) -> list[str]:
    """Ids of every replica in the cluster (not removed), healthy or not."""
    with store.engine.connect() as conn:
        return list(
            conn.execute(
                select(t.replicas.c.id)
                .where(t.replicas.c.removed_at.is_(None))
                .order_by(t.replicas.c.id)
            ).scalars()
        )


def beat(store: MetadataStore, rid: str) -> bool:
    """Refresh this replica's heartbeat; False when it has been removed from the cluster."""
    with store._write(durable=False) as conn:
        result = conn.execute(
            t.replicas.update()
            .where(t.replicas.c.id == rid, t.replicas.c.removed_at.is_(None))
            .values(heartbeat_at=utcnow())
        )
    return result.rowcount > 0


async def heartbeat_forever(store: MetadataStore, rid: str, data_dir: Path | None = None) -> None:
    """Run in every worker of the replica (they share the row; any one alive keeps it fresh).
    A replica removed from the cluster stops serving."""
    while True:
        await asyncio.sleep(HEARTBEAT_SECONDS)
        try:
            alive = await asyncio.to_thread(beat, store, rid)
        except Exception as e:
            log_failure(log, "replica heartbeat failed", e)
            continue
        if not alive:
            log.warning("replica %s was removed from the cluster; stopping", rid)
            _stop_replica(data_dir)
            return


def _stop_replica(data_dir: Path | None) -> None:
    """SIGTERM the replica's main process (its pid file), or this process. Its running job
    goes back to waiting as at any shutdown."""
    import signal

    from wharf.server import running_pid

    pid = (running_pid(data_dir) if data_dir else None) or os.getpid()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGTERM)


class RemoveRefused(Exception):
    """Removing this replica would break the cluster; the message says why."""


def remove(store: MetadataStore, rid: str) -> list[dict[str, Any]]:
    """Take replica `rid` out of the cluster (it stops at its next heartbeat and may not
    start again). Refused for an unknown replica and for the last healthy one. Returns the
    replicas that remain."""
    report = status(store, None)
    replicas = {r["id"]: r for r in report["replicas"]}
    if rid not in replicas:
        known = ", ".join(sorted(replicas)) or "none"
        raise RemoveRefused(f"the cluster has no replica {rid!r} (its replicas: {known})")
    others = [r for r in report["replicas"] if r["id"] != rid]
    if not others:
        raise RemoveRefused(
            f"{rid} is the cluster's only replica; removing it would leave no cluster. To "
            f"delete the installation, use `wharf destroy --replica-id {rid}`"
        )
    if replicas[rid]["healthy"] and not any(r["healthy"] for r in others):
        raise RemoveRefused(
            f"{rid} is the cluster's last healthy replica (the others have not sent a "
            f"heartbeat for {STALE_SECONDS:.0f} s); start another replica, or remove the "
            "unhealthy ones first"
        )
    with store._write() as conn:
        conn.execute(
            t.replicas.update()
            .where(t.replicas.c.id == rid, t.replicas.c.removed_at.is_(None))
            .values(removed_at=utcnow())
        )
    return others


def status(store: MetadataStore, storage: StorageDriver | None) -> dict[str, Any]:
    """Replicas with their health, the metadata store, the blob storage."""
    report: dict[str, Any] = {"replicas": [], "database": {}, "storage": {}}
    started = time.monotonic()
    try:
        with store._read() as conn:
            rows = (
                conn.execute(
                    select(t.replicas)
                    .where(t.replicas.c.removed_at.is_(None))
                    .order_by(t.replicas.c.id)
                )
                .mappings()
                .all()
            )
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
    report["cluster"] = _cluster_facts(store)
    report["healthy"] = (
        report["database"].get("healthy", False)
        and report["storage"].get("healthy", True)
        and any(r["healthy"] for r in report["replicas"])
    )
    return report


def _cluster_facts(store: MetadataStore) -> dict[str, Any]:
    from wharf import tls
    from wharf.metadata.identity import IdentityStore
    from wharf.upgrade.engine import cluster_record, read_state

    try:
        state = read_state(store)
        record = cluster_record(store)
        material = tls.load(IdentityStore(store)) if state.version else None
    except Exception:  # the database section already reports it
        return {}
    certificate = None
    if material is not None:
        certificate = {
            "fingerprint": material.fingerprint,
            "notAfter": material.not_after().isoformat(),
            "selfSigned": material.self_signed,
        }
    return {
        "version": state.version,
        "externalUrl": record.get("externalUrl"),
        "upgrade": state.upgrade,
        "certificate": certificate,
    }


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
