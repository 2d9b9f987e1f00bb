"""Request bodies of the management API and of /auth/token are bounded, and an anonymous body
is refused before it is read.

Several tests speak HTTP over a bare socket: they send the request's head and only part of
its body, then read the answer. A server that answers has decided without the rest of the
body; one that waits for it (as before) never answers, and the socket's read times out.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from .helpers import API, api_error, unique

MiB = 1 << 20
LIMIT = 2 * MiB  # the management API's limit for a JSON body
FORM_LIMIT = 64 << 10  # /auth/token's limit for its form


def _basic(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def partial_request(
    server, method: str, path: str, headers: dict[str, str], body_start: bytes
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """Send a request's head and the first bytes of its body, then read the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        head = f"{method} {path} HTTP/1.1\r\nHost: {server.host}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        sock.sendall(head.encode() + b"\r\n" + body_start)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.headers, response.read()


def chunks(total: int, size: int = 256 << 10) -> Iterator[bytes]:
    """A body of `total` bytes (a JSON document, if one could read it all), sent chunked."""
    yield b'{"name": "'
    sent = 10
    while sent < total:
        piece = b"x" * min(size, total - sent)
        sent += len(piece)
        yield piece
    yield b'"}'


def error_code(body: bytes) -> str:
    return json.loads(body)["errors"][0]["code"]


# -- the management API -------------------------------------------------------------------


