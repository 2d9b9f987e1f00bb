"""GET, HEAD and DELETE /v2/<name>/blobs/<digest>."""

from __future__ import annotations

import re

from starlette.types import Receive, Scope, Send

from wharf.registry.digest import parse_digest
from wharf.registry.errors import BlobUnknown, RegistryError
from wharf.registry.handlers.context import Context, empty, number
from wharf.registry.service import READ_CHUNK, BlobInfo, RegistryService, run

_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")  # ASCII digits, matched whole
IGNORE = (0, -1)  # a Range header to ignore: serve the whole blob (RFC 9110 14.2)


class RangeNotSatisfiable(RegistryError):
    code, status, message = "UNSUPPORTED", 416, "requested range not satisfiable"


async def get(ctx: Context) -> BlobResponse:
    digest = parse_digest(ctx.params["digest"])
    blob = await ctx.registry.stat_blob(ctx.name, digest)
    headers = {
        "Docker-Content-Digest": str(digest),
        "ETag": f'"{digest}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "max-age=31536000",
    }
    start, end, status = 0, blob.size - 1, 200
    requested = ctx.header("range")
    parsed = _parse_range(requested, blob.size) if requested else IGNORE
    if parsed is not IGNORE:
        if parsed is None:
            raise RangeNotSatisfiable(requested, headers={"Content-Range": f"bytes */{blob.size}"})
        start, end = parsed
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{blob.size}"
    head = ctx.request.method == "HEAD"
    if not head and ctx.registry.redirects:
        # Pulls may go straight to the object store (off by default): the client follows a
        # short-lived pre-signed URL, with its Range header, and the bytes bypass the replica.
        location = await run(ctx.registry.blob_redirect, blob)
        if location:
            return empty(307, {"Location": location, "Docker-Content-Digest": str(digest)})
    return BlobResponse(ctx.registry, blob, start, end, status, headers, head)


async def delete(ctx: Context):  # type: ignore[no-untyped-def]
    await ctx.registry.delete_blob(ctx.name, parse_digest(ctx.params["digest"]))
    return empty(202, {})


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """A single byte range as (start, end inclusive); None if unsatisfiable; IGNORE for what
    the server may ignore (other units, several ranges), answered with the whole blob."""
    value = value.strip()
    if not value.startswith("bytes=") or "," in value:
        return IGNORE
    m = _RANGE.fullmatch(value)
    if not m or (not m.group(1) and not m.group(2)):
        return None
    if not m.group(1):  # suffix range: the last N bytes
        n = _position(m.group(2))
        if n == 0 or size == 0:
            return None
        return max(size - n, 0), size - 1
    start = _position(m.group(1))
    end = _position(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _position(digits: str) -> int:
    # Past any blob's size whatever its length; int() refuses more than 4,300 digits.
    n = number(digits)
    assert n is not None
    return n


class BlobResponse:
    """Streams a byte range of a stored blob without holding it in memory."""

    def __init__(
        self,
        registry: RegistryService,
        blob: BlobInfo,
        start: int,
        end: int,
        status: int,
        headers: dict[str, str],
        head: bool,
    ) -> None:
        self.registry, self.blob, self.start, self.end = registry, blob, start, end
        self.status, self.headers, self.head = status, headers, head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = max(self.end - self.start + 1, 0)
        file = None
        if not self.head and length:
            try:
                file = await run(self.registry.open_blob, self.blob, self.start)
            except FileNotFoundError:
                raise BlobUnknown(str(self.blob.digest)) from None
        headers = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
        headers.append((b"content-length", str(length).encode()))
        headers.append((b"content-type", b"application/octet-stream"))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        if file is None:
            await send({"type": "http.response.body", "body": b""})
            return
        try:
            remaining = length
            while remaining > 0:
                chunk = await run(file.read, min(READ_CHUNK, remaining))
                if not chunk:
                    raise RuntimeError(f"blob {self.blob.digest} is shorter than recorded")
                remaining -= len(chunk)
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": remaining > 0}
                )
        finally:
            await run(file.close)
