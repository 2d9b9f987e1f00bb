"""What every handler receives, and helpers shared by the handlers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from wharf.auth.access import PULL, AccessService
from wharf.auth.identity import Identity
from wharf.registry.errors import BlobUploadInvalid, RangeInvalid, RegistryError
from wharf.registry.manifest import MAX_SIZE
from wharf.registry.service import RegistryService

# ASCII digits only, matched whole: `\d` and str.isdigit() accept "²" or "٣", which int()
# refuses or reads; `$` accepts a trailing newline.
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?([0-9]+)-([0-9]+)(?:/(?:[0-9]+|\*))?")
_DIGITS = re.compile(r"[0-9]+")
MAX_PAGE = 10_000


def number(value: str) -> int | None:
    """A decimal of ASCII digits, None when it is not one; values past MAX_SIZE (even of
    thousands of digits, which int() refuses) are MAX_SIZE + 1, for the caller to refuse or
    clamp."""
    if not _DIGITS.fullmatch(value):
        return None
    return int(value) if len(value) <= 19 else MAX_SIZE + 1


@dataclass(slots=True)
class Context:
    request: Request
    params: dict[str, str]
    registry: RegistryService
    access: AccessService
    identity: Identity

    @property
    def name(self) -> str:
        return self.params["name"]

    async def may(self, repository: str, action: str) -> bool:
        """Whether the caller may perform `action` on `repository` (for a bearer token: only
        if the token also lists it)."""
        if not self.identity.token_allows("repository", repository, action):
            return False
        if self.identity.is_admin and action == PULL:
            return True
        decision = await self.registry.run_read(self.access.decide, self.identity, repository)
        return action in decision.actions

    def query(self, key: str) -> str | None:
        return self.request.query_params.get(key)

    def header(self, key: str) -> str | None:
        return self.request.headers.get(key)

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.request.stream():
                yield chunk
        except ClientDisconnect:
            raise BlobUploadInvalid("client disconnected before the body was complete") from None

    def content_length(self) -> int | None:
        value = self.header("content-length")
        if value is None:
            return None
        length = number(value.strip())
        if length is None or length > MAX_SIZE:
            raise BlobUploadInvalid("invalid Content-Length")
        return length

    def has_body(self) -> bool:
        length = self.content_length()
        return bool(length) or "chunked" in (self.header("transfer-encoding") or "").lower()

    def content_range(self) -> tuple[int, int] | None:
        """(start, length) from a Content-Range header, checked against Content-Length."""
        value = self.header("content-range")
        if value is None:
            return None
        m = _CONTENT_RANGE.fullmatch(value.strip())
        if not m:
            raise RangeInvalid(f"invalid Content-Range {value!r}")
        start, end = number(m.group(1)), number(m.group(2))
        assert start is not None and end is not None
        if end < start or end > MAX_SIZE:
            raise RangeInvalid(f"invalid Content-Range {value!r}")
        length = end - start + 1
        declared = self.content_length()
        if declared is not None and declared != length:
            raise RangeInvalid("Content-Range does not match Content-Length")
        return start, length

    def pagination(self) -> tuple[int, str | None]:
        """(n, last) of a paginated list; n is capped so that a page stays bounded."""
        raw_n, last = self.query("n"), self.query("last")
        if raw_n is None or raw_n == "":
            return MAX_PAGE, last
        n = number(raw_n)
        if n is None:
            raise PaginationInvalid(raw_n)
        return min(n, MAX_PAGE), last


class PaginationInvalid(RegistryError):
    code, status, message = "UNSUPPORTED", 400, "invalid number of results requested"


def link_next(path: str, n: int, last: str) -> str:
    return f'<{path}?n={n}&last={quote(last, safe="")}>; rel="next"'


def empty(status: int, headers: dict[str, str]) -> Response:
    headers.setdefault("Content-Length", "0")
    return Response(b"", status_code=status, headers=headers)


def json_response(
    body: bytes, headers: dict[str, str] | None = None, status: int = 200
) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")
