"""`wharf storage check`: does the blob storage hold every blob the manifests need?

After a restore (metadata comes back, image contents do not: they are restored with the
storage's own tools), or on its own at any time. Manifests are read in batches by id; for
each batch, every blob its manifests reference (config, layers; foreign layers that were
never pushed have no blob record and are not looked for) is looked up in storage with the
size recorded for it. Results are cached in a bounded LRU (a layer shared by many images is
looked up once), and lookups run in a small thread pool (object stores answer one at a
time). Memory stays bounded whatever the number of manifests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore
from wharf.storage import StorageDriver

BATCH = 500
CACHE = 100_000
LOOKUPS = 16
NOT_FOUND = -1


@dataclass
class Damaged:
    """A manifest with blobs missing from storage (or of another size than recorded)."""

    repository: str
    digest: str
    tags: list[str]
    missing: list[dict[str, Any]]  # {"digest", "size" (recorded), "found" (None: absent)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "digest": self.digest,
            "tags": self.tags,
            "missing": self.missing,
        }

    def describe(self) -> str:
        tags = f" (tags: {', '.join(self.tags)})" if self.tags else " (untagged)"
        blobs = ", ".join(
            f"{m['digest']}"
            + ("" if m["found"] is None else f" has {m['found']} bytes, not {m['size']}")
            for m in self.missing
        )
        return (
            f"{self.repository}@{self.digest}{tags}: {len(self.missing)} blob(s) missing: {blobs}"
        )


@dataclass
class CheckReport:
    storage: str
    manifests: int = 0
    lookups: int = 0
    damaged_manifests: int = 0
    missing_blobs: set[str] = field(default_factory=set)  # capped, for the count
    missing_count: int = 0

    @property
    def ok(self) -> bool:
        return self.damaged_manifests == 0

    def summary(self) -> str:
        head = f"checked {self.manifests} manifests ({self.lookups} blob lookups) in {self.storage}"
        if self.ok:
            return f"{head}: every blob is there"
        return (
            f"{head}: {self.damaged_manifests} manifests have blobs missing "
            f"({self.missing_count} distinct blobs missing); restore the image contents "
            "into this storage (with the storage's own tools), then run `wharf storage check` "
            "again"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "storage": self.storage,
            "manifests": self.manifests,
            "lookups": self.lookups,
            "damagedManifests": self.damaged_manifests,
            "missingBlobs": self.missing_count,
            "ok": self.ok,
        }


def _path(digest: str) -> str | None:
    from wharf.registry.digest import parse_digest
    from wharf.storage.paths import blob_path

    try:
        return blob_path(parse_digest(digest))
    except Exception:
        return None


def check_storage(
    store: MetadataStore,
    driver: StorageDriver,
    *,
    on_damaged: Callable[[Damaged], None] | None = None,
    batch: int = BATCH,
) -> CheckReport:
    report = CheckReport(storage=driver.describe())
    cache: OrderedDict[str, int] = OrderedDict()

    def lookup(digest: str) -> int:
        path = _path(digest)
        found = driver.stat(path) if path else None
        return NOT_FOUND if found is None else found

    last = 0
    with ThreadPoolExecutor(LOOKUPS) as pool:
        while True:
            with store._read() as conn:
                manifests = conn.execute(
                    select(t.manifests.c.id, t.manifests.c.digest, t.repositories.c.name)
                    .join(t.repositories, t.repositories.c.id == t.manifests.c.repository_id)
                    .where(t.manifests.c.id > last)
                    .order_by(t.manifests.c.id)
                    .limit(batch)
                ).all()
                if not manifests:
                    break
                ids = [m.id for m in manifests]
                refs = conn.execute(
                    select(
                        t.manifest_references.c.manifest_id,
                        t.manifest_references.c.digest,
                        t.blobs.c.size,
                    )
                    .join(t.blobs, t.blobs.c.digest == t.manifest_references.c.digest)
                    .where(
                        t.manifest_references.c.kind == "blob",
                        t.manifest_references.c.manifest_id.in_(ids),
                    )
                ).all()
            last = ids[-1]
            report.manifests += len(manifests)
            wanted = sorted({r.digest for r in refs if r.digest not in cache})
            for digest, found in zip(wanted, pool.map(lookup, wanted), strict=True):
                cache[digest] = found
                report.lookups += 1
                if len(cache) > CACHE:
                    cache.popitem(last=False)
            problems: dict[int, list[dict[str, Any]]] = {}
            for r in refs:
                found = cache.get(r.digest)
                if found is None:  # evicted within this batch: look again
                    found = cache[r.digest] = lookup(r.digest)
                cache.move_to_end(r.digest)
                if found != r.size:
                    problems.setdefault(r.manifest_id, []).append(
                        {
                            "digest": r.digest,
                            "size": r.size,
                            "found": None if found == NOT_FOUND else found,
                        }
                    )
                    if r.digest not in report.missing_blobs:
                        report.missing_count += 1
                        if len(report.missing_blobs) < CACHE:
                            report.missing_blobs.add(r.digest)
            if not problems:
                continue
            report.damaged_manifests += len(problems)
            with store._read() as conn:
                tag_rows = conn.execute(
                    select(t.tags.c.manifest_id, t.tags.c.name)
                    .where(t.tags.c.manifest_id.in_(list(problems)))
                    .order_by(t.tags.c.name)
                ).all()
            tags: dict[int, list[str]] = {}
            for row in tag_rows:
                tags.setdefault(row.manifest_id, []).append(row.name)
            if on_damaged:
                for m in manifests:
                    if m.id in problems:
                        missing = sorted(problems[m.id], key=lambda p: p["digest"])
                        on_damaged(Damaged(m.name, m.digest, tags.get(m.id, []), missing))
    return report
