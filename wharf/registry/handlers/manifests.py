"""GET, HEAD, PUT and DELETE /v2/<name>/manifests/<reference>."""

from __future__ import annotations

import json

from starlette.responses import Response

from wharf.registry import mediatypes as mt
from wharf.registry.errors import ManifestUnknown, PayloadTooLarge
from wharf.registry.handlers.context import Context, empty
from wharf.registry.service import MAX_MANIFEST_SIZE, StoredManifest


async def get(ctx: Context) -> Response:
    reference = ctx.params["reference"]
    manifest = await ctx.registry.get_manifest(ctx.name, reference)
    # Go clients send one Accept line per media type: all lines count.
    accepted = _accepted_types(", ".join(ctx.request.headers.getlist("accept")))
    # Content fetched by digest is that content, whatever the client accepts.
    if accepted and manifest.media_type not in accepted and ":" not in reference:
        manifest = await _negotiate(ctx, manifest, accepted, reference)
    # By digest, answer with the digest asked for (it may be the sha512 of the content).
    digest = reference if ":" in reference else manifest.digest
    headers = {
        "Docker-Content-Digest": digest,
        "ETag": f'"{digest}"',
        "Content-Type": manifest.media_type,
        "Content-Length": str(len(manifest.content)),
    }
    if ctx.request.method == "HEAD":
        return Response(b"", headers=headers)
    return Response(manifest.content, headers=headers)


def _accepted_types(accept: str | None) -> set[str]:
    """Manifest types in an Accept header; empty when it names none (then anything goes)."""
    if not accept:
        return set()
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "*/*" in types or "application/*" in types:
        return set()
    return types & (mt.MANIFEST_TYPES | mt.SCHEMA1)


async def _negotiate(
    ctx: Context, manifest: StoredManifest, accepted: set[str], reference: str
) -> StoredManifest:
    # Docker's habit: a client that cannot read a manifest list gets the linux/amd64 image.
    if manifest.media_type in mt.INDEXES:
        for child in json.loads(manifest.content).get("manifests", []):
            platform = child.get("platform")
            if not isinstance(platform, dict):
                continue  # not validated at push: any JSON
            if (
                platform.get("os") == "linux"
                and platform.get("architecture") == "amd64"
                and child.get("mediaType") in accepted
            ):
                return await ctx.registry.get_manifest(ctx.name, child["digest"])
    raise ManifestUnknown(
        {"reference": reference, "mediaType": manifest.media_type},
        message="manifest is not available in any media type the client accepts",
    )


async def put(ctx: Context) -> Response:
    length = ctx.content_length()
    if length is not None and length > MAX_MANIFEST_SIZE:
        raise PayloadTooLarge(f"manifests are limited to {MAX_MANIFEST_SIZE} bytes")
    body = bytearray()
    async for chunk in ctx.body():
        body += chunk
        if len(body) > MAX_MANIFEST_SIZE:
            raise PayloadTooLarge(f"manifests are limited to {MAX_MANIFEST_SIZE} bytes")
    pushed = await ctx.registry.put_manifest(
        ctx.name,
        ctx.params["reference"],
        bytes(body),
        ctx.header("content-type"),
        extra_tags=ctx.request.query_params.getlist("tag"),
        author=ctx.identity.username,
    )
    headers = {
        "Location": f"/v2/{ctx.name}/manifests/{pushed.digest}",
        "Docker-Content-Digest": pushed.digest,
    }
    if pushed.subject:
        headers["OCI-Subject"] = pushed.subject
    if ":" in ctx.params["reference"] and pushed.tags:
        headers["OCI-Tag"] = ", ".join(pushed.tags)  # the ?tag= parameters applied
    return empty(201, headers)


async def delete(ctx: Context) -> Response:
    await ctx.registry.delete_manifest(ctx.name, ctx.params["reference"])
    return empty(202, {})
