"""The API describes itself: an OpenAPI document and a Swagger UI that works offline."""

from __future__ import annotations

import re

from .helpers import API

MAIN_PATHS = {
    "/api/v0/accounts",
    "/api/v0/accounts/me",
    "/api/v0/accounts/{name}",
    "/api/v0/accounts/{org}/members/{username}",
    "/api/v0/accounts/{org}/teams",
    "/api/v0/accounts/{org}/teams/{team}/members/{username}",
    "/api/v0/accounts/{user}/repositoryAccess/{namespace}/{repo}",
    "/api/v0/repositories",
    "/api/v0/repositories/{namespace}",
    "/api/v0/repositories/{namespace}/{repo}",
    "/api/v0/repositories/{namespace}/{repo}/tags",
    "/api/v0/repositories/{namespace}/{repo}/tags/{tag}",
    "/api/v0/repositories/{namespace}/{repo}/teamAccess/{team}",
    "/api/v0/repositoryNamespaces/{namespace}/teamAccess/{team}",
    "/api/v0/api_tokens",
    "/api/v0/api_tokens/{hashed}",
    "/api/v0/meta/settings",
    "/api/v0/audit",
}


def test_openapi_document(anon):
    r = anon.get(f"{API}/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["title"]
    assert set(doc["paths"]) >= MAIN_PATHS, MAIN_PATHS - set(doc["paths"])
    assert {"get", "post"} <= set(doc["paths"]["/api/v0/accounts"])
    assert {"get", "patch", "delete"} <= set(
        doc["paths"]["/api/v0/repositories/{namespace}/{repo}"]
    )
    for path, methods in doc["paths"].items():
        assert path.startswith("/api/v0/"), path
        for method, op in methods.items():
            assert op.get("summary"), (method, path)
    # The request bodies are described, e.g. what a new account takes.
    schemas = doc["components"]["schemas"]
    assert {"name", "isOrg", "password"} <= set(schemas["NewAccount"]["properties"])
    assert schemas["Access"]["properties"]["accessLevel"]["enum"] == [
        "read-only",
        "read-write",
        "admin",
    ]


def test_swagger_ui_uses_only_local_assets(anon):
    r = anon.get(f"{API}/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert f"{API}/openapi.json" in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets, html
    assert not re.search(r"https?://", html), "the page must not load anything from elsewhere"
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith(f"{API}/docs/static/"), asset
        got = anon.get(asset)
        assert got.status_code == 200, asset
        assert len(got.content) > 100, asset
    js = anon.get(next(a for a in assets if a.endswith(".js")))
    assert "javascript" in js.headers["content-type"]
    assert "SwaggerUIBundle" in js.text
    assert anon.get(f"{API}/docs/static/nothing-here.js").status_code == 404


def test_operations_document_the_errors_they_answer(anon):
    """Errors are 400/401/403/404/409/413/429 in the API's error format, never 422."""
    doc = anon.get(f"{API}/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert set(schemas["Error"]["properties"]) == {"errors"}
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            responses = op["responses"]
            assert "422" not in responses, (method, path)
            assert {"401", "429"} <= set(responses), (method, path)
            if "{" in path:
                assert {"400", "404"} <= set(responses), (method, path)
            if "requestBody" in op:
                assert {"400", "413"} <= set(responses), (method, path)
            for status, response in responses.items():
                if status >= "400":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
    create = doc["paths"]["/api/v0/accounts"]["post"]["responses"]
    assert {"201", "403", "409"} <= set(create)
    assert create["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Account"
    }
    assert doc["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
