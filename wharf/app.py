"""The whole HTTP application of one replica: the registry API under /v2/, the token
endpoint /auth/token and the management API under /api/v0/."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from wharf.auth.endpoint import TokenEndpoint
from wharf.config import Settings
from wharf.registry.app import RegistryApp
from wharf.services import Services, build_services

HSTS = (b"strict-transport-security", b"max-age=31536000")


def create_app(settings: Settings, services: Services | None = None) -> ASGIApp:
    services = services or build_services(settings)
    registry = RegistryApp(services.registry, services.auth, services.access)
    token_endpoint = TokenEndpoint(services.auth, services.access)
    # The management API (FastAPI, pydantic) is built on its first request: a worker that
    # only ever serves the registry does not pay for it.
    management: list[ASGIApp] = []
    not_found = json.dumps({"errors": [{"code": "NOT_FOUND", "message": "not found"}]}).encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if scope["scheme"] == "https":
            send = _with_header(send, HSTS)
        path = scope["path"]
        registry_path = path == "/v2" or path.startswith("/v2/")
        has_nul = b"%00" in scope.get("query_string", b"") or (
            "\x00" in path and not registry_path  # the registry answers per parameter
        )
        if has_nul:
            # No parameter may hold a NUL byte (and PostgreSQL refuses them in text):
            # refused at the edge, in each API's error format.
            api = path.startswith("/api/")
            await _respond(send, 400, _NUL_API if api else _NUL_REGISTRY)
            return
        if path == "/v2" or path.startswith("/v2/"):
            await registry(scope, receive, send)
            return
        if path == "/auth/token":
            await token_endpoint(scope, receive, send)
            return
        if path.startswith("/api/v0/"):
            if b"%2f" in scope.get("raw_path", b"").lower():
                # An encoded slash would be decoded into a path parameter ("bob%2Fprivate" as
                # the namespace "bob/private"): no API path has one.
                await _not_found(send, not_found)
                return
            if not management:
                from wharf.api.app import create_api

                management.append(create_api(services))
            await management[0](scope, receive, send)
            return
        await _not_found(send, not_found)

    return app


async def _not_found(send: Send, body: bytes) -> None:
    await _respond(send, 404, body)


async def _respond(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_NUL_REGISTRY = json.dumps(
    {"errors": [{"code": "UNSUPPORTED", "message": "NUL bytes are not allowed in URLs"}]}
).encode()
_NUL_API = json.dumps(
    {"errors": [{"code": "INVALID_PARAMETERS", "message": "NUL bytes are not allowed in URLs"}]}
).encode()


def _with_header(send: Send, header: tuple[bytes, bytes]) -> Send:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), header]
        await send(message)

    return wrapped


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
