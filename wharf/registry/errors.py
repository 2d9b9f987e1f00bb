"""Every error the registry API can answer, one class per spec error code.

The body format is the OCI Distribution Spec's: {"errors": [{"code", "message", "detail"}]}.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from wharf.faults import RETRY_AFTER, Fault


class RegistryError(Exception):
    """An error answered to the client in the spec's JSON error format."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    message: ClassVar[str] = "unknown error"

    def __init__(
        self,
        detail: Any = None,
        *,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.detail = detail
        self.headers = headers or {}
        if message:
            self.message = message  # type: ignore[misc]

    def body(self) -> bytes:
        entry: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            entry["detail"] = self.detail
        return json.dumps({"errors": [entry]}).encode()


class BlobUnknown(RegistryError):
    code, status, message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code, status, message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class BlobUploadUnknown(RegistryError):
    code, status, message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class RangeInvalid(RegistryError):
    # The spec answers out-of-order chunks with 416 and the upload's current Range.
    code, status, message = "BLOB_UPLOAD_INVALID", 416, "requested range not satisfiable"


class DigestInvalid(RegistryError):
    code, status, message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code, status, message = (
        "MANIFEST_BLOB_UNKNOWN",
        400,
        "manifest references a blob unknown to registry",
    )


class ManifestInvalid(RegistryError):
    code, status, message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestUnknown(RegistryError):
    code, status, message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class NameInvalid(RegistryError):
    code, status, message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(RegistryError):
    code, status, message = "SIZE_INVALID", 400, "provided length did not match content length"


class PayloadTooLarge(RegistryError):
    code, status, message = "SIZE_INVALID", 413, "payload too large"


class TagInvalid(RegistryError):
    # Docker's TAG_INVALID is not among the spec's codes.
    code, status, message = "MANIFEST_INVALID", 400, "invalid tag"


class Unauthorized(RegistryError):
    code, status, message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, status, message = "DENIED", 403, "requested access to the resource is denied"


class MethodNotAllowed(RegistryError):
    code, status, message = "UNSUPPORTED", 405, "method not allowed"


class NotFound(RegistryError):
    code, status, message = "UNSUPPORTED", 404, "no such endpoint"


class InternalError(RegistryError):
    code, status, message = "UNKNOWN", 500, "internal error; the registry's log has the details"


class InsufficientStorage(RegistryError):
    # The spec's codes are for 4xx answers and none names a server that cannot store; this is
    # the reference registry's code for a registry that cannot serve (see docs/api.md).
    code, status, message = "UNAVAILABLE", 507, "the registry's storage is full"


class Unavailable(RegistryError):
    code, status, message = "UNAVAILABLE", 503, "the registry is unavailable; try again later"


def fault_error(fault: Fault) -> RegistryError:
    """The answer to an environmental failure: 507 when nothing more can be stored (full or
    read-only), 503 when what the registry runs on cannot be reached."""
    if fault.kind == "unavailable":
        return Unavailable(message=fault.message, headers={"Retry-After": RETRY_AFTER})
    return InsufficientStorage(message=fault.message)


class TooManyRequests(RegistryError):
    code, status, message = "TOOMANYREQUESTS", 429, "too many failed login attempts"
