"""Slow and greedy clients cannot hold connections: a connection whose request headers do not
arrive in time (nothing sent, or a header trickled a byte at a time) is closed, so is an
idle keep-alive connection, and headers beyond the size bound are refused. Other clients are
served meanwhile. The server runs with a 1 s header and keep-alive timeout; the checks wait
with generous socket timeouts and assert only that the connection was closed."""

from __future__ import annotations

import contextlib
import hashlib
import re
import select
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import WharfServer, start_server

# Generous: a connection still open after this many seconds is taken as never closed.
PATIENCE = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    s = start_server(
        tmp_path_factory.mktemp("slow-clients"),
        extra_args=["--header-timeout", "1", "--keepalive-timeout", "1"],
    )
    yield s
    s.stop()


def connect(server: WharfServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=PATIENCE)


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def served(server: WharfServer) -> bool:
    return httpx.get(f"{server.url}/v2/", timeout=30).status_code == 401


def test_a_connection_that_sends_nothing_is_closed(server):
    with connect(server) as idle, connect(server) as other_idle:
        assert served(server)  # others are served meanwhile
        assert read_until_closed(idle) == b""
        assert read_until_closed(other_idle) == b""
    assert served(server)


def test_a_trickled_header_is_closed_with_408(server):
    with connect(server) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: " + server.host.encode() + b"\r\nX-Slow: ")
        closed, answer = False, b""
        for _ in range(PATIENCE * 4):  # one byte every 0.25 s, until the server hangs up
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                answer = read_until_closed(sock)
                closed = True
                break
            try:
                sock.sendall(b"a")
            except OSError:  # reset: closed as well
                closed = True
                break
            assert served(server)
        assert closed
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer


def test_an_idle_keep_alive_connection_is_closed(server):
    with connect(server) as sock:
        request = b"GET /v2/ HTTP/1.1\r\nHost: " + server.host.encode() + b"\r\n\r\n"
        sock.sendall(request)
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 401 ")


def test_bytes_after_a_response_that_begin_no_request_get_the_deadline_too(server):
    with connect(server) as sock:
        request = b"GET /v2/ HTTP/1.1\r\nHost: " + server.host.encode() + b"\r\n\r\n"
        sock.sendall(request)
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 401 ")
        sock.sendall(b"\r\n")  # cancels the keep-alive timer, starts nothing
        read_until_closed(sock)


@pytest.mark.parametrize("complete", [True, False])
def test_oversized_headers_are_refused_with_431(server, complete):
    with connect(server) as sock:
        head = b"GET /v2/ HTTP/1.1\r\nHost: " + server.host.encode() + b"\r\n"
        big = b"X-Big: " + b"a" * (256 * 1024) + (b"\r\n\r\n" if complete else b"")
        with contextlib.suppress(OSError):  # the server may close before reading it all
            sock.sendall(head + big)
        try:
            answer = read_until_closed(sock)
        except ConnectionResetError:
            answer = b""
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert served(server)


def test_large_bodies_and_reused_connections_are_not_headers(server):
    """The bounds are on headers: an upload's body, in several requests on one kept-alive
    connection, is not counted against them."""
    blob = b"x" * (3 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with server.client() as c:
        for i in range(3):
            r = c.post(f"/v2/slow/body{i}/blobs/uploads/", params={"digest": digest}, content=blob)
            assert r.status_code == 201, r.text
        assert c.head(f"/v2/slow/body0/blobs/{digest}").status_code == 200


def test_a_body_answered_before_it_was_read_is_not_headers(server):
    """A request refused before its body is read (401 here) is answered at once; the rest of
    its body, which uvicorn reads and discards, is not counted as the next request's headers
    (seen: oras's retried PUT got 431 under load)."""
    body = b"x" * (1024 * 1024)
    head = (
        f"PUT /v2/slow/early/blobs/uploads/x?digest=sha256:{'0' * 64} HTTP/1.1\r\n"
        f"Host: {server.host}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(server) as sock:
        sock.sendall(head)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 401"), received[:200]
        sock.sendall(body)
        sock.sendall(
            f"GET /v2/ HTTP/1.1\r\nHost: {server.host}\r\nConnection: close\r\n\r\n".encode()
        )
        received += read_until_closed(sock)
    assert re.findall(rb"HTTP/1\.1 ([0-9]{3}) ", received) == [b"401", b"401"], received[-700:]
