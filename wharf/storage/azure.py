"""Azure Blob Storage through azure-storage-blob.

`az://CONTAINER/PREFIX?account=NAME&endpoint=...&redirect=true`. Credentials from the
environment: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_KEY (the account key), or
AZURE_STORAGE_SAS_TOKEN. The endpoint defaults to https://NAME.blob.core.windows.net.

Uploads grow one block blob: a writer stages blocks and commits the blocks it keeps plus its
own, so nothing already sent is copied again. Block ids encode the writer's offset, all of the
same length as Azure requires.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

from wharf.storage.base import StorageError
from wharf.storage.objectstore import StreamReader

BLOCK = 8 << 20
READ_CHUNK = 1 << 20


class AzureBucket:
    min_part = 0
    appendable = True

    def __init__(self, container: str, *, account: str, endpoint: str | None = None) -> None:
        from azure.storage.blob import BlobServiceClient

        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        self.account = account
        self.key = os.environ.get("AZURE_STORAGE_KEY")
        if conn:
            service = BlobServiceClient.from_connection_string(conn)
        else:
            credential: Any = self.key or os.environ.get("AZURE_STORAGE_SAS_TOKEN")
            if not credential:
                raise ValueError(
                    "Azure storage needs credentials: set AZURE_STORAGE_KEY (the account key), "
                    "AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING"
                )
            if self.key:
                credential = {"account_name": account, "account_key": self.key}
            url = endpoint or f"https://{account}.blob.core.windows.net"
            service = BlobServiceClient(account_url=url, credential=credential)
        self.container = service.get_container_client(container)
        # The SDK logs every request and response at INFO, a dozen lines each: not for the
        # registry's log.
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(
            logging.WARNING
        )

    def _blob(self, key: str) -> Any:
        return self.container.get_blob_client(key)

    def head(self, key: str) -> int | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return int(self._blob(key).get_blob_properties().size)
        except ResourceNotFoundError as e:
            if _container_gone(e):
                raise
            return None

    def read(self, key: str, offset: int) -> BinaryIO:
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        try:
            stream = self._blob(key).download_blob(offset=offset or None, max_concurrency=1)
        except ResourceNotFoundError as e:
            if _container_gone(e):
                raise
            raise FileNotFoundError(key) from None
        except HttpResponseError as e:
            if e.status_code == 416:  # reading from the very end
                return StreamReader(iter(()))  # type: ignore[return-value]
            raise
        return StreamReader(stream.chunks())  # type: ignore[return-value]

    def put(self, key: str) -> _BlockWriter:
        return _BlockWriter(self._blob(key), 0, [])

    def append(self, key: str, offset: int) -> _BlockWriter:
        from azure.core.exceptions import ResourceNotFoundError

        blob = self._blob(key)
        try:
            committed, _ = blob.get_block_list("committed")
        except ResourceNotFoundError as e:
            if _container_gone(e):
                raise
            committed = []
        kept: list[str] = []
        at = 0
        carry = None  # (start, length) of a block cut short by offset
        for block in committed:
            if at + block.size <= offset:
                kept.append(block.id)
                at += block.size
            else:
                if at < offset:
                    carry = (at, offset - at)
                break
        if at + (carry[1] if carry else 0) < offset:
            raise ValueError(f"cannot write at {offset}: the object is shorter")
        writer = _BlockWriter(blob, at, kept)
        if carry is not None:
            start, length = carry
            stream = blob.download_blob(offset=start, length=length, max_concurrency=1)
            for chunk in stream.chunks():
                writer.write(chunk)
        return writer

    def compose(self, dst: str, sources: list[tuple[str, int]]) -> None:
        raise NotImplementedError("Azure uploads are appended to, never composed")

    def copy(self, src: str, dst: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        target = self._blob(dst)
        try:
            target.start_copy_from_url(self._blob(src).url)
        except ResourceNotFoundError as e:
            if _container_gone(e):
                raise
            raise FileNotFoundError(src) from None
        delay = 0.05
        while True:  # within one account copies usually finish at once
            status = target.get_blob_properties().copy.status
            if status == "success":
                return
            if status != "pending":
                raise StorageError(f"Azure copy of {src} to {dst} ended {status}")
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        for item in self.container.list_blobs(name_starts_with=prefix):
            yield item.name, int(item.size or 0)

    def delete(self, keys: list[str]) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        for key in keys:
            with contextlib.suppress(ResourceNotFoundError):
                self._blob(key).delete_blob()

    def abort_incomplete(self, prefix: str) -> None:
        pass  # uncommitted blocks are discarded by the next commit, or after a week

    def failure(self, error: Exception) -> str | None:
        from azure.core import exceptions as e

        where = f"Azure container {self.container.container_name}"
        if isinstance(error, (e.ServiceRequestError, e.ServiceResponseError)):
            return f"{where}: {error}"
        if isinstance(error, e.HttpResponseError):
            status = error.status_code or 0
            if status >= 500 or status in (401, 403, 429) or _container_gone(error):
                return f"{where}: {error.error_code or status}: {error.reason}"
        return None

    def presign(self, key: str, expires: int) -> str:
        from azure.storage.blob import BlobSasPermissions, generate_blob_sas

        if not self.key:
            raise ValueError("redirects to Azure need the account key (AZURE_STORAGE_KEY)")
        sas = generate_blob_sas(
            account_name=self.account,
            container_name=self.container.container_name,
            blob_name=key,
            account_key=self.key,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(UTC) + timedelta(seconds=expires),
        )
        return f"{self._blob(key).url}?{sas}"


def _container_gone(error: Exception) -> bool:
    """A "not found" about the container, not an object: storage is gone, not a blob."""
    return getattr(error, "error_code", None) == "ContainerNotFound"


class _BlockWriter:
    """Stages blocks of at most BLOCK bytes; commit writes the block list (kept + new)."""

    def __init__(self, blob: Any, offset: int, kept: list[str]) -> None:
        self.blob, self.offset, self.kept = blob, offset, kept
        self.buffer = bytearray()
        self.staged: list[str] = []

    def _block_id(self) -> str:
        raw = f"{self.offset:020d}-{len(self.staged):08d}".encode()
        return base64.b64encode(raw).decode()

    def _stage(self, data: bytes) -> None:
        block_id = self._block_id()
        self.blob.stage_block(block_id, data)
        self.staged.append(block_id)

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= BLOCK:
            self._stage(bytes(self.buffer[:BLOCK]))
            del self.buffer[:BLOCK]

    def commit(self) -> None:
        from azure.storage.blob import BlobBlock, BlockState

        if self.buffer:
            self._stage(bytes(self.buffer))
            self.buffer = bytearray()
        blocks = [BlobBlock(block_id=b, state=BlockState.COMMITTED) for b in self.kept]
        blocks += [BlobBlock(block_id=b, state=BlockState.UNCOMMITTED) for b in self.staged]
        self.blob.commit_block_list(blocks)

    close = commit

    def abort(self) -> None:
        # Uncommitted blocks are dropped by Azure at the next commit (or after a week).
        self.buffer = bytearray()
        self.staged = []
