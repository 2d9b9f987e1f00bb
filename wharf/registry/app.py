"""The registry API as an ASGI application: routing, authorisation, errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from anyio import to_thread
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from wharf.auth.access import ALL_ACTIONS, PULL, PUSH, AccessService
from wharf.auth.identity import Identity
from wharf.auth.service import AuthService, InvalidCredentials, TooManyAttempts
from wharf.auth.tokens import SERVICE
from wharf.faults import fault_of, log_failure
from wharf.registry import routes
from wharf.registry.errors import (
    BlobUploadUnknown,
    Denied,
    InternalError,
    ManifestUnknown,
    MethodNotAllowed,
    NameInvalid,
    NameUnknown,
    NotFound,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    fault_error,
)
from wharf.registry.handlers.context import Context
from wharf.registry.names import validate_name
from wharf.registry.service import RegistryService

log = logging.getLogger("wharf.registry")

API_VERSION_HEADER = (b"docker-distribution-api-version", b"registry/2.0")


class RegistryApp:
    def __init__(
        self,
        registry: RegistryService,
        auth: AuthService,
        access: AccessService,
        base_url: Callable[[Scope], str],
    ) -> None:
        """`base_url` gives scheme://host[:port] of the token realm for a request (the
        external URL, or a Host the front door checked: see wharf/hosts.py)."""
        self.registry = registry
        self.auth = auth
        self.access = access
        self.base_url = base_url
        self._verifying: dict[str, asyncio.Future[Identity]] = {}
        self._verify_slots = asyncio.Semaphore(2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def send_with_version(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), API_VERSION_HEADER]
            await send(message)

        request = Request(scope, receive)
        try:
            response = await self._dispatch(request)
        except RegistryError as error:
            response = self._error(error)
        except Exception as error:
            response = self._error(self._unexpected(scope, error))
        try:
            await response(scope, receive, send_with_version)
        except RegistryError as error:  # raised by a streaming response before it started
            await self._error(error)(scope, receive, send_with_version)
        except Exception as error:
            if not started:
                await self._error(self._unexpected(scope, error))(scope, receive, send_with_version)
                return
            fault = fault_of(error)
            if fault is None:
                raise
            # The body broke off (storage failed mid-stream): the client sees it cut short.
            log.error("%s %s: response cut short: %s", scope["method"], scope["path"], fault)

    @staticmethod
    def _unexpected(scope: Scope, error: Exception) -> RegistryError:
        """A full disk or an unreachable database is answered for what it is; anything else is
        a bug: 500, and its traceback in the log."""
        fault = log_failure(log, f"{scope['method']} {scope['path']}", error)
        return InternalError() if fault is None else fault_error(fault)

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
        if "name" in params:
            # An encoded slash ("alice%2Fx") would be decoded into a name that a proxy in front,
            # which sees the raw path, does not know it is being asked about.
            if b"%2f" in request.scope.get("raw_path", b"").lower():
                raise NameInvalid(params["name"])
            validate_name(params["name"])
        # A NUL byte cannot be in any stored reference or upload id (and PostgreSQL refuses
        # it in a query): answer as for any unknown one.
        if "\x00" in params.get("reference", ""):
            raise ManifestUnknown(params["reference"])
        if "\x00" in params.get("upload_id", ""):
            raise BlobUploadUnknown(params["upload_id"])
        identity = await self._identity(request, access, params.get("name"))
        ctx = Context(request, params, self.registry, self.access, identity)
        await self._authorize(ctx, access)
        return await handler(ctx)

    async def _identity(self, request: Request, access: str, name: str | None) -> Identity:
        header = request.headers.get("authorization")
        identity = self.auth.cached(header)
        if identity is not None:
            return identity
        assert header is not None
        client = request.client.host if request.client else None
        # Single flight: a client opening many connections at once costs one password check.
        pending = self._verifying.get(header)
        if pending is None:
            pending = asyncio.ensure_future(self._verify(header, client))
            self._verifying[header] = pending
            pending.add_done_callback(lambda _: self._verifying.pop(header, None))
        try:
            return await asyncio.shield(pending)
        except InvalidCredentials as e:
            challenge = self._challenge(request, access, name, error="invalid_token")
            raise Unauthorized(str(e), headers={"WWW-Authenticate": challenge}) from None
        except TooManyAttempts as e:
            raise TooManyRequests(headers={"Retry-After": str(e.retry_after)}) from None

    async def _verify(self, header: str, client: str | None) -> Identity:
        async with self._verify_slots:  # bounds the memory argon2 takes under a login burst
            return await to_thread.run_sync(self.auth.authenticate, header, client)

    async def _authorize(self, ctx: Context, access: str) -> None:
        """Allow the request, or refuse it without revealing whether a repository the caller
        may not read exists: such a repository answers exactly like a missing one."""
        identity = ctx.identity
        if access == routes.LOGIN:
            if not identity.is_anonymous:
                return
        elif access == routes.CATALOG:
            if identity.token_allows("registry", "catalog", "*") and (
                not identity.is_anonymous or await self.registry.run_read(self._anonymous_pull)
            ):
                return
        elif access in ALL_ACTIONS:
            if identity.token_allows("repository", ctx.name, access):
                decision = await self.registry.run_read(self.access.decide, identity, ctx.name)
                if access in decision.actions:
                    return
                if not identity.is_anonymous and identity.granted is None:
                    if PULL not in decision.actions and access == PULL:
                        raise NameUnknown(ctx.name)  # as if it did not exist
                    raise Denied()
        else:
            raise AssertionError(f"route declares unknown access {access!r}")
        # Anonymous callers and bearer tokens without the scope are told where to get one.
        error = "insufficient_scope" if identity.granted is not None else None
        name = ctx.params.get("name")
        raise Unauthorized(
            headers={"WWW-Authenticate": self._challenge(ctx.request, access, name, error=error)}
        )

    def _anonymous_pull(self) -> bool:
        return self.access.policy.settings().anonymousPull

    def _challenge(self, request: Request, access: str, name: str | None, error: str | None) -> str:
        realm = f"{self.base_url(request.scope)}/auth/token"
        parts = [f'Bearer realm="{realm}"', f'service="{SERVICE}"']
        if access == routes.CATALOG:
            parts.append('scope="registry:catalog:*"')
        elif name is not None and access in ALL_ACTIONS:
            actions = "pull,push" if access == PUSH else access
            parts.append(f'scope="repository:{name}:{actions}"')
        if error:
            parts.append(f'error="{error}"')
        return ",".join(parts)

    @staticmethod
    def _error(error: RegistryError) -> Response:
        headers = dict(error.headers)
        return Response(
            error.body(), status_code=error.status, headers=headers, media_type="application/json"
        )
