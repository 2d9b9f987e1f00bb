"""Authentication on every route: every operation of the management API's OpenAPI document and
every route of the registry's route table, anonymous, as a non-admin, and with bearer tokens."""

from __future__ import annotations

import re
import secrets
from typing import Any

import httpx
import pytest

from wharf.registry import routes

from .helpers import access_token, bearer, challenge_params, error_code

# Operations anonymous callers may use: browsing repositories, like anonymous pulls (public
# repositories only; a private one answers like a missing one, see test_probing).
ANONYMOUS_BROWSE = {
    ("GET", "/api/v0/repositories"),
    ("GET", "/api/v0/repositories/{namespace}"),
    ("GET", "/api/v0/repositories/{namespace}/{repo}"),
    ("GET", "/api/v0/repositories/{namespace}/{repo}/tags"),
    ("GET", "/api/v0/repositories/{namespace}/{repo}/tags/{tag}"),
    ("GET", "/api/v0/repositories/{namespace}/{repo}/teamAccess"),
}

# Operations only system administrators may perform, with a body that would otherwise work.
ADMIN_ONLY: list[tuple[str, str, Any, dict]] = [
    ("GET", "/api/v0/meta/settings", None, {}),
    ("POST", "/api/v0/meta/settings", {"anonymousPull": False}, {}),
    ("GET", "/api/v0/meta/settings/ldap", None, {}),
    (
        "PUT",
        "/api/v0/meta/settings/ldap",
        {"enabled": True, "config": {"url": "ldap://127.0.0.1:1"}},
        {},
    ),
    ("POST", "/api/v0/meta/settings/ldap/check", None, {}),
    ("POST", "/api/v0/meta/settings/ldap/sync", None, {}),
    ("GET", "/api/v0/audit", None, {}),
    ("POST", "/api/v0/accounts", {"name": "intruder", "password": "intruder-pw-1"}, {}),
    ("POST", "/api/v0/accounts", {"name": "intruder-org", "isOrg": True}, {}),
    ("DELETE", "/api/v0/accounts/{bob}", None, {}),
    ("PATCH", "/api/v0/accounts/{bob}", {"isActive": False}, {}),
    ("PATCH", "/api/v0/accounts/{bob}", {"password": "taken-over-1"}, {}),
    ("PATCH", "/api/v0/accounts/{self}", {"isAdmin": True}, {}),
    ("GET", "/api/v0/api_tokens", None, {"username": "{bob}"}),
    ("POST", "/api/v0/api_tokens", {"tokenLabel": "x"}, {"username": "{bob}"}),
    ("DELETE", "/api/v0/api_tokens", None, {"username": "{bob}"}),
    ("PUT", "/api/v0/accounts/{org}/members/{self}", {"isOwner": True}, {}),
    ("POST", "/api/v0/accounts/{org}/teams", {"name": "mine"}, {}),
    ("PUT", "/api/v0/accounts/{org}/teams/readers/members/{self}", None, {}),
    ("PUT", "/api/v0/repositoryNamespaces/{org}/teamAccess/readers", {"accessLevel": "admin"}, {}),
    ("PUT", "/api/v0/repositories/{org}/app/teamAccess/readers", {"accessLevel": "admin"}, {}),
    ("DELETE", "/api/v0/repositories/{org}/app/teamAccess/readers", None, {}),
    ("PATCH", "/api/v0/repositories/{org}/app", {"visibility": "public"}, {}),
    ("DELETE", "/api/v0/repositories/{org}/app", None, {}),
    ("GET", "/api/v0/jobs", None, {}),
    ("POST", "/api/v0/jobs", {"action": "onlinegc", "parameters": {"dryRun": True}}, {}),
    ("GET", "/api/v0/crons", None, {}),
    ("POST", "/api/v0/crons", {"action": "onlinegc", "schedule": "0 4 * * *"}, {}),
    ("DELETE", "/api/v0/crons/jobhistorycleanup", None, {}),
    ("GET", "/api/v0/workers", None, {}),
]


@pytest.fixture(scope="module")
def openapi(wharf_server) -> dict:
    r = httpx.get(f"{wharf_server.url}/api/v0/openapi.json")
    assert r.status_code == 200
    return r.json()


def operations(openapi: dict) -> list[tuple[str, str, dict]]:
    ops = [
        (method.upper(), path, op)
        for path, item in openapi["paths"].items()
        for method, op in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]
    assert len(ops) > 40, "the OpenAPI document lists fewer operations than expected"
    return ops


