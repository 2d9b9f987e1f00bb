"""The registry API as an ASGI application: routing, authorisation, errors."""

from __future__ import annotations

import asyncio
import logging

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from wharf.auth.service import ALL_ACTIONS, AuthService, Identity, InvalidCredentials
from wharf.registry import routes
from wharf.registry.errors import (
    Denied,
    InternalError,
    MethodNotAllowed,
    NotFound,
    RegistryError,
    Unauthorized,
)
from wharf.registry.handlers.context import Context
from wharf.registry.names import validate_name
from wharf.registry.service import RegistryService

log = logging.getLogger("wharf.registry")

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


class RegistryApp:
    def __init__(self, registry: RegistryService, auth: AuthService, realm: str = "Wharf") -> None:
        self.registry = registry
        self.auth = auth
        self.challenge = f'Basic realm="{realm}"'
        self._verifying: dict[str, asyncio.Future[Identity]] = {}
        self._verify_slots = asyncio.Semaphore(2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_version(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), API_VERSION_HEADER]
            await send(message)

        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except RegistryError as error:
            response = self._error(error)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            response = self._error(InternalError())
        try:
            await response(scope, receive, send_with_version)
        except RegistryError as error:  # raised by a streaming response before it started
            await self._error(error)(scope, receive, send_with_version)

    async def _dispatch(self, request: Request) -> Response:
        path = request.scope["path"]
        found = routes.match(path)
        if found is None:
            raise NotFound(path)
        route, params = found
        method = request.method
        if method not in route.methods:
            raise MethodNotAllowed(method, headers={"Allow": ", ".join(route.methods)})
        handler, access = route.methods[method]
        identity = await self._identity(request)
        if "name" in params:
            validate_name(params["name"])
        ctx = Context(request, params, self.registry, self.auth, identity)
        await self._authorize(ctx, access)
        return await handler(ctx)

    async def _identity(self, request: Request) -> Identity:
        header = request.headers.get("authorization")
        identity = self.auth.cached(header)
        if identity is not None:
            return identity
        assert header is not None
        # Single flight: a client opening many connections at once costs one password check.
        pending = self._verifying.get(header)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(header))
            self._verifying[header] = pending
            pending.add_done_callback(lambda _: self._verifying.pop(header, None))
        try:
            return await asyncio.shield(pending)
        except InvalidCredentials as e:
            raise Unauthorized(str(e), headers={"WWW-Authenticate": self.challenge}) from None

    async def _verify(self, header: str) -> Identity:
        async with self._verify_slots:  # bounds the memory argon2 takes under a login burst
            return await to_thread.run_sync(self.auth.authenticate, header)

    async def _authorize(self, ctx: Context, access: str) -> None:
        identity = ctx.identity
        if identity.is_admin:
            return
        if access == routes.LOGIN:
            allowed = not identity.is_anonymous
        elif access == routes.CATALOG:
            allowed = False  # until access control can filter the list per caller
        elif access in ALL_ACTIONS:
            allowed = await ctx.may(ctx.name, access)
        else:
            raise AssertionError(f"route declares unknown access {access!r}")
        if allowed:
            return
        if identity.is_anonymous:
            raise Unauthorized(headers={"WWW-Authenticate": self.challenge})
        raise Denied()

    @staticmethod
    def _error(error: RegistryError) -> Response:
        headers = dict(error.headers)
        return Response(
            error.body(), status_code=error.status, headers=headers, media_type="application/json"
        )
