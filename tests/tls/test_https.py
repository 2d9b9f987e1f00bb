"""A replica with the cluster's certificate: HTTPS that clients verify with the CA from /ca,
plain HTTP that only redirects (308, method kept), HSTS on every response."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from tests.security.helpers import raw_request
from tests.tls.helpers import tls_server, trusting
from wharf import tls


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    material = tls.self_signed(tls.names_for("https://registry.example.com"))
    s = tls_server(tmp_path_factory.mktemp("https"), material)
    s.material = material
    yield s
    s.stop()


def plain(server) -> SimpleNamespace:
    return SimpleNamespace(host=f"127.0.0.1:{server.http_port}", port=server.http_port)


def test_the_ca_is_public_on_both_listeners(server):
    for url in (server.http_url, server.https_url):
        r = httpx.get(f"{url}/ca", verify=False)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-pem-file"
        assert r.text == server.material.ca_pem
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        head = httpx.head(f"{url}/ca", verify=False)
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(server.material.ca_pem)
    assert httpx.post(f"{server.http_url}/ca").status_code == 405


def test_https_verifies_against_the_ca_from_slash_ca(server):
    ca = httpx.get(f"{server.http_url}/ca").text
    for host in ("127.0.0.1", "localhost"):
        with server.client(ca) as c:
            r = c.get(f"https://{host}:{server.https_port}/v2/")
        assert r.status_code == 200
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        assert r.headers["docker-distribution-api-version"] == "registry/2.0"
    # Another CA's clients refuse it.
    other = tls.self_signed(["localhost"])
    with pytest.raises(httpx.ConnectError), server.client(other.ca_pem) as c:
        c.get("/v2/")


def test_hsts_is_on_every_response(server):
    with server.client() as c:
        for path in ("/v2/", "/v2/nope/manifests/x", "/api/v0/accounts/me", "/nowhere"):
            r = c.get(path)
            assert r.headers["strict-transport-security"] == "max-age=31536000", path
    r = httpx.get(f"{server.http_url}/v2/")
    assert r.headers["strict-transport-security"] == "max-age=31536000"


def test_plain_http_redirects_to_https_keeping_path_query_and_method(server):
    base = f"https://127.0.0.1:{server.https_port}"
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        r = httpx.request(method, f"{server.http_url}/v2/a/b/blobs/uploads/?digest=sha256:1&x=%2F")
        assert r.status_code == 308, method
        assert r.headers["location"] == f"{base}/v2/a/b/blobs/uploads/?digest=sha256:1&x=%2F"
        assert r.content == b""
    # A client that follows it keeps its method and body (308) and reaches HTTPS (httpx
    # drops credentials when the origin changes, so the registry asks for them there).
    with httpx.Client(verify=trusting(server.material.ca_pem), follow_redirects=True) as c:
        r = c.post(f"{server.http_url}/v2/admin/redirected/blobs/uploads/", content=b"body")
    assert r.request.method == "POST"
    assert str(r.url) == f"{base}/v2/admin/redirected/blobs/uploads/"
    assert r.status_code == 401 and r.history[0].status_code == 308


def test_the_redirect_uses_a_host_the_replica_answers_for_with_the_https_port(server):
    for host, expected in (
        ("registry.example.com", "registry.example.com"),  # a name of its certificate
        ("registry.example.com:5000", "registry.example.com"),
        ("[::1]:5000", "[::1]"),
        ("localhost", "localhost"),
        ("", "127.0.0.1"),  # no Host: the address connected to
    ):
        r = raw_request(plain(server), "GET", "/v2/x", host=host)
        assert r.status == 308
        assert r.headers["location"] == f"https://{expected}:{server.https_port}/v2/x"


@pytest.mark.parametrize(
    "host",
    ['evil"host', "a,b", "evil.example/path", "user@evil.example", "evil example", "evil.example"],
)
def test_a_host_it_does_not_answer_for_is_never_reflected(server, host):
    r = raw_request(plain(server), "GET", "/v2/", host=host)
    if r.status == 400 and not r.body.startswith(b"{"):
        return  # the HTTP server itself refused the request
    assert r.status == 400
    assert r.code == "UNSUPPORTED"
    assert "location" not in r.headers


def test_external_url_is_where_plain_http_sends_clients(tmp_path):
    s = tls_server(tmp_path, config={"external_url": "https://registry.example.com:8443"})
    try:
        r = httpx.get(f"{s.http_url}/v2/_catalog?n=1", headers={"Host": "other.example"})
        assert r.status_code == 308
        assert r.headers["location"] == "https://registry.example.com:8443/v2/_catalog?n=1"
    finally:
        s.stop()


def test_a_plain_http_external_url_redirects_to_its_name_never_the_host(tmp_path):
    s = tls_server(tmp_path, config={"external_url": "http://registry.example.com:8080"})
    try:
        for host in ("evil.example", 'evil"host', ""):
            r = raw_request(plain(s), "GET", "/v2/x", host=host)
            if r.status == 400 and not r.body.startswith(b"{"):
                continue  # the HTTP server itself refused the header
            assert r.status == 308, (host, r.body)
            assert r.headers["location"] == f"https://registry.example.com:{s.https_port}/v2/x"
    finally:
        s.stop()


def test_plain_http_serves_everything_when_asked_to(tmp_path):
    s = tls_server(tmp_path, config={"plain_http": True})
    try:
        r = httpx.get(f"{s.http_url}/v2/", auth=s.auth)
        assert r.status_code == 200
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        with s.client() as c:
            assert c.get("/v2/").status_code == 200
    finally:
        s.stop()


def test_a_replica_without_https_has_no_ca(fresh_server):
    r = httpx.get(f"{fresh_server.url}/ca")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] == "NOT_FOUND"
    assert r.headers["strict-transport-security"] == "max-age=31536000"
    # The embedded default serves plain HTTP on loopback as before.
    assert httpx.get(f"{fresh_server.url}/v2/", auth=fresh_server.auth).status_code == 200
