"""In front of every route of the management API: a request with a body is authenticated
before a byte of the body is read, and its body is read whole only up to a limit.

Every operation that takes a body needs a signed-in caller, so an anonymous body is refused
unread (401); a body past the limit is refused (413) as soon as that is known, from
Content-Length or while counting a chunked one. Then the routes get the body from memory
and the caller already authenticated (`deps.IDENTITY`)."""

from __future__ import annotations

from anyio import to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from wharf.api.deps import BASIC_CHALLENGE, IDENTITY, ApiError, authenticate, error_response
from wharf.bodies import BodyTooLarge, ClientDisconnect, has_body, read_body, replay
from wharf.services import Services

# JSON bodies. The largest valid one is a repository's with a long description of 100,000
# characters, each of which a client may send as a 12-byte escape (an emoji as a surrogate
# pair, "\\ud83d\\ude00"): 1.2 MB.
MAX_BODY = 2 << 20


class BodyGuard:
    def __init__(self, app: ASGIApp, services: Services, limit: int = MAX_BODY) -> None:
        self.app = app
        self.services = services
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = request.client.host if request.client else None
        header = request.headers.get("authorization")
        try:
            who = await to_thread.run_sync(authenticate, self.services, header, host)
            if who.username is None:
                raise ApiError(401, "NOT_AUTHENTICATED", "authentication required", BASIC_CHALLENGE)
            body = await read_body(scope, receive, self.limit)
        except ApiError as e:
            response = error_response(e.status, e.code, e.message, e.headers)
        except BodyTooLarge as e:
            response = error_response(413, "REQUEST_TOO_LARGE", str(e))
        except ClientDisconnect:
            return
        else:
            scope[IDENTITY] = who
            await self.app(scope, replay(body, receive), send)
            return
        await response(scope, receive, send)
