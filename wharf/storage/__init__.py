"""Blob storage drivers, chosen by the --storage URL.

    file:///path
    s3://BUCKET/PREFIX?region=&endpoint=&path_style=&profile=&sse=&kms_key_id=&redirect=
    gs://BUCKET/PREFIX?project=&endpoint=&redirect=
    az://CONTAINER/PREFIX?account=&endpoint=&redirect=

Cloud SDKs are imported only when their scheme is used, so a filesystem replica does not pay
their memory. Credentials never appear in the URL (it is shown in `wharf status` and may sit in
a process listing); each driver reads them from its cloud's usual environment variables.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from wharf.storage.base import BlobWriter, StorageDriver
from wharf.storage.filesystem import FilesystemDriver

__all__ = [
    "BlobWriter",
    "FilesystemDriver",
    "StorageDriver",
    "StorageURLError",
    "open_storage",
    "parse_storage_url",
]

PARAMS = {
    "file": set(),
    "s3": {"region", "endpoint", "path_style", "profile", "sse", "kms_key_id", "redirect"},
    "gs": {"project", "endpoint", "redirect"},
    "az": {"account", "endpoint", "redirect"},
}
SSE = ("AES256", "aws:kms", "aws:kms:dsse")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class StorageURLError(ValueError):
    """A --storage URL that cannot work; the message says what to change."""


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "false").lower()
    if value not in _TRUE + _FALSE:
        raise StorageURLError(f"{name}={params[name]!r}: expected true or false")
    return value in _TRUE


def parse_storage_url(url: str) -> tuple[str, str, str, dict[str, str]]:
    """(scheme, bucket, prefix, params) of a storage URL, checked."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in PARAMS:
        raise StorageURLError(
            f"unsupported storage URL scheme {scheme!r}: use file:///path, s3://bucket/prefix, "
            "gs://bucket/prefix or az://container/prefix"
        )
    if parts.password is not None or (parts.username and scheme != "file"):
        raise StorageURLError(
            "credentials do not belong in the storage URL (it is shown in status output and "
            "process listings): use the cloud's environment variables (see the operator guide)"
        )
    params: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in PARAMS[scheme]:
            allowed = ", ".join(sorted(PARAMS[scheme])) or "none"
            raise StorageURLError(f"unknown {scheme}:// parameter {key!r} (allowed: {allowed})")
        params[key] = value
    if scheme == "file":
        if not parts.path:
            raise StorageURLError("file:// needs an absolute path: file:///srv/wharf/storage")
        return scheme, "", unquote(parts.path), params
    bucket = parts.hostname or ""
    if not bucket or not all(c.isalnum() or c in "-._" for c in bucket):
        raise StorageURLError(f"invalid bucket or container name {parts.netloc!r}")
    prefix = unquote(parts.path).strip("/")
    if ".." in prefix.split("/"):
        raise StorageURLError("the storage prefix may not contain '..'")
    if "sse" in params and params["sse"] not in SSE:
        raise StorageURLError(f"sse={params['sse']!r}: expected one of {', '.join(SSE)}")
    kms = params.get("sse", "").startswith("aws:kms")
    if scheme == "s3" and "kms_key_id" in params and not kms:
        raise StorageURLError("kms_key_id needs sse=aws:kms")
    for name in ("path_style", "redirect"):
        if name in params:
            _flag(params, name)
    return scheme, bucket, prefix, params


def open_storage(url: str) -> StorageDriver:
    scheme, bucket, prefix, params = parse_storage_url(url)
    if scheme == "file":
        return FilesystemDriver(prefix)

    from wharf.storage.objectstore import ObjectStoreDriver

    backend: object
    if scheme == "s3":
        from wharf.storage.s3 import S3Bucket

        backend = S3Bucket(
            bucket,
            region=params.get("region"),
            endpoint=params.get("endpoint"),
            path_style=_flag(params, "path_style"),
            profile=params.get("profile"),
            sse=params.get("sse"),
            kms_key_id=params.get("kms_key_id"),
        )
    elif scheme == "gs":
        from wharf.storage.gcs import GCSBucket

        backend = GCSBucket(bucket, project=params.get("project"), endpoint=params.get("endpoint"))
    else:
        from wharf.storage.azure import AzureBucket

        account = params.get("account")
        if not account:
            raise StorageURLError("az:// needs ?account=STORAGE_ACCOUNT_NAME")
        backend = AzureBucket(bucket, account=account, endpoint=params.get("endpoint"))
    return ObjectStoreDriver(
        backend,  # type: ignore[arg-type]
        prefix,
        url,
        redirect=_flag(params, "redirect"),
    )
