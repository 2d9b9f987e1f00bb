"""Deactivated accounts and tokens, deleted tokens and changed passwords: every credential
derived from them stops working, even one the server verified a moment ago (and cached)."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from .helpers import Account, bearer, get_token, push_image

# Caches are keyed by an epoch re-read about once a second; the wait is only a bound on a
# hung test (no timing assertion: a loaded machine may take longer than the poll period).
DEADLINE = 30.0


def token_post(server, **form: str) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/token", data={"service": "wharf", **form}, timeout=60)


class Credentials:
    """Every way `user` can authenticate, and a check for each."""

    def __init__(self, server, user: Account) -> None:
        self.server, self.user = server, user
        self.repo = f"{user.name}/app"
        with user.client() as c:
            push_image(c, self.repo)
        self.pat = user.new_token("deactivation")
        scope = [f"repository:{self.repo}:pull"]
        r = get_token(server, scope, user.auth)
        assert r.status_code == 200, r.text
        self.jwt = r.json()["token"]
        r = token_post(
            server,
            grant_type="password",
            username=user.name,
            password=user.password,
            access_type="offline",
            scope=scope[0],
        )
        assert r.status_code == 200, r.text
        self.refresh_pw = r.json()["refresh_token"]
        r = get_token(server, scope, (user.name, self.pat["token"]), offline_token="true")
        assert r.status_code == 200, r.text
        self.refresh_pat = r.json()["refresh_token"]

    def checks(self) -> dict[str, Callable[[], int]]:
        """One check per credential and endpoint. Each runs from its own loopback address:
        failed logins count per (user, address), and the checks below fail on purpose."""
        url, name, pw, pat = self.server.url, self.user.name, self.user.password, self.pat["token"]
        tags = f"/v2/{self.repo}/tags/list"
        me = "/api/v0/accounts/me"
        token = "/auth/token"
        form = {"service": "wharf", "grant_type": "password", "username": name, "password": pw}

        def refresh(value: str) -> dict[str, str]:
            scope = f"repository:{self.repo}:pull"
            return {"grant_type": "refresh_token", "refresh_token": value, "scope": scope}

        requests = {
            "password /v2/": ("GET", tags, {"auth": (name, pw)}),
            "password /api/v0": ("GET", me, {"auth": (name, pw)}),
            "password /auth/token GET": ("GET", token, {"auth": (name, pw)}),
            "password /auth/token POST": ("POST", token, {"data": form}),
            "PAT /v2/": ("GET", tags, {"auth": (name, pat)}),
            "PAT /api/v0": ("GET", me, {"auth": (name, pat)}),
            "PAT /auth/token": ("GET", token, {"auth": (name, pat)}),
            "bearer JWT": ("GET", tags, {"headers": bearer(self.jwt)}),
            "refresh (password)": ("POST", token, {"data": refresh(self.refresh_pw)}),
            "refresh (PAT)": ("POST", token, {"data": refresh(self.refresh_pat)}),
        }

        def check(index: int, method: str, path: str, kwargs: dict) -> Callable[[], int]:
            def run() -> int:
                transport = httpx.HTTPTransport(local_address=f"127.0.0.{10 + index}")
                with httpx.Client(base_url=url, transport=transport, timeout=60) as c:
                    return c.request(method, path, **kwargs).status_code

            return run

        return {
            label: check(i, method, path, kwargs)
            for i, (label, (method, path, kwargs)) in enumerate(requests.items())
        }


def statuses(checks: dict[str, Callable[[], int]], only: set[str] | None = None) -> dict:
    return {name: check() for name, check in checks.items() if only is None or name in only}


def wait_until_refused(checks, names: set[str]) -> tuple[dict, float]:
    start = time.monotonic()
    while True:
        seen = statuses(checks, names)
        elapsed = time.monotonic() - start
        if all(status == 401 for status in seen.values()) or elapsed > DEADLINE:
            return seen, elapsed
        time.sleep(0.1)


def test_deactivated_user_loses_every_credential(wharf_server, world):
    user = world.admin.user("leaver")
    creds = Credentials(wharf_server, user)
    checks = creds.checks()
    # All work, and are now in the server's credential cache.
    assert statuses(checks) == dict.fromkeys(checks, 200)

    r = world.admin.http.patch(f"/api/v0/accounts/{user.name}", json={"isActive": False})
    assert r.status_code == 200, r.text
    assert r.json()["isActive"] is False

    seen, _ = wait_until_refused(checks, set(checks))
    assert seen == dict.fromkeys(checks, 401), seen
    # A second look, after every cache had time to notice: still refused.
    time.sleep(1.1)
    assert statuses(checks) == dict.fromkeys(checks, 401)

    # Reactivation restores what was not revoked by other means: the flag was the reason.
    r = world.admin.http.patch(f"/api/v0/accounts/{user.name}", json={"isActive": True})
    assert r.status_code == 200, r.text
    assert statuses(checks) == dict.fromkeys(checks, 200)


@pytest.mark.parametrize("how", ["deactivate", "delete"])
def test_revoked_token_stops_at_once_password_still_works(wharf_server, world, how):
    user = world.admin.user("revoker")
    creds = Credentials(wharf_server, user)
    other = user.new_token("kept")
    checks = creds.checks()
    assert statuses(checks) == dict.fromkeys(checks, 200)

    hashed = creds.pat["hashedToken"]
    with user.client() as c:
        if how == "deactivate":
            r = c.patch(f"/api/v0/api_tokens/{hashed}", json={"isActive": False})
            assert r.status_code == 200, r.text
            assert r.json()["isActive"] is False
        else:
            r = c.delete(f"/api/v0/api_tokens/{hashed}")
            assert r.status_code == 204, r.text

    # At once: no polling.
    seen = statuses(checks)
    revoked = {"PAT /v2/", "PAT /api/v0", "PAT /auth/token", "refresh (PAT)"}
    assert {k: v for k, v in seen.items() if k in revoked} == dict.fromkeys(revoked, 401)
    assert {k: v for k, v in seen.items() if k not in revoked} == dict.fromkeys(
        set(checks) - revoked, 200
    )
    # The user's other token is unaffected.
    r = httpx.get(f"{wharf_server.url}/v2/", auth=(user.name, other["token"]))
    assert r.status_code == 200


def test_password_change_revokes_the_old_password_and_its_refresh_tokens(wharf_server, world):
    user = world.admin.user("rotator")
    creds = Credentials(wharf_server, user)
    checks = creds.checks()
    assert statuses(checks) == dict.fromkeys(checks, 200)

    new_password = user.password + "-new"
    with user.client() as c:
        r = c.patch(
            f"/api/v0/accounts/{user.name}",
            json={"password": new_password, "oldPassword": user.password},
        )
        assert r.status_code == 200, r.text

    seen = statuses(checks)
    revoked = {
        "password /v2/",
        "password /api/v0",
        "password /auth/token GET",
        "password /auth/token POST",
        "refresh (password)",
    }
    assert {k: v for k, v in seen.items() if k in revoked} == dict.fromkeys(revoked, 401)
    # Tokens are separate credentials: they survive a password change.
    assert {k: v for k, v in seen.items() if k not in revoked} == dict.fromkeys(
        set(checks) - revoked, 200
    )
    r = httpx.get(f"{wharf_server.url}/v2/", auth=(user.name, new_password))
    assert r.status_code == 200


def test_deactivated_user_cannot_log_in_even_with_a_new_token(wharf_server, world):
    """An admin creating a token for a deactivated user does not bring the user back."""
    user = world.admin.user("dormant")
    r = world.admin.http.patch(f"/api/v0/accounts/{user.name}", json={"isActive": False})
    assert r.status_code == 200
    r = world.admin.http.post(
        "/api/v0/api_tokens", params={"username": user.name}, json={"tokenLabel": "x"}
    )
    if r.status_code == 201:
        token = r.json()["token"]
        assert httpx.get(f"{wharf_server.url}/v2/", auth=(user.name, token)).status_code == 401
        assert get_token(wharf_server, [], (user.name, token)).status_code == 401
    else:
        assert r.status_code in (400, 403, 404, 409), r.text
    assert httpx.get(f"{wharf_server.url}/v2/", auth=user.auth).status_code == 401
