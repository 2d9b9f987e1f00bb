"""Google Cloud Storage through google-cloud-storage.

`gs://BUCKET/PREFIX?project=...&endpoint=...&redirect=true`. Credentials are Google's
application default credentials (GOOGLE_APPLICATION_CREDENTIALS names a service-account key
file). With `endpoint` (an emulator, or a private endpoint) and no credentials configured, the
client is anonymous. Redirects sign URLs, which needs a service-account key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, BinaryIO

MAX_COMPOSE = 32  # sources per compose request
CHUNK = 8 << 20  # resumable upload chunk (a multiple of 256 KiB) and ranged read size


class GCSBucket:
    min_part = 0
    appendable = False

    def __init__(
        self, bucket: str, *, project: str | None = None, endpoint: str | None = None
    ) -> None:
        from google.cloud import storage

        kwargs: dict[str, Any] = {"project": project}
        if endpoint:
            kwargs["client_options"] = {"api_endpoint": endpoint}
            if not os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
                from google.auth.credentials import AnonymousCredentials

                kwargs["credentials"] = AnonymousCredentials()
                kwargs["project"] = project or "wharf"
        self.client = storage.Client(**kwargs)
        self.bucket = self.client.bucket(bucket)

    def head(self, key: str) -> int | None:
        blob = self.bucket.get_blob(key)
        return None if blob is None else int(blob.size or 0)

    def read(self, key: str, offset: int) -> BinaryIO:
        from google.cloud.storage.fileio import BlobReader

        blob = self.bucket.get_blob(key)
        if blob is None:
            raise FileNotFoundError(key)
        reader = BlobReader(blob, chunk_size=CHUNK)
        if offset:
            reader.seek(offset)
        return reader  # type: ignore[return-value]

    def put(self, key: str) -> _ResumableWriter:
        return _ResumableWriter(self.bucket.blob(key))

    def append(self, key: str, offset: int) -> _ResumableWriter:
        raise NotImplementedError("GCS objects cannot be appended to")

    def compose(self, dst: str, sources: list[tuple[str, int]]) -> None:
        """Compose in rounds of at most 32 sources; intermediate objects are removed."""
        keys = [key for key, _ in sources]
        temporary: list[str] = []
        round_no = 0
        try:
            while len(keys) > MAX_COMPOSE:
                grouped = []
                for i in range(0, len(keys), MAX_COMPOSE):
                    name = f"{dst}.compose/{round_no:04d}-{i // MAX_COMPOSE:06d}"
                    self._compose_one(name, keys[i : i + MAX_COMPOSE])
                    temporary.append(name)
                    grouped.append(name)
                keys, round_no = grouped, round_no + 1
            self._compose_one(dst, keys)
        finally:
            self.delete(temporary)

    def _compose_one(self, dst: str, keys: list[str]) -> None:
        target = self.bucket.blob(dst)
        target.content_type = "application/octet-stream"
        target.compose([self.bucket.blob(k) for k in keys])

    def copy(self, src: str, dst: str) -> None:
        from google.api_core.exceptions import NotFound

        target = self.bucket.blob(dst)
        token = None
        try:
            while True:  # rewrite copies big objects in several calls
                token, _, _ = target.rewrite(self.bucket.blob(src), token=token)
                if token is None:
                    return
        except NotFound:
            raise FileNotFoundError(src) from None

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for blob in self.client.list_blobs(self.bucket, prefix=prefix):
            yield blob.name, int(blob.size or 0)

    def delete(self, keys: list[str]) -> None:
        from google.api_core.exceptions import NotFound

        for key in keys:
            with contextlib.suppress(NotFound):
                self.bucket.delete_blob(key)

    def abort_incomplete(self, prefix: str) -> None:
        pass  # resumable sessions that are never finished expire by themselves

    def failure(self, error: Exception) -> str | None:
        import requests
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        where = f"GCS bucket {self.bucket.name}"
        if isinstance(error, api.NotFound):
            # A missing object is handled where it can happen; one that escapes is the bucket
            # gone, unless the bucket is there (then it is ours).
            try:
                gone = not self.bucket.exists()
            except Exception:
                gone = False
            return f"{where} does not exist" if gone else None
        failing = (api.ServerError, api.TooManyRequests, api.Unauthorized, api.Forbidden)
        if isinstance(error, failing):
            return f"{where}: {error.code}: {error.message}"
        unreachable = (
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
            auth.TransportError,
            auth.RefreshError,
            auth.DefaultCredentialsError,
        )
        if isinstance(error, unreachable):
            return f"{where}: {error}"
        return None

    def presign(self, key: str, expires: int) -> str:
        return str(
            self.bucket.blob(key).generate_signed_url(
                version="v4", expiration=timedelta(seconds=expires), method="GET"
            )
        )


class _ResumableWriter:
    """A resumable upload: chunks go out as they fill, the object appears on commit."""

    def __init__(self, blob: Any) -> None:
        from google.cloud.storage.fileio import BlobWriter

        blob.content_type = "application/octet-stream"
        self.writer = BlobWriter(
            blob, chunk_size=CHUNK, ignore_flush=True, content_type="application/octet-stream"
        )

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    def commit(self) -> None:
        self.writer.close()

    close = commit

    def abort(self) -> None:
        # A resumable session that is never finished leaves no object (GCS expires it).
        # Close the writer's buffer first: closing (or collecting) the writer itself would
        # upload the rest and finish the object.
        self.writer._buffer.close()
