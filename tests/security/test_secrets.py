"""Secrets never reach the server's log, the audit trail, the data directory, or any response
but the one that creates a personal access token: passwords (right, wrong and changed), access
tokens, JWTs, refresh tokens and Basic headers."""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests import metadata_db
from tests.conftest import WharfServer, start_server

from .helpers import bearer


@pytest.fixture(scope="module")
def noisy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfServer]:
    """A server logging as much as it can: debug level and every request."""
    server = start_server(
        tmp_path_factory.mktemp("noisy"), extra_args=["--log-level", "debug", "--access-log"]
    )
    yield server
    server.stop()


@dataclass
class Session:
    server: WharfServer
    username: str
    password: str = field(default_factory=lambda: "Pw-" + secrets.token_hex(12))
    wrong: str = field(default_factory=lambda: "Wrong-" + secrets.token_hex(12))
    changed: str = field(default_factory=lambda: "New-" + secrets.token_hex(12))
    guessed_pat: str = field(default_factory=lambda: "wharf_pat_" + secrets.token_urlsafe(32))
    pat: str = ""
    hashed_pat: str = ""
    jwts: list[str] = field(default_factory=list)
    responses: list[httpx.Response] = field(default_factory=list)  # secret-free, supposedly
    token_responses: list[httpx.Response] = field(default_factory=list)  # carry JWTs
    creation: httpx.Response | None = None

    def request(self, method: str, path: str, *, tokens: bool = False, **kw) -> httpx.Response:
        r = httpx.request(method, f"{self.server.url}{path}", timeout=60, **kw)
        (self.token_responses if tokens else self.responses).append(r)
        return r

    def secrets(self) -> dict[str, str]:
        found = {
            "password": self.password,
            "wrong password": self.wrong,
            "changed password": self.changed,
            "PAT": self.pat,
            "PAT without prefix": self.pat.removeprefix("wharf_pat_"),
            "guessed PAT": self.guessed_pat,
        }
        for label, secret in list(found.items()):
            if "PAT without" not in label:
                pair = f"{self.username}:{secret}".encode()
                found[f"base64({label})"] = base64.b64encode(pair).decode()
        for i, token in enumerate(self.jwts):
            found[f"JWT {i}"] = token
            found[f"JWT {i} signature"] = token.rsplit(".", 1)[1]
        return found


@pytest.fixture(scope="module")
def session(noisy_server: WharfServer) -> Session:
    """Every kind of login, right and wrong, against the noisy server."""
    server = noisy_server
    admin = server.client()
    s = Session(server, f"secretive{secrets.token_hex(3)}")
    # Failures are made on purpose below; the login throttle is another test's subject.
    r = admin.post("/api/v0/meta/settings", json={"failedLoginLimit": 1000})
    assert r.status_code == 202, r.text
    r = admin.post("/api/v0/accounts", json={"name": s.username, "password": s.password})
    assert r.status_code == 201, r.text
    user = (s.username, s.password)
    repo = f"{s.username}/app"
    scope = f"repository:{repo}:pull,push"

    assert s.request("GET", "/v2/", auth=user).status_code == 200
    assert s.request("GET", "/api/v0/accounts/me", auth=user).status_code == 200
    s.creation = httpx.post(f"{server.url}/api/v0/api_tokens", json={"tokenLabel": "ci"}, auth=user)
    assert s.creation.status_code == 201, s.creation.text
    s.pat, s.hashed_pat = s.creation.json()["token"], s.creation.json()["hashedToken"]
    with_pat = (s.username, s.pat)
    assert s.request("GET", "/v2/", auth=with_pat).status_code == 200
    assert s.request("GET", "/api/v0/accounts/me", auth=with_pat).status_code == 200
    assert s.request("POST", f"/v2/{repo}/blobs/uploads/", auth=with_pat).status_code == 202

    # Docker token authentication, every way.
    params = {"service": "wharf", "scope": scope, "offline_token": "true"}
    for credentials in (user, with_pat):
        r = s.request("GET", "/auth/token", tokens=True, params=params, auth=credentials)
        assert r.status_code == 200, r.text
        s.jwts += [r.json()["token"], r.json()["refresh_token"]]
    form = {"service": "wharf", "grant_type": "password", "scope": scope}
    for secret in (s.password, s.pat):
        r = s.request(
            "POST",
            "/auth/token",
            tokens=True,
            data={**form, "username": s.username, "password": secret, "access_type": "offline"},
        )
        assert r.status_code == 200, r.text
        s.jwts += [r.json()["access_token"], r.json()["refresh_token"]]
    r = s.request(
        "POST",
        "/auth/token",
        tokens=True,
        data={**form, "grant_type": "refresh_token", "refresh_token": s.jwts[1]},
    )
    assert r.status_code == 200, r.text
    s.jwts.append(r.json()["access_token"])
    for token in s.jwts[::2]:
        r = s.request("POST", f"/v2/{repo}/blobs/uploads/", headers=bearer(token))
        assert r.status_code == 202, r.text

    # Failures, with a wrong password and a made-up token.
    for secret in (s.wrong, s.guessed_pat):
        bad = (s.username, secret)
        assert s.request("GET", "/v2/", auth=bad).status_code == 401
        assert s.request("GET", f"/v2/{repo}/tags/list", auth=bad).status_code == 401
        assert s.request("GET", "/api/v0/accounts/me", auth=bad).status_code == 401
        assert s.request("GET", "/auth/token", params=params, auth=bad).status_code == 401
        r = s.request(
            "POST", "/auth/token", data={**form, "username": s.username, "password": secret}
        )
        assert r.status_code == 401
    r = s.request(
        "POST",
        "/auth/token",
        data={"service": "wharf", "grant_type": "refresh_token", "refresh_token": s.guessed_pat},
    )
    assert r.status_code == 401
    # A failed and a successful password change.
    r = s.request(
        "PATCH",
        f"/api/v0/accounts/{s.username}",
        auth=user,
        json={"password": s.changed, "oldPassword": s.wrong},
    )
    assert r.status_code == 403, r.text
    r = s.request(
        "PATCH",
        f"/api/v0/accounts/{s.username}",
        auth=user,
        json={"password": s.changed, "oldPassword": s.password},
    )
    assert r.status_code == 200, r.text
    assert s.request("GET", "/v2/", auth=(s.username, s.changed)).status_code == 200

    # What an admin and the user can read back.
    for path in (
        "/api/v0/audit?limit=1000",
        f"/api/v0/accounts/{s.username}",
        "/api/v0/accounts?filter=all&pageSize=1000",
        f"/api/v0/api_tokens?username={s.username}",
        f"/api/v0/api_tokens/{s.hashed_pat}",
    ):
        r = s.request("GET", path, auth=server.auth)
        assert r.status_code == 200, (path, r.text)
    r = s.request("GET", "/api/v0/api_tokens", auth=(s.username, s.changed))
    assert r.status_code == 200 and len(r.json()) == 1
    admin.close()
    return s


