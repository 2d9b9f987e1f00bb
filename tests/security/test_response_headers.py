"""Headers every response carries, whatever answered it: no MIME sniffing, no framing; the
API's docs page brings a policy that still lets the offline Swagger UI run; a 405 names every
method of the path."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from tests.tls.helpers import tls_server
from wharf import tls

from .helpers import raw_request

pytestmark = pytest.mark.once  # headers do not depend on the metadata store

API = "/api/v0"

# (method, path, the status it gets): one of each kind of responder behind the front door.
REQUESTS = [
    ("GET", "/v2/", 401),
    ("GET", "/v2/nobody/nothing/manifests/latest", 401),
    ("GET", "/auth/token?service=wharf", 200),
    ("POST", "/auth/token", 400),
    ("PUT", "/auth/token", 405),
    ("GET", f"{API}/accounts/me", 401),
    ("DELETE", f"{API}/accounts", 405),
    ("GET", f"{API}/openapi.json", 200),
    ("GET", f"{API}/docs", 200),
    ("GET", f"{API}/docs/static/swagger-ui.css", 200),
    ("GET", f"{API}/docs/static/nothing.js", 404),
    ("GET", f"{API}/accounts/a%00b", 400),
    ("GET", "/ca", 404),
    ("POST", "/ca", 405),
    ("GET", "/nowhere", 404),
]


def assert_protected(headers, what) -> None:
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("x-frame-options") == "DENY", what
    policy = headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in policy, (what, policy)
    assert headers.get("strict-transport-security") == "max-age=31536000", what


@pytest.mark.parametrize(("method", "path", "status"), REQUESTS)
def test_every_response_says_nosniff_and_no_framing(wharf_server, method, path, status):
    r = raw_request(wharf_server, method, path)
    assert r.status == status, (method, path, r.status, r.body[:200])
    assert_protected(r.headers, (method, path))
    if not path.endswith("/docs"):
        # Nothing but the docs page may run anything.
        assert r.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_the_docs_page_runs_only_its_own_code(anon):
    r = anon.get(f"{API}/docs")
    assert r.status_code == 200
    assert r.headers.get_list("content-security-policy") == [r.headers["content-security-policy"]]
    directives = r.headers["content-security-policy"].split("; ")
    policy = {d.partition(" ")[0]: d.partition(" ")[2] for d in directives}
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["connect-src"] == "'self'"  # it fetches openapi.json, and "try it out"
    assert "data:" in policy["img-src"]  # the stylesheet's icons
    # Scripts: its own files, and its one inline script by hash (no 'unsafe-inline').
    inline = re.findall(r"<script>(.*?)</script>", r.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert policy["script-src"].split() == ["'self'", f"'sha256-{digest}'"]
    assert "SwaggerUIBundle(" in inline[0]
    # With nosniff, a browser runs a script or applies a stylesheet only if it says so.
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")):
        got = anon.get(f"{API}/docs/static/{asset}")
        assert got.status_code == 200
        assert kind in got.headers["content-type"], got.headers["content-type"]


def test_both_listeners_of_an_https_replica(tmp_path):
    server = tls_server(tmp_path, tls.self_signed(tls.names_for("https://registry.example.com")))
    try:
        # The plain-HTTP listener only redirects; its answers carry the headers too.
        r = httpx.get(f"{server.http_url}/api/v0/accounts/me", follow_redirects=False)
        assert r.status_code == 308
        assert_protected(r.headers, "redirect")
        r = httpx.get(f"{server.http_url}/ca")
        assert r.status_code == 200
        assert_protected(r.headers, "plain /ca")
        with server.client() as c:
            for path in ("/v2/", f"{API}/accounts/me", "/ca", f"{API}/docs"):
                assert_protected(c.get(path).headers, path)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", f"{API}/accounts", "GET, POST"),
        ("PUT", f"{API}/api_tokens", "DELETE, GET, POST"),
        ("POST", f"{API}/repositories/someone/something", "DELETE, GET, PATCH"),
        ("PATCH", f"{API}/jobs/some-job", "DELETE, GET"),
        ("GET", f"{API}/meta/settings/ldap/sync", "POST"),
        ("POST", f"{API}/docs/static/swagger-ui.css", "GET, HEAD"),
    ],
)
def test_405_names_every_method_of_the_path(client, method, path, allowed):
    r = client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == allowed
    assert r.json()["errors"][0]["code"] == "NOT_ALLOWED"
