"""Blob storage drivers, chosen by the --storage URL."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from wharf.storage.base import BlobWriter, StorageDriver
from wharf.storage.filesystem import FilesystemDriver

__all__ = ["BlobWriter", "FilesystemDriver", "StorageDriver", "open_storage"]


def open_storage(url: str) -> StorageDriver:
    parts = urlsplit(url)
    if parts.scheme == "file":
        return FilesystemDriver(unquote(parts.path))
    raise ValueError(
        f"unsupported storage URL scheme {parts.scheme!r}: this version supports file:///path"
    )
