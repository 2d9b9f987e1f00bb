"""The trusted proxies of a replica set up by `wharf install`/`join`: `wharf reconfigure
--trusted-proxies` writes them to its wharf.toml and restarts it, after which the proxy's
X-Forwarded-For is believed (and only then)."""

from __future__ import annotations

import secrets

from tests.tls.helpers import tls_server, wharf


def failed_login_client(server, forwarded_for: str) -> str:
    """Fail a login as a new username with the given X-Forwarded-For; the audit trail's
    client address for it."""
    username = f"ghost{secrets.token_hex(4)}"
    with server.client() as c:
        r = c.get("/v2/", auth=(username, "wrong"), headers={"X-Forwarded-For": forwarded_for})
        assert r.status_code == 401, r.text
        events = c.get("/api/v0/audit", params={"action": "login_failed"}).json()
    return next(e["client"] for e in events if e["target"] == username)


def test_reconfigure_sets_the_trusted_proxies(tmp_path):
    server = tls_server(tmp_path)
    where = ["--data-dir", str(server.data_dir), "--db", server.db_url]
    try:
        assert failed_login_client(server, "203.0.113.5") == "127.0.0.1"

        r = wharf("reconfigure", *where, "--trusted-proxies", "127.0.0.1, 10.0.0.0/8")
        assert r.returncode == 0, r.stderr
        assert "restarted this replica" in r.stdout
        assert 'trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]' in server.config_file.read_text()
        server.wait_serving()
        assert failed_login_client(server, "203.0.113.5, 10.1.2.3") == "203.0.113.5"

        r = wharf("reconfigure", *where, "--trusted-proxies", "")
        assert r.returncode == 0, r.stderr
        server.wait_serving()
        assert failed_login_client(server, "203.0.113.5") == "127.0.0.1"

        before = server.config_file.read_text()
        r = wharf("reconfigure", *where, "--trusted-proxies", "proxy.example")
        assert r.returncode == 2 and "trusted_proxies" in r.stderr, r.stderr
        assert server.config_file.read_text() == before
    finally:
        server.stop()
