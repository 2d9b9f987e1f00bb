"""The storage driver for object stores (S3, Google Cloud Storage, Azure Blob Storage).

Object stores have no rename and no append, and a registry upload arrives in chunks that may
each land on a different replica. Each cloud has a server-side way to build one object out of
pieces without sending the bytes again, and the driver maps chunked uploads onto it:

- **Segments + compose** (S3, GCS): every writer streams one *segment* object,
  `<path>.seg/<offset>`, itself a multipart (S3) or resumable (GCS) upload, so memory stays
  bounded. Publishing the upload composes the segments into the blob's object server-side: S3
  UploadPartCopy into a multipart upload, GCS compose. S3 refuses parts under 5 MiB except the
  last, so a writer that starts after a small last segment first copies that segment into its
  own (at most 5 MiB re-read per chunk, only for clients sending chunks that small).
- **Append** (Azure): a writer stages blocks on the upload's own blob and commits the block
  list it kept plus its new blocks, so the upload object simply grows.

A writer at an offset below what is stored discards the rest (the registry's rule: bytes past
an upload's recorded size were never acknowledged). Moving an upload to its content address is
a server-side copy (or compose) and a delete. Nothing here holds a whole object in memory.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from wharf.storage.base import StorageError

SEGMENTS = ".seg/"
COPY_CHUNK = 1 << 20


class ObjectWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """Make the object visible (complete the multipart/resumable upload)."""

    def abort(self) -> None:
        """Drop what was staged; the object is left as it was."""


class Bucket(Protocol):
    """What the driver needs of one cloud: a thin layer over its SDK."""

    min_part: int  # smallest non-final piece `compose` accepts (S3: 5 MiB)
    appendable: bool  # `append` is supported (Azure block blobs)

    def head(self, key: str) -> int | None: ...

    def read(self, key: str, offset: int) -> BinaryIO:
        """Stream from offset; FileNotFoundError if there is no such object."""

    def put(self, key: str) -> ObjectWriter:
        """A streaming writer that replaces key atomically on commit."""

    def append(self, key: str, offset: int) -> ObjectWriter:
        """A writer that keeps key's first offset bytes and adds to them (appendable only)."""

    def compose(self, dst: str, sources: list[tuple[str, int]]) -> None:
        """Make dst the concatenation of sources (key, size), server-side."""

    def copy(self, src: str, dst: str) -> None: ...

    def list(self, prefix: str) -> Iterator[tuple[str, int]]: ...

    def delete(self, keys: list[str]) -> None:
        """Delete these keys; missing ones are not an error."""

    def presign(self, key: str, expires: int) -> str: ...

    def abort_incomplete(self, prefix: str) -> None:
        """Drop unfinished multipart uploads under prefix (a no-op where the cloud expires
        them by itself: GCS resumable sessions, Azure uncommitted blocks)."""

    def failure(self, error: Exception) -> str | None:
        """What went wrong, when `error` (from this cloud's SDK) is the cloud failing rather
        than Wharf: unreachable, erring on its side, refusing the credentials, the bucket
        gone. None for anything else (a bug: its traceback is logged)."""


@dataclass(frozen=True)
class Segment:
    key: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


def segment_key(key: str, offset: int) -> str:
    return f"{key}{SEGMENTS}{offset:020d}"