def leaks(text: str, found: dict[str, str]) -> list[str]:
    return [label for label, secret in found.items() if secret and secret in text]


def test_secrets_are_not_logged(session: Session, noisy_server: WharfServer):
    assert noisy_server.log_path is not None
    log = noisy_server.log_path.read_text(errors="replace")
    # The log did record the traffic (so an absence below means something).
    assert '"GET /v2/ HTTP/1.1" 200' in log
    assert '"GET /v2/ HTTP/1.1" 401' in log
    assert "/auth/token" in log
    assert '"POST /api/v0/api_tokens HTTP/1.1" 201' in log
    assert leaks(log, session.secrets()) == []


def test_secrets_are_not_in_the_audit_trail(session: Session, noisy_server: WharfServer):
    r = httpx.get(
        f"{noisy_server.url}/api/v0/audit", params={"limit": 1000}, auth=noisy_server.auth
    )
    events = r.json()
    mine = [e for e in events if session.username in (e["actor"], e["target"])]
    actions = {(e["action"], e["success"]) for e in mine}
    # The trail did record the logins, failures, token and password change.
    assert {
        ("login", True),
        ("login_failed", False),
        ("token_create", True),
        ("account_update", True),
    } <= actions, actions
    assert leaks(json.dumps(events), session.secrets()) == []


def test_secrets_are_not_echoed_in_responses(session: Session):
    found = session.secrets()
    for r in session.responses:
        text = r.text + json.dumps(dict(r.headers))
        assert leaks(text, found) == [], (r.request.method, str(r.request.url), r.text)
    # Token responses carry their own JWTs, but never a password or a PAT.
    passwords = {k: v for k, v in found.items() if not k.startswith("JWT")}
    for r in session.token_responses:
        assert leaks(r.text + json.dumps(dict(r.headers)), passwords) == []
    # The one place the PAT does appear: the response that created it.
    assert session.creation is not None
    assert session.creation.json()["token"] == session.pat


def test_secrets_are_not_stored_in_clear(session: Session, noisy_server: WharfServer):
    found = {
        k: v
        for k, v in session.secrets().items()
        if k in ("password", "wrong password", "changed password", "PAT", "PAT without prefix")
    }
    checked = 0
    for path in noisy_server.data_dir.rglob("*"):
        if path.is_file() and "blobs" not in path.parts:
            data = path.read_bytes()
            checked += 1
            assert [k for k, v in found.items() if v.encode() in data] == [], path
    # (On SQLite the store's files are among them; PostgreSQL's are checked below.)
    assert checked >= 1 or not noisy_server.db_url.startswith("sqlite")
    # The metadata store (SQLite files or a pg_dump) holds no secret in clear; the stored
    # token is its hash, as the API reports.
    db = metadata_db.dump(noisy_server.db_url)
    assert [k for k, v in found.items() if v.encode() in db] == []
    assert session.hashed_pat.encode() in db
