"""The only place that knows the layout of objects in blob storage."""

from __future__ import annotations

from wharf.registry.digest import Digest


def blob_path(digest: Digest) -> str:
    return f"blobs/{digest.algorithm}/{digest.hex[:2]}/{digest.hex}/data"


def upload_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}"


def upload_path(upload_id: str) -> str:
    return f"{upload_prefix(upload_id)}/data"
