"""The Host header is never where a client is sent: without an external URL the registry
answers only for its own names (refusing any other Host with 400, in each API's error
format, before a URL is built from it); with one, every URL is built from the external URL
and the Host is not used."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.conftest import WharfServer, start_server

from .helpers import challenge_params, raw_request

HOSTILE_HOSTS = [
    'evil"host',
    "a,b",
    'x", realm="http://evil.example/auth/token',
    'evil.example",service="other',
    "evil.example, Basic realm=x",
    '127.0.0.1:5000"',
    "evil.example:99999999",
    "evil.example/path",
    "user@evil.example",
    "evil example",
    "[::1",
]
# Well-formed, but names this replica does not answer for (a DNS name an attacker points at
# it, another machine's address).
FOREIGN_HOSTS = ["evil.example", "evil.example:5000", "registry.example.com", "10.1.2.3:80"]


def targets(world) -> list[tuple[str, str]]:
    return [
        ("GET", "/v2/"),
        ("GET", f"/v2/{world.private.repository}/tags/list"),
        ("POST", f"/v2/{world.private.repository}/blobs/uploads/"),
        ("GET", "/auth/token?service=wharf"),
        ("GET", "/api/v0/accounts/me"),
    ]


@pytest.mark.parametrize("host", HOSTILE_HOSTS + FOREIGN_HOSTS)
def test_hosts_the_registry_does_not_answer_for_are_refused(wharf_server, world, host):
    for method, target in targets(world):
        r = raw_request(wharf_server, method, target, host=host)
        if r.status == 400 and not r.body.startswith(b"{"):
            continue  # the HTTP server itself refused the request line or header
        assert r.status == 400, (host, target, r.status, r.body)
        expected = "INVALID_PARAMETERS" if target.startswith("/api/") else "UNSUPPORTED"
        assert r.code == expected, (target, r.body)
        assert "www-authenticate" not in r.headers
        assert all(host not in value for value in r.headers.values()), r.headers


def own_hosts(server: WharfServer) -> list[str]:
    return [
        server.host,
        f"localhost:{server.port}",
        "localhost",
        f"[::1]:{server.port}",
        f"127.0.0.2:{server.port}",  # loopback, and the connection arrived on loopback
        f"LOCALHOST:{server.port}",
        socket.gethostname(),
    ]


def test_its_own_names_are_answered_and_used(wharf_server):
    for host in own_hosts(wharf_server):
        r = raw_request(wharf_server, "GET", "/v2/", host=host)
        assert r.status == 401, (host, r.body)
        realm = challenge_params(r.headers["www-authenticate"])["realm"]
        assert realm == f"http://{host}/auth/token"


def test_without_a_host_the_address_connected_to_is_used(wharf_server):
    r = raw_request(wharf_server, "GET", "/v2/", host="")
    assert r.status == 401
    realm = challenge_params(r.headers["www-authenticate"])["realm"]
    assert realm == f"http://{wharf_server.host}/auth/token"
    # HTTP/1.0 without any Host header.
    with socket.create_connection(("127.0.0.1", wharf_server.port), timeout=30) as sock:
        sock.sendall(b"GET /v2/ HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert b" 401 " in answer.split(b"\r\n", 1)[0]
    assert f'realm="http://{wharf_server.host}/auth/token"'.encode() in answer


@pytest.fixture(scope="module")
def allowing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    server = start_server(
        tmp_path_factory.mktemp("allowed-hosts"),
        extra_args=["--allowed-hosts", "registry.example.com, *.corp.example"],
    )
    yield server
    server.stop()


def test_allowed_hosts_are_answered_too(allowing_server):
    for host in (
        "registry.example.com",
        "registry.example.com:8443",
        "a.corp.example",
        "b.a.corp.example:80",
        allowing_server.host,
    ):
        r = raw_request(allowing_server, "GET", "/v2/", host=host)
        assert r.status == 401, (host, r.body)
        assert challenge_params(r.headers["www-authenticate"])["realm"] == (
            f"http://{host}/auth/token"
        )
    for host in ("corp.example", "evil.example", "registry.example.com.evil.example"):
        r = raw_request(allowing_server, "GET", "/v2/", host=host)
        assert r.status == 400, host
        assert r.code == "UNSUPPORTED"


@pytest.fixture(scope="module")
def external_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    server = start_server(
        tmp_path_factory.mktemp("external-url"),
        extra_args=["--external-url", "https://registry.example.com:8443"],
    )
    yield server
    server.stop()


@pytest.mark.parametrize("host", ["", "evil.example", "127.0.0.1", 'evil"host'])
def test_with_an_external_url_the_host_is_not_used(external_server, host):
    r = raw_request(external_server, "GET", "/v2/", host=host or external_server.host)
    if r.status == 400 and not r.body.startswith(b"{"):
        return  # the HTTP server itself refused the header
    assert r.status == 401, r.body
    header = r.headers["www-authenticate"]
    assert challenge_params(header)["realm"] == "https://registry.example.com:8443/auth/token"
    if host:
        assert host not in header


@pytest.mark.parametrize("host", HOSTILE_HOSTS[:6])
def test_basic_challenges_do_not_use_the_host(external_server, host):
    for target in ("/api/v0/accounts/me", "/auth/token?service=wharf"):
        r = raw_request(
            external_server,
            "GET",
            target,
            {"Authorization": "Basic !malformed!"},  # refused before any login is counted
            host=host,
        )
        if r.status == 400 and not r.body.startswith(b"{"):
            continue
        assert r.status == 401, (target, r.status, r.body)
        assert r.headers["www-authenticate"] == 'Basic realm="Wharf"'


@pytest.mark.parametrize(
    "proto", ['https", realm="http://evil.example', "javascript", "ftp", "http,https", "https"]
)
def test_forwarded_proto_is_not_believed_from_an_untrusted_peer(wharf_server, proto):
    r = raw_request(wharf_server, "GET", "/v2/", {"X-Forwarded-Proto": proto})
    assert r.status == 401
    header = r.headers["www-authenticate"]
    assert proto not in header
    assert challenge_params(header)["realm"] == f"http://{wharf_server.host}/auth/token"
