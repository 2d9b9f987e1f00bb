"""Small request bodies read whole, with a bound: what the management API and the token
endpoint accept. (The registry streams its bodies, and bounds manifests itself.)

A body is refused as soon as it is known to pass its limit: from Content-Length before a
byte is read, else while counting what arrives (chunked bodies too). So a process never holds
more than the limit plus one received chunk of any such body."""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope

__all__ = ["BodyTooLarge", "ClientDisconnect", "has_body", "read_body", "replay"]


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request bodies here are limited to {limit} bytes")
        self.limit = limit


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value
    return None


def has_body(scope: Scope) -> bool:
    """Whether the request carries a body (HTTP/1.1: a non-zero Content-Length, or a
    Transfer-Encoding)."""
    length = _header(scope, b"content-length")
    return (length is not None and length.strip() not in (b"", b"0")) or _header(
        scope, b"transfer-encoding"
    ) is not None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole body; BodyTooLarge as soon as it is known to exceed `limit` bytes, with the
    rest left unread; ClientDisconnect if the client goes away first."""
    length = _header(scope, b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then whatever the client sends next
    (a disconnect)."""
    pending = True

    async def again() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
