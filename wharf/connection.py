"""The HTTP protocol of a worker's connections: uvicorn's httptools protocol, with bounds on
how long a request's headers may take to arrive and how large they may be.

uvicorn closes a connection that stays idle after a response (`timeout_keep_alive`), but
has no deadline for a request's headers: a client that connects and sends nothing, or
trickles a header a byte at a time, holds its connection open for ever, and its parser
buffers whatever it sends. Here every request (the first on a connection included) must
complete its headers within `header_timeout` seconds of its start, and within
`max_header_bytes`. Past either, the connection is closed: with `408 Request Timeout` or
`431 Request Header Fields Too Large` when part of a request had arrived, silently when
nothing had. A request being answered is never cut: its connection is closed after the
response instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wharf.config import Settings


def protocol_class(settings: Settings) -> type[asyncio.Protocol]:
    """The protocol class uvicorn builds each connection with, bound to `settings`."""

    class Protocol(GuardedProtocol):
        header_timeout = settings.header_timeout
        max_header_bytes = settings.max_header_bytes

    return Protocol


class GuardedProtocol(HttpToolsProtocol):
    header_timeout: float = 30.0
    max_header_bytes: int = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0  # bytes received since the current request's headers began
        self._in_headers = False  # a request has begun and its headers are not complete
        # A request's headers are complete and its body is still arriving: its bytes are not
        # headers, also when it was answered before its body was read (a 401 or 413 sent
        # early), which uvicorn then reads and discards.
        self._in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between = not (self._in_headers or self._in_body or self._answering())
        if self._header_timer is None and between:
            # Bytes after a response: uvicorn has just cancelled its keep-alive timer, and
            # they may not even begin a request (a bare CRLF): they get the same deadline.
            self._arm()
        was_in_body = self._in_body
        super().data_received(data)
        if was_in_body:
            # The read carried a body's bytes (and perhaps the start of the next request,
            # whose headers are then counted from the next read on: one read at most escapes
            # the count).
            return
        if self._in_headers or (self._header_timer is not None and not self._answering()):
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes and not self.transport.is_closing():
                self._refuse(b"431 Request Header Fields Too Large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._in_body = True
        self._header_bytes = 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_bytes = 0
        self._header_timer = self.loop.call_later(self.header_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._answering():
            # The next request's headers are late, but one is being answered: finish it,
            # then close.
            self.cycle.keep_alive = False
            return
        if self._in_headers or self._header_bytes:
            self._refuse(b"408 Request Timeout")
        else:
            self.transport.close()

    def _refuse(self, status: bytes) -> None:
        self._disarm()
        if self._answering():
            self.cycle.keep_alive = False
            self.transport.pause_reading()
            return
        self.transport.write(
            b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        self.transport.close()
