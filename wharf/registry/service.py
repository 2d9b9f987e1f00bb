"""The registry's domain logic: blobs, uploads, manifests, tags, referrers.

HTTP handlers translate requests into calls here; this module knows nothing of HTTP beyond
raising the spec's errors. Blocking store and storage calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeVar

from anyio import to_thread

from wharf.metadata.models import Manifest, Referrer, Repository, Upload
from wharf.metadata.store import LeaseLost, MetadataStore, MissingReference
from wharf.registry import mediatypes as mt
from wharf.registry.digest import CANONICAL, Digest, parse_digest
from wharf.registry.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    RangeInvalid,
    SizeInvalid,
)
from wharf.registry.manifest import parse_manifest
from wharf.registry.names import validate_tag
from wharf.storage import StorageDriver
from wharf.storage.paths import blob_path, upload_path, upload_prefix

T = TypeVar("T")

log = logging.getLogger(__name__)


def _lease_seconds() -> float:
    """WHARF_UPLOAD_LEASE_SECONDS (tests shorten it); 30 s when unset or not a duration."""
    value = os.environ.get("WHARF_UPLOAD_LEASE_SECONDS")
    if not value:
        return 30.0
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        log.warning("WHARF_UPLOAD_LEASE_SECONDS=%r is not in (0, 3600] seconds; using 30", value)
        return 30.0
    return seconds


WRITE_BATCH = 1 << 20  # bytes handed to a worker thread at a time (write + hash)
READ_CHUNK = 1 << 20
UPLOAD_LEASE_SECONDS = _lease_seconds()  # a dead writer blocks its upload at most this long
# A writer renews its lease a third of the way in and writes nothing in the last third: a
# storage write that started in time has that long to land (and replicas' clocks that long to
# disagree) before another request may take the upload over and write the same offsets.
LEASE_RENEW_SECONDS = UPLOAD_LEASE_SECONDS / 3
LEASE_MARGIN_SECONDS = UPLOAD_LEASE_SECONDS / 3
MAX_MANIFEST_SIZE = 4 << 20  # the spec's suggested minimum a registry must accept


async def run(func: Callable[..., T], *args: Any) -> T:
    return await to_thread.run_sync(func, *args)


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int
    path: str


@dataclass(slots=True)
class _Lease:
    upload_id: str
    token: str
    repository_id: int
    size: int
    finished: bool = False
    hasher: Any | None = None  # the running hash at `size`, kept once the size is recorded
    renew_at: float = 0.0
    write_until: float = 0.0

    def held_from(self, asked: float) -> None:
        """The store granted (or renewed) the lease in a call made at `asked` (monotonic): it
        holds until at least `asked` + the lease's length."""
        self.renew_at = asked + LEASE_RENEW_SECONDS
        self.write_until = asked + UPLOAD_LEASE_SECONDS - LEASE_MARGIN_SECONDS

    def check(self) -> None:
        """Right before each storage write, in the thread that does it (so a write that waited
        for a thread is checked when it runs, not when it was queued)."""
        if time.monotonic() >= self.write_until:
            # Not `finished`: the release that follows gives the lease back if it is still
            # ours, with the size as it was before this request.
            raise _lease_lost()


@dataclass(frozen=True, slots=True)
class StoredManifest:
    digest: str
    media_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class PushedManifest:
    digest: str
    subject: str | None
    tags: tuple[str, ...]


class _HashStates:
    """Running hashes of uploads in progress in this process, keyed by upload id.

    An upload continued on another process (or after a restart) has no entry here; its hash is
    then recomputed from storage when it completes, so correctness never depends on this cache.
    """

    def __init__(self, limit: int = 4096) -> None:
        self._states: OrderedDict[str, tuple[int, Any]] = OrderedDict()
        self._limit = limit

    def take(self, upload_id: str, offset: int) -> Any | None:
        state = self._states.pop(upload_id, None)
        if state is None:
            return hashlib.new(CANONICAL) if offset == 0 else None
        at, hasher = state
        return hasher if at == offset else None

    def put(self, upload_id: str, offset: int, hasher: Any) -> None:
        self._states[upload_id] = (offset, hasher)
        while len(self._states) > self._limit:
            self._states.popitem(last=False)

    def drop(self, upload_id: str) -> None:
        self._states.pop(upload_id, None)


