"""The whole HTTP application of one replica: the registry API under /v2/."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from wharf.auth.service import AuthService
from wharf.config import Settings
from wharf.metadata.store import MetadataStore
from wharf.registry.app import RegistryApp
from wharf.registry.service import RegistryService
from wharf.storage import open_storage

HSTS = (b"strict-transport-security", b"max-age=31536000")


def create_app(settings: Settings) -> ASGIApp:
    store = MetadataStore(settings.db_url)
    storage = open_storage(settings.storage_url)
    registry = RegistryApp(RegistryService(store, storage), AuthService(store))
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
        if path == "/v2" or path.startswith("/v2/"):
            await registry(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": not_found})

    return app


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