def test_anonymous_body_is_refused_unread(wharf_server):
    declared = {"Content-Type": "application/json", "Content-Length": str(200 * MiB)}
    status, headers, body = partial_request(
        wharf_server, "POST", f"{API}/accounts", declared, b'{"name": "'
    )
    assert status == 401, body
    assert error_code(body) == "NOT_AUTHENTICATED"
    assert headers["WWW-Authenticate"].startswith("Basic")
    # Wrong credentials are no better than none.
    status, _, body = partial_request(
        wharf_server,
        "PUT",
        f"{API}/meta/settings/ldap",
        {**declared, "Authorization": _basic(("admin", "wrong password"))},
        b"{",
    )
    assert status == 401, body
    # Chunked, without a length: the same.
    status, _, body = partial_request(
        wharf_server,
        "POST",
        f"{API}/repositories/admin",
        {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        b"1\r\n{\r\n",
    )
    assert status == 401, body


def test_anonymous_huge_body_does_not_grow_the_server(wharf_server, anon):
    """The case reported: a 200 MiB anonymous JSON body took the server from 425 to 733
    MiB. Now it is answered 401 and dropped as it arrives."""
    assert wharf_server.proc is not None and wharf_server.workers == 1
    pid = wharf_server.proc.pid  # with one worker, the serving process itself
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # restart the peak (VmHWM) from the current RSS
    before = _status_kib(pid, "VmRSS")
    r = anon.post(
        f"{API}/accounts",
        content=chunks(128 * MiB, MiB),
        headers={"Content-Type": "application/json"},
    )
    api_error(r, 401, "NOT_AUTHENTICATED")
    grown_mib = (_status_kib(pid, "VmHWM") - before) / 1024
    assert grown_mib < 32, f"the server grew by {grown_mib:.0f} MiB at its peak"


def test_oversize_body_is_refused_413(wharf_server, admin):
    auth = {"Authorization": _basic(wharf_server.auth), "Content-Type": "application/json"}
    # Declared too large: refused before anything is read.
    status, _, body = partial_request(
        wharf_server,
        "POST",
        f"{API}/accounts",
        {**auth, "Content-Length": str(LIMIT + 1)},
        b'{"name": "',
    )
    assert status == 413, body
    assert error_code(body) == "REQUEST_TOO_LARGE"
    # Chunked: refused once the limit is passed, before the body ends.
    piece = b"x" * (LIMIT // 2)
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    status, _, body = partial_request(
        wharf_server,
        "POST",
        f"{API}/accounts",
        {**auth, "Transfer-Encoding": "chunked"},
        b'a\r\n{"name": "\r\n' + chunk * 3,
    )
    assert status == 413, body
    assert error_code(body) == "REQUEST_TOO_LARGE"
    # Whole bodies sent by a real client, with and without a length.
    padded = b'{"name": "' + b"x" * LIMIT + b'"}'
    r = admin.post(f"{API}/accounts", content=padded, headers={"Content-Type": "application/json"})
    message = api_error(r, 413, "REQUEST_TOO_LARGE")
    assert str(LIMIT) in message
    r = admin.post(
        f"{API}/accounts",
        content=chunks(4 * LIMIT),
        headers={"Content-Type": "application/json"},
    )
    api_error(r, 413, "REQUEST_TOO_LARGE")
    # The connection still serves the next request.
    assert admin.get(f"{API}/accounts/me").status_code == 200


def test_body_up_to_the_limit_is_accepted(admin):
    name = unique("r")
    # The largest valid body, as a client that escapes every character sends it.
    document = json.dumps({"name": name, "longDescription": "\U0001f433" * 100_000})
    assert len(document) > 1_200_000
    body = document[:-1] + " " * (LIMIT - len(document)) + "}"
    assert len(body) == LIMIT
    r = admin.post(
        f"{API}/repositories/admin", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["fullName"] == f"admin/{name}"
    # Chunked as well.
    r = admin.patch(
        f"{API}/repositories/admin/{name}",
        content=iter([b'{"shortDescription":', b' "chunked"}']),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["shortDescription"] == "chunked"


def test_bodyless_requests_still_work_anonymously(wharf_server, anon):
    r = anon.post(f"{API}/jobs/{unique('j')}/cancel", headers={"Content-Length": "0"})
    api_error(r, 401, "NOT_AUTHENTICATED")
    # Anonymous callers only read: a write is refused before its input is looked at (a
    # missing body was a 400 that told them what to send).
    api_error(anon.post(f"{API}/accounts"), 401, "NOT_AUTHENTICATED")
    api_error(anon.patch(f"{API}/accounts/{unique()}"), 401, "NOT_AUTHENTICATED")
    api_error(
        anon.delete(f"{API}/api_tokens", params={"usedbefore": "x"}), 401, "NOT_AUTHENTICATED"
    )
    assert anon.get(f"{API}/openapi.json").status_code == 200
    assert anon.get(f"{API}/repositories").status_code == 200


# -- /auth/token --------------------------------------------------------------------------


def oauth_error(r) -> str:
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["error"] == "invalid_request", body
    return body["error_description"]


def test_token_form_with_a_huge_field_is_400(anon, admin):
    r = anon.post(
        "/auth/token",
        data={"grant_type": "password", "username": "admin", "password": "p" * (2 * MiB)},
    )
    assert str(FORM_LIMIT) in oauth_error(r)
    r = anon.post(
        "/auth/token",
        content=chunks(2 * MiB),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    oauth_error(r)


def test_token_form_with_too_many_fields_is_400(anon):
    fields = [("grant_type", "password"), ("username", "admin"), ("password", "x")]
    fields += [("scope", f"repository:r{i}:pull") for i in range(100)]
    r = anon.post(
        "/auth/token",
        content="&".join(f"{k}={v}" for k, v in fields),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert "fields" in oauth_error(r)


def test_token_form_declared_too_large_is_refused_unread(wharf_server):
    status, _, body = partial_request(
        wharf_server,
        "POST",
        "/auth/token",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(200 * MiB),
        },
        b"grant_type=password&password=",
    )
    assert status == 400, body
    assert json.loads(body)["error"] == "invalid_request"


@pytest.mark.parametrize("scopes", [1, 64])
def test_token_form_within_limits_still_works(wharf_server, anon, scopes):
    form = [("grant_type", "password"), ("username", "admin")]
    form += [("password", wharf_server.admin_password), ("service", "wharf")]
    form += [("scope", f"repository:admin/r{i}:pull") for i in range(scopes)]
    r = anon.post(
        "/auth/token",
        content=urlencode(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["token"]


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)
