"""Blob uploads: POST /v2/<name>/blobs/uploads/ and GET/PATCH/PUT/DELETE .../uploads/<id>."""

from __future__ import annotations

from starlette.responses import Response

from wharf.auth.access import PULL
from wharf.registry.digest import parse_digest
from wharf.registry.errors import DigestInvalid, RegistryError
from wharf.registry.handlers.context import Context, empty
from wharf.registry.names import validate_name


def _upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
    }


def _blob_created(name: str, digest: str) -> Response:
    return empty(201, {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest})


async def start(ctx: Context) -> Response:
    mount, source = ctx.query("mount"), ctx.query("from")
    if mount and await _mountable(ctx, mount, source):
        return _blob_created(ctx.name, mount)
    # Not mountable (unknown blob, no access, malformed arguments): a regular upload instead,
    # as the spec asks.
    raw_digest = ctx.query("digest")
    if raw_digest is not None:
        digest = parse_digest(raw_digest)
        blob = await ctx.registry.put_blob(ctx.name, digest, ctx.body(), ctx.content_length())
        return _blob_created(ctx.name, str(blob.digest))
    upload = await ctx.registry.start_upload(ctx.name)
    size = 0
    if ctx.has_body():
        size = await ctx.registry.append(ctx.name, upload.id, ctx.body())
    return empty(202, _upload_headers(ctx.name, upload.id, size))


async def _mountable(ctx: Context, mount: str, source: str | None) -> bool:
    try:
        digest = parse_digest(mount)
        if source is not None:
            validate_name(source)
    except RegistryError:
        return False
    # Mounting needs read access to the source; without `from`, only an admin may have the
    # registry find the blob in any repository.
    if not (ctx.identity.is_admin if source is None else await ctx.may(source, PULL)):
        return False
    return await ctx.registry.mount_blob(ctx.name, digest, source)


async def status(ctx: Context) -> Response:
    upload = await ctx.registry.get_upload(ctx.name, ctx.params["upload_id"])
    return empty(204, _upload_headers(ctx.name, upload.id, upload.size))


async def patch(ctx: Context) -> Response:
    upload_id = ctx.params["upload_id"]
    content_range = ctx.content_range()
    start, length = content_range if content_range else (None, ctx.content_length())
    size = await ctx.registry.append(ctx.name, upload_id, ctx.body(), start=start, length=length)
    return empty(202, _upload_headers(ctx.name, upload_id, size))


async def finish(ctx: Context) -> Response:
    upload_id = ctx.params["upload_id"]
    raw_digest = ctx.query("digest")
    if not raw_digest:
        raise DigestInvalid(message="the digest query parameter is required to finish an upload")
    digest = parse_digest(raw_digest)
    content_range = ctx.content_range()
    start, length = content_range if content_range else (None, ctx.content_length())
    body = ctx.body() if ctx.has_body() else None
    blob = await ctx.registry.complete_upload(
        ctx.name, upload_id, digest, body, start=start, length=length
    )
    return _blob_created(ctx.name, str(blob.digest))


async def cancel(ctx: Context) -> Response:
    await ctx.registry.cancel_upload(ctx.name, ctx.params["upload_id"])
    return empty(204, {})
