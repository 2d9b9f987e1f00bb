"""What every management-API handler needs: the caller's identity, pagination, errors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query, Request
from fastapi.responses import JSONResponse
from pydantic import BeforeValidator

from wharf.auth.identity import Identity
from wharf.auth.service import InvalidCredentials, TooManyAttempts
from wharf.management.errors import NotAuthenticated, ServiceError
from wharf.services import Services


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="Wharf"'}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"code": code, "message": message}]}, status_code=status, headers=headers
    )


def service_error_response(error: ServiceError) -> JSONResponse:
    headers = BASIC_CHALLENGE if isinstance(error, NotAuthenticated) else None
    return error_response(error.status, error.code, error.message, headers)


def services(request: Request) -> Services:
    return request.app.state.services


def client(request: Request) -> str | None:
    return request.client.host if request.client else None


# Where the guard in front of the routes leaves the caller it authenticated (wharf.api.guard).
IDENTITY = "wharf.identity"


def identity(request: Request) -> Identity:
    """The caller, from Basic credentials (password or personal access token).

    Anonymous callers may only read (public repositories): every other method needs a
    signed-in caller, and is refused here, before its parameters are looked at."""
    known = request.scope.get(IDENTITY)
    if known is not None:
        return known
    who = authenticate(services(request), request.headers.get("authorization"), client(request))
    if who.username is None and request.method not in ("GET", "HEAD"):
        raise ApiError(401, "NOT_AUTHENTICATED", "authentication required", BASIC_CHALLENGE)
    return who


def authenticate(svc: Services, header: str | None, client: str | None) -> Identity:
    """The caller of an Authorization header; ANONYMOUS without one. Blocking (argon2).

    Bearer JWTs are registry tokens scoped to repositories; they are not accepted here,
    where they would grant far more than their scope."""
    if header and header.split(" ", 1)[0].lower() == "bearer":
        raise ApiError(
            401,
            "NOT_AUTHENTICATED",
            "use Basic credentials (password or access token) with this API",
            BASIC_CHALLENGE,
        )
    cached = svc.auth.cached(header)
    if cached is not None:
        return cached
    try:
        return svc.auth.authenticate(header, client, bearer=False)
    except InvalidCredentials as e:
        raise ApiError(401, "NOT_AUTHENTICATED", str(e), BASIC_CHALLENGE) from None
    except TooManyAttempts as e:
        raise ApiError(
            429, "TOO_MANY_REQUESTS", str(e), {"Retry-After": str(e.retry_after)}
        ) from None


# Printable ASCII but "%": kept as is in a header value.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_value(value: str) -> str:
    """A record's key as a header value: as it is for every valid name; control characters
    and non-ASCII (a name stored before names were checked whole) percent-encoded as UTF-8,
    since a header cannot carry them."""
    return quote(value, safe=_HEADER_SAFE)


def _iso_time(value: object) -> object:
    # pydantic would also take a number of seconds ("1700000000") for a datetime.
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 time, like 2030-01-31T03:00:00Z") from None
    return value


# The largest id or line number a query may name: the store's integer columns are 32-bit
# (PostgreSQL refuses a larger number outright).
MAX_INT = 2**31 - 1

# A time in a query parameter: ISO 8601 only, as documented (format date-time).
Time = Annotated[datetime, BeforeValidator(_iso_time)]


@dataclass
class Page:
    start: str | None
    size: int


def page(
    pageStart: str | None = Query(
        None, max_length=255, description="Key of the first record of the page"
    ),
    pageSize: int = Query(10, ge=1, le=1000, description="Records per page"),
) -> Page:
    return Page(pageStart, pageSize)


def paged(items: list[dict[str, Any]], p: Page, key: str | Callable[[dict], Any]) -> JSONResponse:
    """Answer one page; services are asked for size+1 records so that the next page's first
    key can go in `X-Next-Page-Start`."""
    headers = {}
    if len(items) > p.size:
        nxt = items[p.size]
        headers["X-Next-Page-Start"] = header_value(str(key(nxt) if callable(key) else nxt[key]))
        items = items[: p.size]
    return JSONResponse(items, headers=headers)
