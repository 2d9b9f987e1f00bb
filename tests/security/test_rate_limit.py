"""The failed-login throttle: after `failedLoginLimit` wrong passwords for one user from one
address, that user's logins from that address are refused with 429 and Retry-After on every
entry point, right password included; other users and other addresses are unaffected.
Also: a refusal takes as long for an unknown username as for a wrong password."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import WharfServer, start_server

from .helpers import Account, Admin

LIMIT = 3
WINDOW = 300


@pytest.fixture(scope="module")
def throttled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    server = start_server(tmp_path_factory.mktemp("throttle"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin(throttled_server: WharfServer) -> Iterator[Admin]:
    api = Admin(throttled_server)
    settings = api.settings(failedLoginLimit=LIMIT, failedLoginWindowSeconds=WINDOW)
    assert settings["failedLoginLimit"] == LIMIT
    yield api
    api.close()


def client_at(server: WharfServer, address: str = "127.0.0.1") -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=server.url, transport=transport, timeout=60)


def assert_retry_after(r: httpx.Response) -> None:
    value = r.headers.get("retry-after")
    assert value is not None and value.isdigit(), dict(r.headers)
    assert 1 <= int(value) <= WINDOW + 1, value


def fail(c: httpx.Client, user: Account, times: int = LIMIT) -> None:
    for _ in range(times):
        r = c.get("/v2/", auth=(user.name, "not-the-password"))
        assert r.status_code == 401, r.text
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_registry_throttles_after_the_limit(throttled_server, admin):
    victim, bystander = admin.user("victim"), admin.user("bystander")
    with client_at(throttled_server) as c:
        fail(c, victim)
        # The next attempt is refused before the password is even looked at...
        r = c.get("/v2/", auth=(victim.name, "not-the-password"))
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert_retry_after(r)
        # ... and so is the right one, on every entry point.
        r = c.get(f"/v2/{victim.name}/x/tags/list", auth=victim.auth)
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert_retry_after(r)
        r = c.get("/api/v0/accounts/me", auth=victim.auth)
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
        assert_retry_after(r)
        r = c.get("/auth/token", params={"service": "wharf"}, auth=victim.auth)
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
        assert_retry_after(r)
        r = c.post(
            "/auth/token",
            data={"grant_type": "password", "username": victim.name, "password": victim.password},
        )
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "invalid_grant"
        assert "access_token" not in r.json()
        assert_retry_after(r)
        # A personal access token is a login too.
        r = c.get("/v2/", auth=(victim.name, "wharf_pat_" + "x" * 43))
        assert r.status_code == 429
        # Another user, from the same address, is unaffected.
        assert c.get("/v2/", auth=bystander.auth).status_code == 200
    # So is the same user from another address.
    with client_at(throttled_server, "127.0.0.2") as other:
        assert other.get("/v2/", auth=victim.auth).status_code == 200


def test_failures_count_across_entry_points(throttled_server, admin):
    user = admin.user("mixed")
    bad = (user.name, "not-the-password")
    with client_at(throttled_server) as c:
        r = c.get("/api/v0/accounts/me", auth=bad)
        assert r.status_code == 401
        assert r.json()["errors"][0]["code"] == "NOT_AUTHENTICATED"
        r = c.get("/auth/token", params={"service": "wharf"}, auth=bad)
        assert r.status_code == 401
        r = c.post(
            "/auth/token",
            data={"grant_type": "password", "username": user.name, "password": "not-it"},
        )
        assert r.status_code == 401
        assert r.json()["error"] == "invalid_grant"
        r = c.get("/api/v0/accounts/me", auth=user.auth)
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["code"] == "TOO_MANY_REQUESTS"
        assert_retry_after(r)


def test_spelling_variants_share_one_counter(throttled_server, admin):
    """Account names are lowercase; a directory may match any case or padding. Guesses under
    other spellings count towards the same limit."""
    user = admin.user("spelled")
    with client_at(throttled_server) as c:
        for variant in (user.name.upper(), user.name.capitalize(), f" {user.name}"):
            r = c.get("/v2/", auth=(variant, "not-the-password"))
            assert r.status_code == 401, (variant, r.text)
        r = c.get("/v2/", auth=user.auth)
        assert r.status_code == 429, r.text


def test_success_before_the_limit_resets_the_count(throttled_server, admin):
    user = admin.user("forgetful")
    with client_at(throttled_server) as c:
        fail(c, user, LIMIT - 1)
        # /auth/token checks the password every time (no credential cache), so this is a
        # real login, and it clears the count.
        r = c.get("/auth/token", params={"service": "wharf"}, auth=user.auth)
        assert r.status_code == 200, r.text
        fail(c, user, LIMIT - 1)
        assert c.get("/api/v0/accounts/me", auth=user.auth).status_code == 200


def test_throttle_ends_after_the_window(tmp_path):
    server = start_server(tmp_path)
    try:
        api = Admin(server)
        api.settings(failedLoginLimit=2, failedLoginWindowSeconds=2)
        user = api.user("patient")
        with client_at(server) as c:
            fail(c, user, 2)
            r = c.get("/v2/", auth=user.auth)
            assert r.status_code == 429
            wait = int(r.headers["retry-after"])
            assert 1 <= wait <= 3
            time.sleep(wait + 0.2)
            assert c.get("/v2/", auth=user.auth).status_code == 200
        api.close()
    finally:
        server.stop()


def test_unknown_usernames_are_refused_as_slowly_as_wrong_passwords(throttled_server, admin):
    """No timing oracle for which accounts exist: an unknown name costs a password check too."""
    user = admin.user("timed")

    def refusal_time(c: httpx.Client, username: str) -> float:
        start = time.perf_counter()
        r = c.post(
            "/auth/token",
            data={"grant_type": "password", "username": username, "password": "wrong-password"},
        )
        elapsed = time.perf_counter() - start
        assert r.status_code == 401, r.text
        return elapsed

    known, unknown = [], []
    for i in range(6):
        # Each attempt from its own address: the throttle is not what is measured.
        with client_at(throttled_server, f"127.0.2.{i + 1}") as c:
            known.append(refusal_time(c, user.name))
            unknown.append(refusal_time(c, f"nosuch{user.name}{i}"))
    ratio = statistics.median(unknown) / statistics.median(known)
    # Without a password check for unknown names the ratio is about 0.1.
    assert ratio > 0.5, (known, unknown)


# -- the client address: X-Forwarded-For only from trusted proxies ---------------------------


def audit_clients(api: Admin, action: str, username: str) -> list[str]:
    r = api.http.get("/api/v0/audit", params={"action": action, "limit": 1000})
    assert r.status_code == 200, r.text
    return [e["client"] for e in r.json() if e["target"] == username]


def test_a_rotating_x_forwarded_for_does_not_bypass_the_throttle(throttled_server, admin):
    """Without trusted proxies (the default), X-Forwarded-For is the client's own claim,
    even from loopback: neither the throttle nor the audit trail believe it."""
    user = admin.user("rotating")
    with client_at(throttled_server) as c:
        for i in range(LIMIT + 2):
            r = c.get(
                "/v2/",
                auth=(user.name, "not-the-password"),
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            assert r.status_code == (401 if i < LIMIT else 429), (i, r.text)
    assert audit_clients(admin, "login_failed", user.name) == ["127.0.0.1"] * LIMIT
    assert set(audit_clients(admin, "login_throttled", user.name)) == {"127.0.0.1"}


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    """Behind a proxy on 127.0.0.1, itself behind another one in 192.0.2.0/24."""
    server = start_server(
        tmp_path_factory.mktemp("proxied"),
        extra_args=["--trusted-proxies", "127.0.0.1,192.0.2.0/24"],
    )
    yield server
    server.stop()


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(proxied_server):
    api = Admin(proxied_server)
    try:
        api.settings(failedLoginLimit=LIMIT, failedLoginWindowSeconds=WINDOW)
        user = api.user("proxied")
        with client_at(proxied_server) as c:

            def attempt(forwarded: str, password: str = "not-the-password") -> int:
                headers = {"X-Forwarded-For": forwarded}
                return c.get("/v2/", auth=(user.name, password), headers=headers).status_code

            # The right-most address that is not a trusted proxy: what the client-facing
            # proxy saw, whatever the client put before it.
            for spoofed in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
                assert attempt(f"{spoofed}, 203.0.113.7, 192.0.2.10") == 401
            assert attempt("203.0.113.7", user.password) == 429
            # Another client behind the same proxies is not throttled.
            assert attempt("203.0.113.8", user.password) == 200
        assert audit_clients(api, "login_failed", user.name) == ["203.0.113.7"] * LIMIT
        assert audit_clients(api, "login_throttled", user.name) == ["203.0.113.7"]
        assert audit_clients(api, "login", user.name) == ["203.0.113.8"]
    finally:
        api.close()
