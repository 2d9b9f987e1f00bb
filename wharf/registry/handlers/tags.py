"""GET /v2/<name>/tags/list and GET /v2/_catalog, paginated with n/last and Link."""

from __future__ import annotations

import json

from starlette.responses import Response

from wharf.registry.handlers.context import Context, json_response, link_next


async def list_tags(ctx: Context) -> Response:
    n, last = ctx.pagination()
    tags = await ctx.registry.list_tags(ctx.name, n + 1 if n else 0, last)
    headers = {}
    if n and len(tags) > n:
        tags = tags[:n]
        headers["Link"] = link_next(f"/v2/{ctx.name}/tags/list", n, tags[-1])
    return json_response(json.dumps({"name": ctx.name, "tags": tags}).encode(), headers)


async def catalog(ctx: Context) -> Response:
    n, last = ctx.pagination()
    found = await ctx.registry.run_read(ctx.access.readable, ctx.identity, last, n + 1 if n else 0)
    names = [name for name, _ in found]
    headers = {}
    if n and len(names) > n:
        names = names[:n]
        headers["Link"] = link_next("/v2/_catalog", n, names[-1])
    return json_response(json.dumps({"repositories": names}).encode(), headers)