def resolve(openapi: dict, schema: dict) -> dict:
    while "$ref" in schema:
        schema = openapi["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "anyOf" in schema:
        schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
    return schema


def plausible_value(openapi: dict, name: str, schema: dict) -> Any:
    schema = resolve(openapi, schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "boolean":
        return False
    if kind == "integer":
        return max(schema.get("minimum", 1), 30)
    if kind == "object":
        return {}
    if name == "password":
        return "plausible-password-1"
    return f"x{secrets.token_hex(3)}"


def plausible_body(openapi: dict, op: dict) -> Any:
    """A body the operation would accept from an authorised caller (required fields)."""
    content = op.get("requestBody", {}).get("content", {})
    if "application/json" not in content:
        return None
    schema = resolve(openapi, content["application/json"]["schema"])
    props = schema.get("properties", {})
    return {key: plausible_value(openapi, key, props[key]) for key in schema.get("required", [])}


def fill(path: str, world) -> str:
    values = {
        "name": world.bob.name,
        "org": world.org,
        "username": world.carol.name,
        "team": "readers",
        "user": world.carol.name,
        "namespace": world.bob.name,
        "repo": "private",
        "tag": "v1",
        "hashed": "0" * 64,
        "job_id": "00000000-0000-4000-8000-000000000000",
        "action": "onlinegc",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def test_anonymous_is_asked_to_authenticate_everywhere(wharf_server, world, openapi):
    seen = []
    with httpx.Client(base_url=wharf_server.url) as anon:
        for method, template, op in operations(openapi):
            path = fill(template, world)
            r = anon.request(method, path, json=plausible_body(openapi, op))
            seen.append((method, template))
            if (method, template) in ANONYMOUS_BROWSE:
                assert r.status_code in (200, 403, 404), (method, path, r.text)
                assert world.private.repository not in r.text or r.status_code == 404
                assert b"wharf_pat_" not in r.content
                continue
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert error_code(r) == "NOT_AUTHENTICATED", (method, path, r.text)
            assert r.headers.get("www-authenticate", "").startswith("Basic "), (method, path)
        # Anonymous browsing shows public repositories only.
        r = anon.get(f"/api/v0/repositories/{world.bob.name}", params={"pageSize": 1000})
        names = [repo["fullName"] for repo in r.json()]
        assert world.public.repository in names
        assert world.private.repository not in names
    assert set(seen) >= ANONYMOUS_BROWSE, "an anonymous route is no longer in the document"


def test_wrong_password_is_refused_everywhere(wharf_server, world, openapi):
    user = world.admin.user("wrongpw")
    for index, (method, template, op) in enumerate(operations(openapi)):
        # Failures count towards the login throttle per (user, address): spread them out.
        transport = httpx.HTTPTransport(local_address=f"127.0.1.{1 + index // 5}")
        with httpx.Client(
            base_url=wharf_server.url, auth=(user.name, "not-the-password"), transport=transport
        ) as c:
            r = c.request(method, fill(template, world), json=plausible_body(openapi, op))
        assert r.status_code == 401, (method, template, r.text)
        assert error_code(r) == "NOT_AUTHENTICATED"
        assert r.headers["www-authenticate"].startswith("Basic ")


def test_non_admin_is_refused_admin_operations(wharf_server, world, openapi):
    alice = world.alice
    names = {"bob": world.bob.name, "org": world.org, "self": alice.name}
    before = world.admin.http.get("/api/v0/meta/settings").json()
    documented = {(m, p) for m, p, _ in operations(openapi)}
    with alice.client() as c:
        for method, template, body, params in ADMIN_ONLY:
            path = template.format(**names)
            query = {k: v.format(**names) for k, v in params.items()}
            r = c.request(method, path, json=body, params=query)
            assert r.status_code in (403, 404), (method, path, r.status_code, r.text)
            assert error_code(r) in ("NOT_AUTHORIZED", "NO_SUCH_REPOSITORY"), r.text
            generic = re.sub(r"/api/v0/accounts/[^/]+$", "/api/v0/accounts/{name}", path)
            assert any(
                re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", p), generic)
                for m, p in documented
                if m == method
            ), (method, path)
        me = c.get("/api/v0/accounts/me").json()
        assert me["isAdmin"] is False
    admin = world.admin.http
    assert admin.get("/api/v0/meta/settings").json() == before
    assert admin.get("/api/v0/accounts/intruder").status_code == 404
    assert admin.get("/api/v0/accounts/intruder-org").status_code == 404
    assert admin.get(f"/api/v0/accounts/{world.bob.name}").json()["isActive"] is True
    assert httpx.get(f"{wharf_server.url}/v2/", auth=world.bob.auth).status_code == 200
    assert admin.get(f"/api/v0/accounts/{world.org}/teams/mine").status_code == 404
    r = admin.get(f"/api/v0/repositories/{world.org}/app/teamAccess")
    assert [(g["team"]["name"], g["accessLevel"]) for g in r.json()["teamAccessList"]] == [
        ("readers", "read-only")
    ]
    assert admin.get(f"/api/v0/repositories/{world.org}/app").json()["visibility"] == "private"
    r = admin.get("/api/v0/api_tokens", params={"username": world.bob.name})
    assert all(t["tokenLabel"] != "x" for t in r.json())
    # carol, a member of the organisation but no owner, may not manage it either.
    with world.carol.client() as c:
        r = c.post(f"/api/v0/accounts/{world.org}/teams", json={"name": "carols"})
        assert r.status_code == 403, r.text
        r = c.put(
            f"/api/v0/repositories/{world.org}/app/teamAccess/readers",
            json={"accessLevel": "read-write"},
        )
        assert r.status_code in (403, 404), r.text
        r = c.put(
            f"/api/v0/accounts/{world.org}/members/{world.carol.name}", json={"isOwner": True}
        )
        assert r.status_code == 403, r.text


def test_bearer_tokens_are_refused_on_the_management_api(wharf_server, world):
    admin_token = access_token(
        wharf_server, [f"repository:{world.private.repository}:pull"], world.admin.server.auth
    )
    user_token = access_token(wharf_server, ["registry:catalog:*"], world.alice.auth)
    for token, method, path, body in [
        (user_token, "GET", "/api/v0/accounts/me", None),
        (user_token, "GET", "/api/v0/api_tokens", None),
        (user_token, "POST", "/api/v0/api_tokens", {"tokenLabel": "from-jwt"}),
        (admin_token, "GET", "/api/v0/meta/settings", None),
        (admin_token, "GET", f"/api/v0/repositories/{world.private.repository}", None),
        (admin_token, "POST", "/api/v0/accounts", {"name": "viajwt", "password": "viajwt-pw-1"}),
    ]:
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = httpx.request(
                method,
                f"{wharf_server.url}{path}",
                json=body,
                headers={"Authorization": f"{scheme} {token}"},
            )
            assert r.status_code == 401, (path, scheme, r.text)
            assert error_code(r) == "NOT_AUTHENTICATED"
            assert r.headers["www-authenticate"].startswith("Basic ")
    assert world.admin.http.get("/api/v0/accounts/viajwt").status_code == 404
    tokens = world.admin.http.get("/api/v0/api_tokens", params={"username": world.alice.name})
    assert all(t["tokenLabel"] != "from-jwt" for t in tokens.json())
    # The same token does work where it belongs.
    r = httpx.get(f"{wharf_server.url}/v2/_catalog", headers=bearer(user_token))
    assert r.status_code == 200


def registry_requests(world) -> list[tuple[str, str, str]]:
    """(method, concrete path, access) for every method of every route in the route table,
    aimed at bob's private repository."""
    values = {
        "name": world.private.repository,
        "reference": "v1",
        "digest": world.private.layer_digest,
        "upload_id": "0b8a4a40-9f3e-4c5e-8d6b-2f3a1c0e9d7a",
    }
    found = []
    for route in routes.ROUTES:
        pattern = route.pattern.pattern
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: values[m.group(1)], pattern)
        path = path.strip("^$").replace("/?", "/")
        assert route.pattern.match(path), (pattern, path)
        for method, (_, access) in route.methods.items():
            found.append((method, path, access))
    return found


def test_anonymous_registry_routes_answer_with_a_bearer_challenge(wharf_server, world):
    actions = {"pull": "pull", "push": "pull,push", "delete": "delete"}
    realm = f"http://{wharf_server.host}/auth/token"
    requests = registry_requests(world)
    assert {access for _, _, access in requests} == {
        routes.LOGIN,
        routes.CATALOG,
        *actions,
    }, "a route declares an access this test does not know"
    with httpx.Client(base_url=wharf_server.url) as anon:
        for method, path, access in requests:
            r = anon.request(method, path)
            if access == routes.CATALOG:
                # Anonymous pulls are on: the catalog lists public repositories only.
                assert r.status_code == 200, r.text
                names = r.json()["repositories"]
                assert world.public.repository in names
                assert world.private.repository not in names
                continue
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            if method != "HEAD":
                assert error_code(r) == "UNAUTHORIZED"
            params = challenge_params(r.headers["www-authenticate"])
            assert params["realm"] == realm
            assert params["service"] == "wharf"
            if access == routes.LOGIN:
                assert "scope" not in params
            else:
                assert params["scope"] == f"repository:{world.private.repository}:{actions[access]}"
            assert "error" not in params
    # With a wrong password the challenge says the credentials were the problem.
    transport = httpx.HTTPTransport(local_address="127.0.0.4")
    with httpx.Client(base_url=wharf_server.url, transport=transport) as c:
        r = c.get(
            f"/v2/{world.private.repository}/tags/list", auth=(world.alice.name, "not-the-pw")
        )
    assert r.status_code == 401
    assert challenge_params(r.headers["www-authenticate"])["error"] == "invalid_token"