class ObjectStoreDriver:
    """A StorageDriver over a Bucket, with every path under `prefix`."""

    def __init__(
        self,
        bucket: Bucket,
        prefix: str,
        url: str,
        *,
        redirect: bool = False,
        redirect_seconds: int = 1200,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = url
        self.redirect = redirect
        self.redirect_seconds = redirect_seconds

    def _key(self, path: str) -> str:
        if not path or path.startswith("/") or ".." in path.split("/") or SEGMENTS in path:
            raise ValueError(f"invalid storage path: {path!r}")
        return self.prefix + path

    def _segments(self, key: str) -> list[Segment]:
        base = key + SEGMENTS
        found = []
        for name, size in self.bucket.list(base):
            tail = name[len(base) :]
            if tail.isdigit() and len(tail) == 20:
                found.append(Segment(name, int(tail), size))
        return sorted(found, key=lambda s: s.offset)

    @staticmethod
    def _contiguous(segments: list[Segment]) -> list[Segment]:
        """The segments that form the object, from offset 0 without a gap."""
        chain: list[Segment] = []
        at = 0
        for seg in segments:
            if seg.offset != at:
                break
            chain.append(seg)
            at = seg.end
        return chain

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """The cloud's own failures become StorageError, which the HTTP layers answer 503."""
        try:
            yield
        except Exception as e:
            what = self.bucket.failure(e)
            if what is None:
                raise
            raise StorageError(what) from e

    # -- StorageDriver ----------------------------------------------------------------------

    def stat(self, path: str) -> int | None:
        with self._failures():
            key = self._key(path)
            size = self.bucket.head(key)
            if size is not None or self.bucket.appendable:
                return size
            chain = self._contiguous(self._segments(key))
            return chain[-1].end if chain else None

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        with self._failures():
            return _GuardedReader(self, self._open_read(path, offset))  # type: ignore[return-value]

    def _open_read(self, path: str, offset: int) -> BinaryIO:
        key = self._key(path)
        try:
            return self.bucket.read(key, offset)
        except FileNotFoundError:
            if self.bucket.appendable:
                raise
        chain = self._contiguous(self._segments(key))
        if not chain:
            raise FileNotFoundError(path)
        return _ChainReader(self.bucket, chain, offset)

    def writer(self, path: str, offset: int = 0) -> ObjectWriter:
        with self._failures():
            key = self._key(path)
            if self.bucket.appendable:
                return _GuardedWriter(self, self.bucket.append(key, offset))
            return _GuardedWriter(self, _SegmentWriter(self, key, offset))

    def move(self, src: str, dst: str) -> None:
        with self._failures():
            self._move(src, dst)

    def _move(self, src: str, dst: str) -> None:
        skey, dkey = self._key(src), self._key(dst)
        if self.bucket.head(skey) is not None:
            self.bucket.copy(skey, dkey)
            self.bucket.delete([skey])
            return
        if self.bucket.appendable:
            raise FileNotFoundError(src)
        segments = self._segments(skey)
        chain = self._contiguous(segments)
        if not chain:
            raise FileNotFoundError(src)
        if len(chain) == 1:
            self.bucket.copy(chain[0].key, dkey)
        else:
            self.bucket.compose(dkey, [(s.key, s.size) for s in chain])
        self.bucket.delete([s.key for s in segments])

    def delete(self, path: str) -> None:
        with self._failures():
            key = self._key(path)
            keys = [key]
            keys += [name for name, _ in self.bucket.list(key + "/")]
            keys += [name for name, _ in self.bucket.list(key + SEGMENTS)]
            self.bucket.delete(keys)
            self.bucket.abort_incomplete(key + "/")
            self.bucket.abort_incomplete(key + SEGMENTS)

    def local_path(self, path: str) -> str | None:
        return None

    def redirect_url(self, path: str) -> str | None:
        if not self.redirect:
            return None
        with self._failures():
            return self.bucket.presign(self._key(path), self.redirect_seconds)

    def describe(self) -> str:
        return self.url


class _GuardedWriter:
    """A writer whose cloud failures become StorageError, as the driver's own do."""

    def __init__(self, driver: ObjectStoreDriver, inner: ObjectWriter) -> None:
        self._failures, self._inner = driver._failures, inner

    def write(self, data: bytes) -> None:
        with self._failures():
            self._inner.write(data)

    def commit(self) -> None:
        with self._failures():
            self._inner.commit()

    def close(self) -> None:
        with self._failures():
            self._inner.close()  # type: ignore[attr-defined]

    def abort(self) -> None:
        with self._failures():
            self._inner.abort()


class _GuardedReader(io.RawIOBase):
    """A reader whose cloud failures become StorageError (a pull cut short mid-stream)."""

    def __init__(self, driver: ObjectStoreDriver, inner: BinaryIO) -> None:
        self._failures, self._inner = driver._failures, inner

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        with self._failures():
            return self._inner.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        with self._failures():
            self._inner.close()
        super().close()


class _SegmentWriter:
    """Writes one segment at `offset`, after discarding what lies beyond it.

    The segment's key is its start offset, so a writer that has to restart a segment (to cut it
    short, or to merge a last segment too small to be a part) replaces it atomically when it
    commits: until then the old segments still describe the upload.
    """

    def __init__(self, driver: ObjectStoreDriver, key: str, offset: int) -> None:
        self.bucket = driver.bucket
        self.key = key
        self.offset = offset
        segments = driver._segments(key)
        chain = driver._contiguous(segments)
        if offset > (chain[-1].end if chain else 0):
            raise ValueError(f"cannot write at {offset}: the object is shorter")
        self.start = offset
        self.carry: Segment | None = None  # a segment whose head this writer rewrites
        for seg in chain:
            if seg.offset < offset < seg.end:  # cut short: keep its head
                self.start, self.carry = seg.offset, seg
        # Everything from `offset` on was never acknowledged: drop it now, with whatever a
        # writer that died (a killed replica) left half-uploaded. This writer holds the
        # upload's lease, so no live writer is using them.
        self.bucket.delete([s.key for s in segments if s.offset >= offset])
        self.bucket.abort_incomplete(key + SEGMENTS)
        kept = [s for s in chain if s.end <= offset]
        self.last = kept[-1] if kept and kept[-1].size else None
        self.existing = bool(kept) or self.carry is not None
        self._writer: ObjectWriter | None = None

    def _open(self) -> ObjectWriter:
        if self._writer is None:
            if (
                self.carry is None
                and self.last is not None
                and self.last.size < (self.bucket.min_part)
            ):
                self.start, self.carry = self.last.offset, self.last
            self._writer = self.bucket.put(segment_key(self.key, self.start))
            if self.carry is not None:
                self._copy_head(self.carry, self.offset - self.start)
        return self._writer

    def _copy_head(self, seg: Segment, length: int) -> None:
        assert self._writer is not None
        with self.bucket.read(seg.key, 0) as f:
            while length > 0:
                chunk = f.read(min(COPY_CHUNK, length))
                if not chunk:
                    raise RuntimeError(f"segment {seg.key} is shorter than listed")
                self._writer.write(chunk)
                length -= len(chunk)

    def write(self, data: bytes) -> None:
        if data:
            self._open().write(data)

    def commit(self) -> None:
        if self._writer is None and (self.carry is not None or not self.existing):
            self._open()  # a cut-short segment, or an empty object: write it out
        if self._writer is not None:
            self._writer.commit()
            self._writer = None

    close = commit

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None


class _ChainReader(io.RawIOBase):
    """Reads a chain of segments as one stream, from an offset."""

    def __init__(self, bucket: Bucket, chain: list[Segment], offset: int) -> None:
        self.bucket = bucket
        self.pending = [s for s in chain if s.end > offset]
        self.offset = offset
        self.current: BinaryIO | None = None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(COPY_CHUNK), b""))
        while True:
            if self.current is None:
                if not self.pending:
                    return b""
                seg = self.pending.pop(0)
                self.current = self.bucket.read(seg.key, max(self.offset - seg.offset, 0))
            data = self.current.read(size)
            if data:
                self.offset += len(data)
                return data
            self.current.close()
            self.current = None

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
        super().close()


class StreamReader(io.RawIOBase):
    """A file-like view of an SDK's chunk iterator or streaming body (for `read`)."""

    def __init__(self, chunks: Iterator[bytes], closer: object = None) -> None:
        self.chunks = chunks
        self.buffer = memoryview(b"")
        self.closer = closer

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            rest = bytes(self.buffer) + b"".join(self.chunks)
            self.buffer = memoryview(b"")
            return rest
        while not self.buffer:
            chunk = next(self.chunks, None)
            if chunk is None:
                return b""
            self.buffer = memoryview(chunk)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return bytes(data)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        close = getattr(self.closer, "close", None)
        if close is not None:
            close()
        super().close()
