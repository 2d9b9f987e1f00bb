"""Every route of the registry API, with the access each method needs: the one place for both.

Authorisation is enforced by the dispatcher from this table before any handler runs, so no
handler can forget it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from wharf.auth.access import DELETE, PULL, PUSH
from wharf.registry.handlers import blobs, manifests, referrers, tags, uploads
from wharf.registry.handlers.context import Context, json_response

# Access a route needs that is not about one repository.
LOGIN = "login"  # any authenticated caller
CATALOG = "catalog"  # listing all repositories

Handler = Callable[[Context], Awaitable[Any]]


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    methods: dict[str, tuple[Handler, str]]


async def _base(ctx: Context) -> Any:
    return json_response(b"{}")


def _route(pattern: str, **methods: tuple[Handler, str]) -> Route:
    # DOTALL: a name holding a newline reaches validate_name (NAME_INVALID), not "no route".
    return Route(re.compile(pattern, re.DOTALL), methods)


_NAME = r"(?P<name>.+)"

ROUTES: tuple[Route, ...] = (
    _route(r"^/v2/?$", GET=(_base, LOGIN), HEAD=(_base, LOGIN)),
    _route(r"^/v2/_catalog$", GET=(tags.catalog, CATALOG)),
    _route(rf"^/v2/{_NAME}/tags/list$", GET=(tags.list_tags, PULL)),
    _route(
        rf"^/v2/{_NAME}/manifests/(?P<reference>[^/]+)$",
        GET=(manifests.get, PULL),
        HEAD=(manifests.get, PULL),
        PUT=(manifests.put, PUSH),
        DELETE=(manifests.delete, DELETE),
    ),
    _route(rf"^/v2/{_NAME}/blobs/uploads/?$", POST=(uploads.start, PUSH)),
    _route(
        rf"^/v2/{_NAME}/blobs/uploads/(?P<upload_id>[^/]+)$",
        GET=(uploads.status, PUSH),
        PATCH=(uploads.patch, PUSH),
        PUT=(uploads.finish, PUSH),
        DELETE=(uploads.cancel, PUSH),
    ),
    _route(
        rf"^/v2/{_NAME}/blobs/(?P<digest>[^/]+)$",
        GET=(blobs.get, PULL),
        HEAD=(blobs.get, PULL),
        DELETE=(blobs.delete, DELETE),
    ),
    _route(rf"^/v2/{_NAME}/referrers/(?P<digest>[^/]+)$", GET=(referrers.get, PULL)),
)


def match(path: str) -> tuple[Route, dict[str, str]] | None:
    for route in ROUTES:
        m = route.pattern.fullmatch(path)
        if m:
            return route, m.groupdict()
    return None
