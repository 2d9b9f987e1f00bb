"""The races of online GC, forced in both orders, in one process: the collector is stopped
at the moment it has chosen its garbage and before it deletes, and a writer acts there."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import timedelta

import pytest

from tests import metadata_db
from wharf.jobs.gc import GarbageCollector
from wharf.metadata import schema as t
from wharf.metadata.store import MetadataStore, MissingReference, utcnow
from wharf.registry.digest import parse_digest
from wharf.registry.service import RegistryService
from wharf.storage import open_storage
from wharf.storage.paths import blob_path


@pytest.fixture
def env(tmp_path):
    (tmp_path / "data").mkdir()
    store = MetadataStore(metadata_db.server_db_url(tmp_path / "data"))
    store.migrate()
    storage = open_storage(f"file://{tmp_path / 'storage'}")
    yield store, storage, RegistryService(store, storage)
    store.dispose()


def old_blob(store, storage, repo_id: int, data: bytes) -> str:
    """A stored blob, linked into the repository, last touched long ago."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    w = storage.writer(blob_path(parse_digest(digest)))
    w.write(data)
    w.commit()
    store.link_blob(repo_id, digest, len(data))
    with store._write() as conn:
        past = utcnow() - timedelta(days=1)
        conn.execute(
            t.blobs.update()
            .where(t.blobs.c.digest == digest)
            .values(created_at=past, touched_at=past)
        )
    return digest


class PausingCollector(GarbageCollector):
    """Calls `meanwhile` after choosing a batch of garbage blobs, before deleting it."""

    def __init__(self, store, storage, meanwhile) -> None:
        super().__init__(store, storage)
        self.meanwhile = meanwhile

    def _delete_blob_batch(self, digests, cutoff):
        self.meanwhile()
        return super()._delete_blob_batch(digests, cutoff)


def manifest_for(store, repo_id: int, digest: str) -> None:
    body = os.urandom(16)
    store.put_manifest(
        repo_id,
        digest="sha256:" + hashlib.sha256(body).hexdigest(),
        sha256="sha256:" + hashlib.sha256(body).hexdigest(),
        sha512="sha512:" + hashlib.sha512(body).hexdigest(),
        media_type="application/vnd.oci.image.manifest.v1+json",
        content=body,
        artifact_type=None,
        subject=None,
        annotations=None,
        references=[("blob", digest)],
        tags=["v1"],
        required_blobs=[digest],
    )


def test_a_manifest_pushed_after_gc_chose_its_blob_keeps_the_blob(env):
    store, storage, _ = env
    repo = store.ensure_repository("race/a")
    digest = old_blob(store, storage, repo.id, b"layer bytes")
    collector = PausingCollector(store, storage, lambda: manifest_for(store, repo.id, digest))
    report = collector.run(grace=timedelta(0))
    assert report.blobs == 0
    assert storage.stat(blob_path(parse_digest(digest))) == len(b"layer bytes")


def test_a_manifest_pushed_after_gc_deleted_its_blob_is_refused(env):
    store, storage, _ = env
    repo = store.ensure_repository("race/b")
    digest = old_blob(store, storage, repo.id, b"doomed layer")
    assert GarbageCollector(store, storage).run(grace=timedelta(0)).blobs == 1
    with pytest.raises(MissingReference):
        manifest_for(store, repo.id, digest)
    assert store.count("manifests") == 0


def test_an_upload_of_the_same_blob_during_gc_survives(env):
    """The upload finds the object still stored and keeps it instead of moving its own bytes
    in; GC must then not delete it."""
    store, storage, registry = env
    repo = store.ensure_repository("race/c")
    data = b"pushed again while collected"
    digest = old_blob(store, storage, repo.id, data)

    async def body():
        yield data

    def upload_again():
        asyncio.run(registry.put_blob("race/c", parse_digest(digest), body(), len(data)))

    report = PausingCollector(store, storage, upload_again).run(grace=timedelta(0))
    assert report.blobs == 0
    with storage.open_read(blob_path(parse_digest(digest))) as f:
        assert f.read() == data


def test_a_mount_after_gc_deleted_the_blob_is_refused(env):
    store, storage, _registry = env
    source = store.ensure_repository("race/src")
    digest = old_blob(store, storage, source.id, b"mount me")
    target = store.ensure_repository("race/dst")
    mounted = []

    def mount_after_delete():
        mounted.append(store.mount_blob(target.id, digest))

    collector = GarbageCollector(store, storage)
    assert collector.run(grace=timedelta(0)).blobs == 1
    mount_after_delete()
    assert mounted == [False]
    assert store.blob_size_in_repository("race/dst", digest) is None


def test_a_mount_before_gc_deletes_keeps_the_blob(env):
    store, storage, _ = env
    source = store.ensure_repository("race/src2")
    digest = old_blob(store, storage, source.id, b"mounted in time")
    target = store.ensure_repository("race/dst2")
    collector = PausingCollector(store, storage, lambda: store.mount_blob(target.id, digest))
    assert collector.run(grace=timedelta(0)).blobs == 0
    assert store.blob_size_in_repository("race/dst2", digest) == len(b"mounted in time")


def test_gc_during_an_uploads_storage_check_never_splits_row_and_object(env):
    """The narrowest race: the upload of a blob that is already stored (and garbage: nothing
    references it) looks at storage, and GC starts right then. The upload holds the blob's
    row lock while it looks, so GC waits for its commit; whatever GC then decides, the row
    and the object stay together: both there, or both gone."""
    import threading

    store, storage, _ = env
    repo = store.ensure_repository("race/d")
    data = b"stored once, pushed twice"
    digest = old_blob(store, storage, repo.id, data)
    target = blob_path(parse_digest(digest))
    collector: list[threading.Thread] = []

    class GCDuringStat:
        def __getattr__(self, name):
            return getattr(storage, name)

        def stat(self, path):
            size = storage.stat(path)
            if path == target and not collector:
                gc = threading.Thread(
                    target=lambda: GarbageCollector(store, storage).run(grace=timedelta(0))
                )
                collector.append(gc)
                gc.start()
                gc.join(2)  # it cannot finish while the upload holds the row: it waits
            return size

    registry = RegistryService(store, GCDuringStat())

    async def body():
        yield data

    asyncio.run(registry.put_blob("race/d", parse_digest(digest), body(), len(data)))
    collector[0].join(30)
    row = store.blob_size_in_repository("race/d", digest)
    stored = storage.stat(target)
    assert (row, stored) in ((len(data), len(data)), (None, None)), (row, stored)