class RegistryService:
    def __init__(self, store: MetadataStore, storage: StorageDriver) -> None:
        self.store = store
        self.storage = storage
        self._hashes = _HashStates()
        self.redirects = bool(getattr(storage, "redirect", False))

    async def _read(self, func: Callable[..., T], *args: Any) -> T:
        """A short metadata read: inline when the store says it is fast, else in a thread."""
        if self.store.fast_reads:
            return func(*args)
        return await run(func, *args)

    async def run_read(self, func: Callable[..., T], *args: Any) -> T:
        """Run a short blocking metadata read (inline on the embedded store)."""
        return await self._read(func, *args)

    # -- repositories -----------------------------------------------------------------------

    async def repository(self, name: str) -> Repository | None:
        return await self._read(self.store.get_repository, name)

    async def require_repository(self, name: str) -> Repository:
        repo = await self.repository(name)
        if repo is None:
            raise NameUnknown(name)
        return repo

    # -- blobs ------------------------------------------------------------------------------

    async def stat_blob(self, repository: str, digest: Digest) -> BlobInfo:
        size = await self._read(self.store.blob_size_in_repository, repository, str(digest))
        if size is None:
            raise BlobUnknown(str(digest))
        return BlobInfo(digest, size, blob_path(digest))

    def open_blob(self, blob: BlobInfo, offset: int = 0) -> BinaryIO:
        return self.storage.open_read(blob.path, offset)

    def blob_redirect(self, blob: BlobInfo) -> str | None:
        """A pre-signed object-store URL for this blob when redirects are configured."""
        return self.storage.redirect_url(blob.path)

    async def delete_blob(self, repository: str, digest: Digest) -> None:
        if not await run(self.store.unlink_blob, repository, str(digest)):
            raise BlobUnknown(str(digest))

    async def mount_blob(self, repository: str, digest: Digest, source: str | None) -> bool:
        """Link a blob from another repository; False when it cannot be mounted."""
        sources = [source] if source else await run(self.store.repositories_linking, str(digest))
        for name in sources:
            size = await run(self.store.blob_size_in_repository, name, str(digest))
            if size is not None:
                repo = await run(self.store.ensure_repository, repository)
                # False when garbage collection removed it meanwhile: a fresh upload then.
                return await run(self.store.mount_blob, repo.id, str(digest))
        return False

    # -- uploads ----------------------------------------------------------------------------

    async def start_upload(self, repository: str) -> Upload:
        repo = await run(self.store.ensure_repository, repository)
        upload_id = str(uuid.uuid4())
        await run(self.store.create_upload, upload_id, repo.id)
        return Upload(upload_id, repo.id, 0)

    async def get_upload(self, repository: str, upload_id: str) -> Upload:
        upload = await run(self.store.get_upload, upload_id, repository)
        if upload is None:
            raise BlobUploadUnknown(upload_id)
        return upload

    async def cancel_upload(self, repository: str, upload_id: str) -> None:
        await self.get_upload(repository, upload_id)
        if not await self._discard_upload(upload_id):
            raise BlobUploadUnknown(upload_id)

    async def _discard_upload(self, upload_id: str, lease: _Lease | None = None) -> bool:
        """Delete an upload's session and bytes; with a lease, only while it is still held
        (else another request's acknowledged bytes would go)."""
        self._hashes.drop(upload_id)
        deleted = await run(self.store.delete_upload, upload_id, lease.token if lease else None)
        if lease is not None and not deleted:
            lease.finished = True
            raise _lease_lost()
        await run(self.storage.delete, upload_prefix(upload_id))
        return deleted

    @asynccontextmanager
    async def _leased(self, repository: str, upload_id: str) -> AsyncIterator[_Lease]:
        """Hold the upload's write lease; the lease's final size is recorded on release.

        Every storage write is made under a lease checked just before it (`_Lease.check`), and
        the new size is recorded only if the lease is still this request's: a request that
        lost it (it stalled past the lease and another request took the upload over) writes
        nothing more and fails, so acknowledged bytes are never overwritten."""
        upload = await self.get_upload(repository, upload_id)
        asked = time.monotonic()
        token = await run(self.store.lease_upload, upload_id, UPLOAD_LEASE_SECONDS)
        if token is None:
            raise RangeInvalid(
                "another request is writing to this upload", headers=_range_headers(upload.size)
            )
        size = (await self.get_upload(repository, upload_id)).size
        lease = _Lease(upload_id, token, upload.repository_id, size)
        lease.held_from(asked)
        try:
            yield lease
        except BaseException:
            # The size stays as it was: bytes past it are discarded by the next writer, so a
            # half-received chunk never becomes part of the blob.
            if not lease.finished:
                await run(self.store.release_upload, upload_id, token, lease.size)
            raise
        if not lease.finished:
            lease.finished = True
            if not await run(self.store.release_upload, upload_id, token, lease.size):
                raise _lease_lost()
            if lease.hasher is not None:
                self._hashes.put(upload_id, lease.size, lease.hasher)

    async def _keep(self, lease: _Lease) -> None:
        """Renew the lease when it is due (by time, so a trickling client keeps renewing);
        a request whose lease was taken over stops here."""
        if time.monotonic() < lease.renew_at:
            return
        asked = time.monotonic()
        if not await run(
            self.store.renew_upload_lease, lease.upload_id, lease.token, UPLOAD_LEASE_SECONDS
        ):
            lease.finished = True
            raise _lease_lost()
        lease.held_from(asked)

    async def _append_leased(
        self,
        upload_id: str,
        lease: _Lease,
        body: AsyncIterator[bytes],
        start: int | None,
        length: int | None,
    ) -> None:
        if start is not None and start != lease.size:
            raise RangeInvalid(
                f"chunk starts at {start} but the upload has {lease.size} bytes",
                headers=_range_headers(lease.size),
            )
        received, hasher = await self._write(upload_id, lease.size, body, lease)
        if length is not None and received != length:
            raise SizeInvalid(f"expected {length} bytes, received {received}")
        lease.size += received
        lease.hasher = hasher

    async def append(
        self,
        repository: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """Append a request body to an upload; returns the upload's new size.

        `start` and `length` come from Content-Range/Content-Length: a chunk that does not start
        where the upload ends is refused (416) before anything is written.
        """
        async with self._leased(repository, upload_id) as lease:
            await self._append_leased(upload_id, lease, body, start, length)
        return lease.size

    async def _write(
        self,
        upload_id: str,
        offset: int,
        body: AsyncIterator[bytes],
        lease: _Lease | None = None,
    ) -> tuple[int, Any | None]:
        """Store a body at `offset`; returns the bytes received and the running hash after
        them (None when it must be recomputed from storage). With a lease, each storage
        write (opening, every batch, the last partial one, closing) is made under it."""
        hasher = self._hashes.take(upload_id, offset)
        check = lease.check if lease is not None else lambda: None

        async def keep() -> None:
            if lease is not None:
                await self._keep(lease)

        def open_writer() -> Any:
            check()
            return self.storage.writer(upload_path(upload_id), offset)

        await keep()
        writer = await run(open_writer)
        received = 0
        batch: list[bytes] = []
        batched = 0
        in_flight: asyncio.Future[None] | None = None

        def flush(data: bytes) -> None:
            check()
            writer.write(data)
            if hasher is not None:
                hasher.update(data)

        def close() -> None:
            check()  # an object store makes what was written visible here
            writer.close()

        failed = True
        try:
            async for chunk in body:
                if not chunk:
                    continue
                await keep()
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    # Write and hash this batch in a thread while the next one is received:
                    # at most two batches are in memory.
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(run(flush, b"".join(batch)))
                    received += batched
                    batch, batched = [], 0
            if in_flight is not None:
                await in_flight
                in_flight = None
            if batch:
                await keep()
                await run(flush, b"".join(batch))
                received += batched
            await keep()
            await run(close)
            failed = False
        finally:
            if in_flight is not None:
                await asyncio.gather(in_flight, return_exceptions=True)
            # A body cut short is never counted; object stores drop what they staged for it.
            if failed:
                await run(writer.abort)
        return received, hasher

    async def complete_upload(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        body: AsyncIterator[bytes] | None = None,
        *,
        start: int | None = None,
        length: int | None = None,
    ) -> BlobInfo:
        """Finish an upload: append the last body, verify the digest, make the blob visible."""
        async with self._leased(repository, upload_id) as lease:
            if body is not None:
                await self._append_leased(upload_id, lease, body, start, length)
                hasher = lease.hasher
            else:
                hasher = self._hashes.take(upload_id, lease.size)
            blob = await self._publish(
                lease.repository_id, upload_id, digest, lease.size, hasher, lease
            )
            lease.finished = True
            return blob

    async def put_blob(
        self, repository: str, digest: Digest, body: AsyncIterator[bytes], length: int | None
    ) -> BlobInfo:
        """A whole blob in one request (POST ?digest=): no session row and no lease are needed,
        since no other request can know this upload. A crash leaves only unreferenced upload
        bytes."""
        repo = await run(self.store.ensure_repository, repository)
        upload_id = str(uuid.uuid4())
        try:
            received, hasher = await self._write(upload_id, 0, body)
            if length is not None and received != length:
                raise SizeInvalid(f"expected {length} bytes, received {received}")
        except BaseException:
            await self._discard_upload(upload_id)
            raise
        return await self._publish(repo.id, upload_id, digest, received, hasher)

    async def _publish(
        self,
        repository_id: int,
        upload_id: str,
        digest: Digest,
        size: int,
        hasher: Any | None,
        lease: _Lease | None = None,
    ) -> BlobInfo:
        """Verify an upload's digest, move it to its content address and link it, atomically
        as far as readers can tell: the blob is visible only once the link is committed.
        With a lease, the session ends only if the lease is still this request's."""
        path = upload_path(upload_id)
        if digest.algorithm != CANONICAL:
            hasher = None
        if lease is not None:
            await self._keep(lease)
        actual = await run(self._finish_file, path, size, hasher, digest.algorithm, lease)
        if actual != digest.hex:
            await self._discard_upload(upload_id, lease)
            raise DigestInvalid({"expected": str(digest), "actual": f"{digest.algorithm}:{actual}"})
        target = blob_path(digest)

        def place() -> None:
            # Inside the transaction that records the blob, holding its row's lock: garbage
            # collection deletes a blob's object and row together under that same lock, so
            # "the row exists" and "the object exists" change together.
            if self.storage.stat(target) == size:
                self.storage.delete(path)  # the same content is already stored
            else:
                self.storage.move(path, target)

        token = lease.token if lease is not None else None
        try:
            await run(
                self.store.complete_upload,
                upload_id,
                repository_id,
                str(digest),
                size,
                place,
                token,
            )
        except LeaseLost:
            assert lease is not None
            lease.finished = True
            raise _lease_lost() from None
        await run(self.storage.delete, upload_prefix(upload_id))
        return BlobInfo(digest, size, target)

    def _finish_file(
        self, path: str, size: int, hasher: Any | None, algorithm: str, lease: _Lease | None
    ) -> str:
        """Make the upload durable and return its hex digest (hashing it again if need be)."""
        if lease is not None:
            lease.check()  # committing rewrites the upload's end (and object-store segments)
        if self.storage.stat(path) is None:
            self.storage.writer(path, 0).commit()  # an empty upload that never got a body
        else:
            self.storage.writer(path, size).commit()
        if hasher is None:
            hasher = hashlib.new(algorithm)
            left = size
            with self.storage.open_read(path) as f:
                while left and (chunk := f.read(min(READ_CHUNK, left))):
                    hasher.update(chunk)
                    left -= len(chunk)
        return hasher.hexdigest()

    # -- manifests --------------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str) -> StoredManifest:
        if ":" in reference:
            digest = parse_digest(reference)
            found: Manifest | None = await self._read(
                self.store.get_manifest_by_digest, repository, str(digest)
            )
        else:
            # A malformed tag cannot have been pushed: it is simply unknown.
            found = await self._read(self.store.get_manifest_by_tag, repository, reference)
        if found is None:
            raise ManifestUnknown(reference)
        return StoredManifest(found.digest, found.media_type, found.content)

    async def put_manifest(
        self,
        repository: str,
        reference: str,
        body: bytes,
        content_type: str | None,
        extra_tags: list[str] | None = None,
        author: str | None = None,
    ) -> PushedManifest:
        parsed = parse_manifest(body, content_type)
        sha256 = f"sha256:{hashlib.sha256(body).hexdigest()}"
        sha512 = f"sha512:{hashlib.sha512(body).hexdigest()}"
        tags = [validate_tag(tag) for tag in extra_tags or []]
        if ":" in reference:
            wanted = parse_digest(reference)
            actual = sha512 if wanted.algorithm == "sha512" else sha256
            if actual != str(wanted):
                raise DigestInvalid(
                    {"expected": str(wanted), "actual": actual},
                    message="manifest digest did not match the content",
                )
            digest = str(wanted)
        else:
            tags.insert(0, validate_tag(reference))
            digest = sha256

        repo = await run(self.store.ensure_repository, repository)
        needed = {str(d.digest): d for d in parsed.blobs if not d.is_foreign}
        sizes = await run(self.store.blob_sizes_in_repository, repo.id, needed)
        for key, descriptor in needed.items():
            if key not in sizes:
                raise ManifestBlobUnknown({"digest": key})
            if sizes[key] != descriptor.size:
                raise ManifestInvalid(
                    {"digest": key, "size": descriptor.size, "stored": sizes[key]},
                    message="descriptor size does not match the stored blob",
                )
        children = {str(d.digest) for d in parsed.manifests}
        if children:
            stored_sizes = await run(self.store.manifest_sizes, repo.id, children)
            missing = sorted(children - set(stored_sizes))
            if missing:
                raise ManifestBlobUnknown({"digest": missing[0]}, message="manifest unknown")
            for child in parsed.manifests:
                stored_size = stored_sizes[str(child.digest)]
                if child.size != stored_size:
                    raise ManifestInvalid(
                        {"digest": str(child.digest), "size": child.size, "stored": stored_size},
                        message="descriptor size does not match the stored manifest",
                    )

        references = [("blob", str(d.digest)) for d in parsed.blobs]
        references += [("manifest", child) for child in children]
        subject = str(parsed.subject.digest) if parsed.subject else None
        stored = {
            "digest": digest,
            "sha256": sha256,
            "sha512": sha512,
            "media_type": parsed.media_type,
            "content": body,
            "artifact_type": parsed.artifact_type,
            "subject": subject,
            "annotations": parsed.annotations or None,
            "references": references,
            "tags": tags,
            "author": author,
            "required_blobs": needed,
            "required_manifests": children,
        }
        try:
            stored_as = await run(lambda: self.store.put_manifest(repo.id, **stored))
        except MissingReference as e:  # removed by garbage collection meanwhile
            raise ManifestBlobUnknown({"digest": str(e)}) from None
        # By tag, the client did not choose an algorithm: report the digest the content is
        # known by (a sha512 push stays sha512), as GET by tag does.
        return PushedManifest(digest if ":" in reference else stored_as, subject, tuple(tags))

    async def delete_manifest(self, repository: str, reference: str) -> None:
        if ":" in reference:
            digest = parse_digest(reference)
            if not await run(self.store.delete_manifest, repository, str(digest)):
                raise ManifestUnknown(reference)
        else:
            if not await run(self.store.delete_tag, repository, reference):
                raise ManifestUnknown(reference)

    # -- discovery --------------------------------------------------------------------------

    async def list_tags(self, repository: str, n: int | None, last: str | None) -> list[str]:
        repo = await self.require_repository(repository)
        return await run(self.store.list_tags, repo.id, n, last)

    async def referrers(self, repository: str, subject: Digest, artifact_type: str | None) -> bytes:
        found: list[Referrer] = await run(
            self.store.referrers, repository, str(subject), artifact_type
        )
        descriptors = []
        for r in found:
            d: dict[str, Any] = {"mediaType": r.media_type, "digest": r.digest, "size": r.size}
            if r.artifact_type:
                d["artifactType"] = r.artifact_type
            if r.annotations:
                d["annotations"] = json.loads(r.annotations)
            descriptors.append(d)
        index = {"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descriptors}
        return json.dumps(index, separators=(",", ":")).encode()


def _lease_lost() -> BlobUploadInvalid:
    return BlobUploadInvalid(
        "this request no longer holds the upload (it stalled past its write lease and another"
        " request took the upload over, or the upload was canceled or expired); none of its"
        " bytes were kept: GET the upload for its current offset"
    )


def _range_headers(size: int) -> dict[str, str]:
    return {"Range": f"0-{max(size - 1, 0)}"}
