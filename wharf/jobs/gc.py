"""Online garbage collection: free what no kept manifest needs while pushes and pulls go on.

What is kept: every tagged manifest, every manifest pushed after the cutoff, and, from those,
the children of kept indexes and the referrers (signatures, SBOMs) whose subject is kept.
Other manifests are deleted (unless `deleteUntagged` is off); then every blob that no
remaining manifest references and that was not pushed or mounted after the cutoff.

Why nothing a manifest needs is ever lost (the classic race: a push that starts using a blob
while the collector decides to delete it). The *cutoff* is the collection's start minus a
grace period (default one hour, for pushes whose blobs are uploaded long before their
manifest). Every deletion happens in a transaction that first locks what it deletes and then
re-checks, in a fresh statement, that it is still garbage:

- a blob: its row is locked (`FOR UPDATE`; SQLite serialises writers), and it must still have
  no manifest reference and no touch after the cutoff; its object is deleted before the
  transaction commits, while the lock is held.
- a manifest: its repository's row is locked, and it must still be untagged, not a child of
  an existing manifest, without an existing subject, and older than the cutoff.

Writers take the same locks: a manifest push re-checks its blobs (`FOR SHARE`) and child
manifests inside its transaction under the repository lock; a blob upload writes the blob's
row first and then, in the same transaction and so under the row's lock, checks storage and
moves its bytes into place if the object is not there; a mount touches the row and links
only if it still exists. So a blob's row and its object appear and disappear together, and
each race has two orders, both safe: the writer goes first and the collector's re-check sees
it (or, with no grace, deletes row and object together, and the manifest push that follows
is refused), or the collector goes first and the writer finds the blob gone (the upload puts
its bytes back; a mount or manifest push is refused and the client uploads again).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, exists, func, or_, select

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, aware, utcnow
from wharf.registry.digest import parse_digest
from wharf.storage.base import StorageDriver
from wharf.storage.paths import blob_path, upload_prefix

BATCH = 200


@dataclass
class Report:
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    uploads: int = 0
    complete: bool = True
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifestsDeleted": self.manifests,
            "blobsDeleted": self.blobs,
            "bytesFreed": self.bytes,
            "uploadsDeleted": self.uploads,
            "complete": self.complete,
        }


class GarbageCollector:
    def __init__(
        self,
        store: MetadataStore,
        storage: StorageDriver,
        log: Callable[[str], None] = lambda _line: None,
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store, self.storage, self.log, self.stopped = store, storage, log, stopped

    def run(
        self,
        *,
        dry_run: bool = False,
        delete_untagged: bool = True,
        grace: timedelta = timedelta(hours=1),
        upload_expiry: timedelta = timedelta(hours=24),
    ) -> Report:
        """`upload_expiry` is how long an upload session may sit idle (the system setting
        uploadExpiryMinutes); the run's grace, when shorter, applies to uploads too: a push
        that takes longer than the grace loses its blobs to this run anyway."""
        started = utcnow()
        cutoff = started - grace
        report = Report()
        verb = "would delete" if dry_run else "deleted"
        self.log(f"cutoff {cutoff.isoformat()} (grace {int(grace.total_seconds())} s)")
        if delete_untagged:
            doomed = self._unkept_manifests(cutoff)
            self.log(f"{len(doomed)} manifests are neither tagged nor needed by a kept one")
            if dry_run:
                report.manifests = len(doomed)
            else:
                self._delete_manifests(doomed, cutoff, report)
            self.log(f"manifests: {verb} {report.manifests}")
        if self.stopped():
            report.complete = False
            return report
        self._delete_blobs(cutoff, report, dry_run, doomed if dry_run and delete_untagged else ())
        self.log(f"blobs: {verb} {report.blobs} ({report.bytes} bytes)")
        if not self.stopped():
            self.delete_abandoned_uploads(min(grace, upload_expiry), report, dry_run)
        if self.stopped():
            report.complete = False
        return report

    # -- manifests --------------------------------------------------------------------------

    def _unkept_manifests(self, cutoff: datetime) -> set[int]:
        """Ids of manifests that nothing keeps (a snapshot; each is re-checked on deletion)."""
        m, r = t.manifests.c, t.manifest_references.c
        by_digest: dict[tuple[int, str], int] = {}
        own: dict[int, tuple[int, set[str]]] = {}  # id -> (repository, its digests)
        referrers: dict[tuple[int, str], list[int]] = defaultdict(list)
        children: dict[int, list[str]] = defaultdict(list)
        roots: list[int] = []
        with self.store._read() as conn:
            tagged = set(conn.execute(select(t.tags.c.manifest_id).distinct()).scalars())
            for row in conn.execute(
                select(m.id, m.repository_id, m.digest, m.sha256, m.sha512, m.subject, m.created_at)
            ):
                digests = {row.digest, row.sha256, row.sha512}
                own[row.id] = (row.repository_id, digests)
                for d in digests:
                    by_digest[(row.repository_id, d)] = row.id
                if row.subject:
                    referrers[(row.repository_id, row.subject)].append(row.id)
                if row.id in tagged or aware(row.created_at) >= cutoff:
                    roots.append(row.id)
            for row in conn.execute(select(r.manifest_id, r.digest).where(r.kind == "manifest")):
                children[row.manifest_id].append(row.digest)
        kept = set(roots)
        todo = list(roots)
        while todo:  # kept indexes keep their children; kept subjects keep their referrers
            mid = todo.pop()
            repo, digests = own[mid]
            linked = [by_digest.get((repo, d)) for d in children.get(mid, ())]
            for d in digests:
                linked.extend(referrers.get((repo, d), ()))
            for other in linked:
                if other is not None and other not in kept:
                    kept.add(other)
                    todo.append(other)
        return set(own) - kept

    def _delete_manifests(self, doomed: set[int], cutoff: datetime, report: Report) -> None:
        """In rounds: an index goes before its children, a subject before its referrers."""
        pending = sorted(doomed)
        while pending and not self.stopped():
            done = {
                mid for mid in pending if not self.stopped() and self._delete_manifest(mid, cutoff)
            }
            report.manifests += len(done)
            if not done:
                break  # what is left is needed after all (pushed on meanwhile)
            pending = [mid for mid in pending if mid not in done]

    def _delete_manifest(self, mid: int, cutoff: datetime) -> bool:
        m = t.manifests.c
        with self.store._write() as conn:
            row = conn.execute(
                select(
                    m.repository_id, m.digest, m.sha256, m.sha512, m.subject, m.created_at
                ).where(m.id == mid)
            ).first()
            if row is None:
                return True  # deleted by someone else
            self.store.lock_repository(conn, row.repository_id)
            digests = [row.digest, row.sha256, row.sha512]
            parent = t.manifests.alias("parent")
            r = t.manifest_references.c
            needs = [
                exists().where(t.tags.c.manifest_id == mid),
                exists().where(
                    r.kind == "manifest",
                    r.digest.in_(digests),
                    r.manifest_id == parent.c.id,
                    parent.c.repository_id == row.repository_id,
                ),
            ]
            if row.subject:  # a referrer stays while its subject exists
                needs.append(
                    exists().where(
                        m.repository_id == row.repository_id,
                        or_(m.sha256 == row.subject, m.sha512 == row.subject),
                    )
                )
            still_needed = conn.execute(select(or_(*needs))).scalar()
            if still_needed or aware(row.created_at) >= cutoff:
                return False
            conn.execute(delete(t.manifest_references).where(r.manifest_id == mid))
            conn.execute(delete(t.manifests).where(m.id == mid))
        return True

    # -- blobs ------------------------------------------------------------------------------

    def _garbage_blobs(self, conn: Any, cutoff: datetime, after: str, limit: int) -> Any:
        b, r = t.blobs.c, t.manifest_references.c
        return conn.execute(
            select(b.digest, b.size)
            .where(
                b.digest > after,
                func.coalesce(b.touched_at, b.created_at) < cutoff,
                ~exists().where(r.digest == b.digest, r.kind == "blob"),
            )
            .order_by(b.digest)
            .limit(limit)
        ).all()

    def _delete_blobs(
        self, cutoff: datetime, report: Report, dry_run: bool, doomed_manifests: Any
    ) -> None:
        extra: set[str] = set()
        if dry_run and doomed_manifests:
            extra = self._blobs_only_needed_by(set(doomed_manifests))
        after = ""
        while not self.stopped():
            with self.store._read() as conn:
                batch = self._garbage_blobs(conn, cutoff, after, BATCH)
            if not batch:
                break
            after = batch[-1].digest
            if dry_run:
                report.blobs += len(batch)
                report.bytes += sum(row.size for row in batch)
                continue
            deleted, freed = self._delete_blob_batch([row.digest for row in batch], cutoff)
            report.blobs += deleted
            report.bytes += freed
        if dry_run and extra:
            with self.store._read() as conn:
                sizes = conn.execute(
                    select(t.blobs.c.digest, t.blobs.c.size).where(
                        t.blobs.c.digest.in_(sorted(extra)),
                        func.coalesce(t.blobs.c.touched_at, t.blobs.c.created_at) < cutoff,
                    )
                ).all()
            report.blobs += len(sizes)
            report.bytes += sum(row.size for row in sizes)

    def _blobs_only_needed_by(self, manifests: set[int]) -> set[str]:
        """For a dry run: blobs that would become garbage once these manifests are gone."""
        r = t.manifest_references.c
        needed_by: dict[str, set[int]] = defaultdict(set)
        with self.store._read() as conn:
            for row in conn.execute(select(r.digest, r.manifest_id).where(r.kind == "blob")):
                needed_by[row.digest].add(row.manifest_id)
        return {d for d, users in needed_by.items() if users and users <= manifests}

    def _delete_blob_batch(self, digests: list[str], cutoff: datetime) -> tuple[int, int]:
        b = t.blobs.c
        with self.store._write() as conn:
            lock = select(b.digest).where(b.digest.in_(digests))
            if self.store._dialect == "postgresql":
                lock = lock.with_for_update()
            conn.execute(lock).all()
            # A fresh statement after the locks: it sees whatever committed before them.
            rows = []
            for row in self._recheck(conn, digests, cutoff):
                try:
                    self.storage.delete(blob_path(parse_digest(row.digest)))
                except Exception as e:  # keep its row: the next run tries again
                    self.log(f"cannot delete {row.digest} from storage: {e}")
                    continue
                rows.append(row)
            gone = [row.digest for row in rows]
            if gone:
                conn.execute(
                    delete(t.repository_blobs).where(t.repository_blobs.c.digest.in_(gone))
                )
                conn.execute(delete(t.blobs).where(b.digest.in_(gone)))
        return len(rows), sum(row.size for row in rows)

    def _recheck(self, conn: Any, digests: list[str], cutoff: datetime) -> Any:
        b, r = t.blobs.c, t.manifest_references.c
        return conn.execute(
            select(b.digest, b.size).where(
                b.digest.in_(digests),
                func.coalesce(b.touched_at, b.created_at) < cutoff,
                ~exists().where(r.digest == b.digest, r.kind == "blob"),
            )
        ).all()

    # -- abandoned uploads ------------------------------------------------------------------

    def delete_abandoned_uploads(
        self, idle: timedelta, report: Report, dry_run: bool = False
    ) -> None:
        """Upload sessions that received nothing for `idle` and that no request is writing
        to, with their bytes."""
        idle_since = utcnow() - idle
        abandoned = self.store.idle_uploads(idle_since)
        if dry_run:
            report.uploads = len(abandoned)
        for upload_id in abandoned:
            if dry_run or self.stopped():
                break
            if self.store.delete_idle_upload(upload_id, idle_since):
                self.storage.delete(upload_prefix(upload_id))
                report.uploads += 1
        verb = "would delete" if dry_run else "deleted"
        minutes = int(idle.total_seconds() // 60)
        self.log(f"uploads: {verb} {report.uploads} idle for over {minutes} min")
