"""GET /v2/<name>/referrers/<digest> (OCI 1.1), with the artifactType filter."""

from __future__ import annotations

from starlette.responses import Response

from wharf.registry import mediatypes as mt
from wharf.registry.digest import parse_digest
from wharf.registry.handlers.context import Context


async def get(ctx: Context) -> Response:
    subject = parse_digest(ctx.params["digest"])
    artifact_type = ctx.query("artifactType")
    body = await ctx.registry.referrers(ctx.name, subject, artifact_type)
    headers = {"OCI-Filters-Applied": "artifactType"} if artifact_type else {}
    return Response(body, headers=headers, media_type=mt.OCI_INDEX)
