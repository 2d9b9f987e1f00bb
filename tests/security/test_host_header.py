"""A hostile Host header never lands verbatim in a challenge: the realm a client is sent to is
built only from a well-formed host, and the header stays one well-formed challenge."""

from __future__ import annotations

import pytest

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
    "",
]


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_hostile_host_header_is_not_reflected(wharf_server, world, host):
    targets = [
        "/v2/",
        f"/v2/{world.private.repository}/tags/list",
        f"/v2/{world.private.repository}/blobs/uploads/",
    ]
    for target in targets:
        method = "POST" if target.endswith("uploads/") else "GET"
        r = raw_request(wharf_server, method, target, host=host)
        if r.status == 400 and not r.body.startswith(b"{"):
            continue  # the HTTP server itself refused the request line or header
        assert r.status == 401, (host, target, r.status, r.body)
        header = r.headers["www-authenticate"]
        if host:
            assert host not in header, header
        params = challenge_params(header)
        assert params["realm"] == "http://localhost/auth/token", header
        assert params["service"] == "wharf"
        assert set(params) <= {"realm", "service", "scope", "error"}


def test_plain_hosts_are_used(wharf_server, world):
    """The control: a well-formed Host is what the realm is built from."""
    for host in (
        wharf_server.host,
        "registry.example.com",
        "registry.example.com:8443",
        "[::1]:5000",
    ):
        r = raw_request(wharf_server, "GET", "/v2/", host=host)
        assert r.status == 401
        assert challenge_params(r.headers["www-authenticate"])["realm"] == (
            f"http://{host}/auth/token"
        )


@pytest.mark.parametrize("host", HOSTILE_HOSTS[:6])
def test_basic_challenges_do_not_use_the_host(wharf_server, host):
    for target in ("/api/v0/accounts/me", "/auth/token?service=wharf"):
        r = raw_request(
            wharf_server,
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
    "proto", ['https", realm="http://evil.example', "javascript", "ftp", "http,https"]
)
def test_forwarded_proto_cannot_inject_into_the_realm(wharf_server, proto):
    r = raw_request(wharf_server, "GET", "/v2/", {"X-Forwarded-Proto": proto})
    assert r.status == 401
    header = r.headers["www-authenticate"]
    assert proto not in header
    realm = challenge_params(header)["realm"]
    assert realm in (
        f"http://{wharf_server.host}/auth/token",
        f"https://{wharf_server.host}/auth/token",
    ), realm
