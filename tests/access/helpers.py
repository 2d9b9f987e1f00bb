"""Building blocks of the access-control tests: accounts, organisations, teams, grants and
repositories made through the management API as an administrator, and checks of its errors.

Everything goes over HTTP to a real `wharf serve`; names are unique per call so that tests can
share one server.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

API = "/api/v0"


def unique(prefix: str = "u") -> str:
    """An account or repository name no other test uses (lowercase letters and digits)."""
    return f"{prefix}{secrets.token_hex(5)}"


@dataclass
class User:
    """A non-admin user with an open client (Basic auth with the password)."""

    name: str
    password: str
    client: httpx.Client
    extra_clients: list[httpx.Client] = field(default_factory=list)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.name, self.password)

    def with_secret(self, secret: str) -> httpx.Client:
        """Another client of this user's that authenticates with `secret` (e.g. a token)."""
        c = httpx.Client(base_url=str(self.client.base_url), auth=(self.name, secret), timeout=60)
        self.extra_clients.append(c)
        return c

    def close(self) -> None:
        self.client.close()
        for c in self.extra_clients:
            c.close()


def open_client(base_url: str, auth: tuple[str, str] | None) -> httpx.Client:
    return httpx.Client(base_url=base_url, auth=auth, timeout=60, follow_redirects=False)


def create_user(admin: httpx.Client, name: str | None = None, **extra: Any) -> User:
    """Create a user as admin; the returned client is the user's own."""
    name = name or unique("u")
    password = extra.pop("password", None) or secrets.token_urlsafe(12)
    r = admin.post(f"{API}/accounts", json={"name": name, "password": password, **extra})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == name and body["isOrg"] is False
    return User(name, password, open_client(str(admin.base_url), (name, password)))


def create_org(admin: httpx.Client, name: str | None = None, **extra: Any) -> str:
    name = name or unique("org")
    r = admin.post(f"{API}/accounts", json={"name": name, "isOrg": True, **extra})
    assert r.status_code == 201, r.text
    assert r.json()["isOrg"] is True
    return name


def set_member(client: httpx.Client, org: str, user: str, *, owner: bool = False) -> None:
    r = client.put(f"{API}/accounts/{org}/members/{user}", json={"isOwner": owner})
    assert r.status_code == 200, r.text
    assert r.json()["isOwner"] is owner


def create_team(client: httpx.Client, org: str, team: str | None = None, **extra: Any) -> str:
    team = team or unique("team")
    r = client.post(f"{API}/accounts/{org}/teams", json={"name": team, **extra})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == team and r.json()["orgName"] == org
    return team


def add_team_member(client: httpx.Client, org: str, team: str, user: str) -> None:
    r = client.put(f"{API}/accounts/{org}/teams/{team}/members/{user}")
    assert r.status_code == 200, r.text


def create_repo(client: httpx.Client, namespace: str, name: str | None = None, **extra: Any) -> str:
    """Create a repository through the API; return its full name."""
    name = name or unique("r")
    r = client.post(f"{API}/repositories/{namespace}", json={"name": name, **extra})
    assert r.status_code == 201, r.text
    assert r.json()["fullName"] == f"{namespace}/{name}"
    return f"{namespace}/{name}"


def grant_repo(client: httpx.Client, full_name: str, team: str, level: str) -> None:
    r = client.put(f"{API}/repositories/{full_name}/teamAccess/{team}", json={"accessLevel": level})
    assert r.status_code == 200, r.text
    assert r.json()["accessLevel"] == level


def grant_namespace(client: httpx.Client, org: str, team: str, level: str) -> None:
    r = client.put(
        f"{API}/repositoryNamespaces/{org}/teamAccess/{team}", json={"accessLevel": level}
    )
    assert r.status_code == 200, r.text
    assert r.json()["accessLevel"] == level


def effective_level(client: httpx.Client, user: str, full_name: str) -> str:
    r = client.get(f"{API}/accounts/{user}/repositoryAccess/{full_name}")
    assert r.status_code == 200, r.text
    assert r.json()["user"] == user and r.json()["repository"] == full_name
    return r.json()["accessLevel"]


@dataclass
class OrgSetup:
    """An organisation with one team whose only member is `member`."""

    org: str
    team: str
    member: User


def org_with_team_member(admin: httpx.Client, member: User) -> OrgSetup:
    org = create_org(admin)
    set_member(admin, org, member.name)
    team = create_team(admin, org)
    add_team_member(admin, org, team, member.name)
    return OrgSetup(org, team, member)


# -- errors -----------------------------------------------------------------------------------


def api_error(r: httpx.Response, status: int, code: str) -> str:
    """The management API's error shape {"errors": [{"code", "message"}]}; returns the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/json", r.headers
    body = r.json()
    assert list(body) == ["errors"], body
    assert isinstance(body["errors"], list) and len(body["errors"]) >= 1, body
    first = body["errors"][0]
    assert set(first) == {"code", "message"}, first
    assert first["code"] == code, body
    assert isinstance(first["message"], str) and first["message"], body
    return first["message"]


def registry_code(r: httpx.Response) -> str:
    """The first error code of a /v2/ error response."""
    return r.json()["errors"][0]["code"]


# -- /v2/ and /auth/token -----------------------------------------------------------------------


def can_pull(client: httpx.Client, full_name: str, tag: str = "latest") -> int:
    """Status of a manifest GET (200 when pullable)."""
    return client.get(
        f"/v2/{full_name}/manifests/{tag}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).status_code


def try_push_blob(client: httpx.Client, full_name: str) -> httpx.Response:
    """Start an upload: the first step of every push (202 when allowed)."""
    return client.post(f"/v2/{full_name}/blobs/uploads/", headers={"Content-Length": "0"})


def token_get(
    client: httpx.Client, scopes: list[str], auth: Any = None, **params: str
) -> httpx.Response:
    query: list[tuple[str, str]] = [("service", "wharf"), *[("scope", s) for s in scopes]]
    query += list(params.items())
    kwargs: dict[str, Any] = {"params": query}
    if auth is not None:
        kwargs["auth"] = auth
    return client.get("/auth/token", **kwargs)


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def access_of(token: str) -> dict[tuple[str, str], list[str]]:
    """{(type, name): sorted actions} of a JWT's `access` claim."""
    return {(a["type"], a["name"]): sorted(a["actions"]) for a in claims(token)["access"]}


def bearer(token: str) -> dict[str, Any]:
    """Request arguments that authenticate with a bearer token instead of the client's own
    credentials (`auth=None`: httpx would otherwise replace the header with Basic)."""
    return {"headers": {"Authorization": f"Bearer {token}"}, "auth": None}
