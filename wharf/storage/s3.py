"""Amazon S3 and S3-compatible stores (MinIO, Ceph RGW, ...) through boto3.

`s3://BUCKET/PREFIX?region=...&endpoint=...&path_style=true&profile=NAME&sse=AES256|aws:kms
&kms_key_id=...&redirect=true`. Credentials come from boto3's usual chain: the environment
(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN), the named profile, the instance
role. They are never part of the URL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from wharf.storage.base import StorageError
from wharf.storage.objectstore import StreamReader

MIN_PART = 5 << 20  # S3's smallest part but the last
MAX_COPY_PART = 5 << 30  # S3's largest UploadPartCopy / CopyObject source
READ_CHUNK = 1 << 20


class S3Bucket:
    min_part = MIN_PART
    appendable = False

    def __init__(
        self,
        bucket: str,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        path_style: bool = False,
        profile: str | None = None,
        sse: str | None = None,
        kms_key_id: str | None = None,
        part_size: int = 8 << 20,
    ) -> None:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=profile)
        # AWS's own AWS_MAX_ATTEMPTS overrides the default (with which an unreachable endpoint
        # is reported after several seconds of backoff).
        attempts = int(os.environ.get("AWS_MAX_ATTEMPTS", 5))
        config = Config(
            s3={"addressing_style": "path" if path_style else "auto"},
            retries={"max_attempts": attempts, "mode": "standard"},
            max_pool_connections=32,
            signature_version="s3v4",
        )
        self.client = session.client("s3", region_name=region, endpoint_url=endpoint, config=config)
        self.bucket = bucket
        self.part_size = max(part_size, MIN_PART)
        self.encryption: dict[str, str] = {}
        if sse:
            self.encryption["ServerSideEncryption"] = sse
        if kms_key_id:
            self.encryption["SSEKMSKeyId"] = kms_key_id

    def _missing(self, e: Exception) -> bool:
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "")
        return code in ("404", "NoSuchKey", "NotFound")

    def head(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except ClientError as e:
            if self._missing(e):
                return None
            raise

    def read(self, key: str, offset: int) -> BinaryIO:
        from botocore.exceptions import ClientError

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
        try:
            body = self.client.get_object(**kwargs)["Body"]
        except ClientError as e:
            if self._missing(e):
                raise FileNotFoundError(key) from None
            if e.response.get("Error", {}).get("Code") == "InvalidRange":
                return StreamReader(iter(()))  # reading from the very end
            raise
        return StreamReader(body.iter_chunks(READ_CHUNK), body)  # type: ignore[return-value]

    def put(self, key: str) -> _MultipartWriter:
        return _MultipartWriter(self, key)

    def append(self, key: str, offset: int) -> _MultipartWriter:
        raise NotImplementedError("S3 objects cannot be appended to")

    def compose(self, dst: str, sources: list[tuple[str, int]]) -> None:
        """One multipart upload whose parts are server-side copies of the sources."""
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=dst, **self.encryption
        )["UploadId"]
        parts = []
        try:
            for key, size in sources:
                for start in range(0, max(size, 1), MAX_COPY_PART):
                    end = min(start + MAX_COPY_PART, size) - 1
                    extra = {"CopySourceRange": f"bytes={start}-{end}"} if size else {}
                    result = self.client.upload_part_copy(
                        Bucket=self.bucket,
                        Key=dst,
                        UploadId=upload,
                        PartNumber=len(parts) + 1,
                        CopySource={"Bucket": self.bucket, "Key": key},
                        **extra,
                    )
                    etag = result["CopyPartResult"]["ETag"]
                    parts.append({"PartNumber": len(parts) + 1, "ETag": etag})
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=dst, UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=dst, UploadId=upload)
            raise

    def copy(self, src: str, dst: str) -> None:
        size = self.head(src)
        if size is None:
            raise FileNotFoundError(src)
        if size > MAX_COPY_PART:
            self.compose(dst, [(src, size)])
            return
        self.client.copy_object(
            Bucket=self.bucket,
            Key=dst,
            CopySource={"Bucket": self.bucket, "Key": src},
            **self.encryption,
        )

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item["Size"])

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            result = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            errors = result.get("Errors") or []
            if errors:
                first = errors[0]
                key, message = first.get("Key"), first.get("Message")
                raise StorageError(f"S3 bucket {self.bucket}: delete of {key} failed: {message}")

    def abort_incomplete(self, prefix: str) -> None:
        """Abort multipart uploads left under prefix by writers that died (a killed replica):
        S3 keeps, and bills, their parts until they are aborted."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for upload in page.get("Uploads", []):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )

    def failure(self, error: Exception) -> str | None:
        from botocore import exceptions as e

        where = f"S3 bucket {self.bucket}"
        if isinstance(error, e.ClientError):
            details = error.response.get("Error", {})
            code = details.get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            # The store erring, throttling, refusing our credentials, or the bucket gone; a
            # 4xx about the request itself is ours.
            if status >= 500 or status in (401, 403, 429) or code in ("NoSuchBucket", "SlowDown"):
                return f"{where}: {code or status}: {details.get('Message', '')}"
            return None
        unreachable = (
            e.ConnectionError,
            e.HTTPClientError,
            e.ResponseStreamingError,
            e.NoCredentialsError,
            e.PartialCredentialsError,
            e.CredentialRetrievalError,
        )
        if isinstance(error, unreachable):
            return f"{where}: {error}"
        return None

    def presign(self, key: str, expires: int) -> str:
        return str(
            self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
            )
        )


class _MultipartWriter:
    """Streams an object: a single PUT when it is small, a multipart upload otherwise. At most
    one part is buffered."""

    def __init__(self, bucket: S3Bucket, key: str) -> None:
        self.s3, self.key = bucket, key
        self.buffer = bytearray()
        self.upload: str | None = None
        self.parts: list[dict[str, Any]] = []

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= self.s3.part_size:
            part = bytes(self.buffer[: self.s3.part_size])
            del self.buffer[: self.s3.part_size]
            self._upload_part(part)

    def _upload_part(self, data: bytes) -> None:
        client = self.s3.client
        if self.upload is None:
            self.upload = client.create_multipart_upload(
                Bucket=self.s3.bucket, Key=self.key, **self.s3.encryption
            )["UploadId"]
        number = len(self.parts) + 1
        result = client.upload_part(
            Bucket=self.s3.bucket, Key=self.key, UploadId=self.upload, PartNumber=number, Body=data
        )
        self.parts.append({"PartNumber": number, "ETag": result["ETag"]})

    def commit(self) -> None:
        client = self.s3.client
        if self.upload is None:
            client.put_object(
                Bucket=self.s3.bucket, Key=self.key, Body=bytes(self.buffer), **self.s3.encryption
            )
        else:
            if self.buffer:
                self._upload_part(bytes(self.buffer))
            client.complete_multipart_upload(
                Bucket=self.s3.bucket,
                Key=self.key,
                UploadId=self.upload,
                MultipartUpload={"Parts": self.parts},
            )
        self.buffer = bytearray()

    close = commit

    def abort(self) -> None:
        if self.upload is not None:
            self.s3.client.abort_multipart_upload(
                Bucket=self.s3.bucket, Key=self.key, UploadId=self.upload
            )
            self.upload = None
        self.buffer = bytearray()
