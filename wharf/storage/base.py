"""The blob storage driver interface.

Deliberately small (after the reference registry's driver): stat, read at an offset, write at
an offset with an explicit durable commit, atomic move, delete. Methods are blocking; the
registry calls them from worker threads.
"""

from __future__ import annotations

from typing import BinaryIO, Literal, Protocol


class StorageError(Exception):
    """Storage failed for a reason outside Wharf: an object store that cannot be reached, a
    bucket that is gone, credentials it refuses, or it is full. Drivers raise it in place of
    their SDK's errors (the filesystem driver leaves the OS's errors as they are: their errno
    already says). The HTTP layers answer it 503 or 507 (`wharf/faults.py`)."""

    def __init__(
        self, message: str, kind: Literal["full", "read-only", "unavailable"] = "unavailable"
    ) -> None:
        super().__init__(message)
        self.kind = kind


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def commit(self) -> None:
        """Make everything written durable (fsync) and close."""

    def close(self) -> None:
        """Close; what was written may be read back (durability is only promised by commit)."""

    def abort(self) -> None:
        """Give up: what this writer wrote may or may not be kept. Drivers that stage data
        (object stores) drop it; the caller has not counted these bytes, so the next writer at
        the same offset replaces them either way."""


class StorageDriver(Protocol):
    def stat(self, path: str) -> int | None:
        """Size in bytes of the object at path, or None if there is none."""

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        """A file-like object positioned at offset. Raises FileNotFoundError."""

    def writer(self, path: str, offset: int = 0) -> BlobWriter:
        """Write starting at offset; anything stored past offset is discarded."""

    def move(self, src: str, dst: str) -> None:
        """Atomically make src's content visible at dst (replacing dst) and remove src."""

    def delete(self, path: str) -> None:
        """Delete an object or a whole prefix; missing paths are not an error."""

    def local_path(self, path: str) -> str | None:
        """A filesystem path for zero-copy reads, when the driver has one."""

    def redirect_url(self, path: str) -> str | None:
        """A short-lived URL from which a client may GET the object directly, when the driver
        is configured to redirect pulls (off by default); None to serve it through Wharf."""

    def describe(self) -> str:
        """The storage's URL for people to read: no secrets."""
