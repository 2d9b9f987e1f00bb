"""The management API application: routers, error format, OpenAPI and Swagger UI.

Errors use the registry's JSON shape with DTR's codes: {"errors": [{"code", "message"}]}.
Swagger UI is served from files installed with Wharf (fastapi-offline), so the page works
on machines without internet access.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from wharf import __version__
from wharf.api import accounts, jobs, meta, repositories, schemas, tokens
from wharf.api.deps import ApiError, error_response, service_error_response
from wharf.api.guard import BodyGuard
from wharf.faults import CANDIDATES as FAULT_CANDIDATES
from wharf.faults import RETRY_AFTER, fault_of
from wharf.management.errors import ServiceError
from wharf.services import Services

log = logging.getLogger("wharf.api")

PREFIX = "/api/v0"
SWAGGER_STATIC = Path(fastapi_offline.__file__).parent / "static"

_HTTP_CODES = {
    401: "NOT_AUTHENTICATED",
    403: "NOT_AUTHORIZED",
    404: "NOT_FOUND",
    405: "NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "REQUEST_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def create_api(services: Services) -> FastAPI:
    api = FastAPI(
        title="Wharf management API",
        version=__version__,
        description=(
            "Accounts, organizations, teams, repositories, access grants, access tokens and "
            "settings. Authenticate with HTTP Basic: a password or a personal access token."
        ),
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    api.state.services = services
    api.add_middleware(BodyGuard, services=services)
    for router in (accounts.router, repositories.router, tokens.router, meta.router, jobs.router):
        api.include_router(router)

    @api.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return service_error_response(exc)

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        code = "INVALID_JSON" if first.get("type") == "json_invalid" else "INVALID_PARAMETERS"
        return error_response(400, code, f"{where}: {first.get('msg', 'invalid input')}")

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "INTERNAL_ERROR", "internal error; the server log has details")

    async def _fault(request: Request, exc: Exception) -> JSONResponse:
        # Registered per type, not in the catch-all above: Starlette re-raises what reaches
        # that one, and the server would log a traceback for a full disk after all.
        fault = fault_of(exc)
        if fault is None:
            return await _internal(request, exc)
        log.error("%s %s: %s", request.method, request.url.path, fault)
        if fault.kind == "unavailable":
            headers = {"Retry-After": RETRY_AFTER}
            return error_response(503, "SERVICE_UNAVAILABLE", fault.message, headers)
        return error_response(507, "INSUFFICIENT_STORAGE", fault.message)

    for kind in FAULT_CANDIDATES:
        api.add_exception_handler(kind, _fault)

    @api.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "INVALID_PARAMETERS")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(api, request)}
        return error_response(exc.status_code, code, str(exc.detail), headers)

    docs, docs_policy = _docs_page()

    @api.get(f"{PREFIX}/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        return HTMLResponse(docs, headers={"Content-Security-Policy": docs_policy})

    api.mount(f"{PREFIX}/docs/static", StaticFiles(directory=SWAGGER_STATIC), name="swagger")

    def openapi() -> dict:
        if api.openapi_schema is None:
            doc = get_openapi(
                title=api.title,
                version=api.version,
                description=api.description,
                routes=api.routes,
            )
            api.openapi_schema = schemas.finish(doc)
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    return api


def _allowed_methods(api: FastAPI, request: Request) -> str:
    """The methods of the request's path, as the OpenAPI document lists them: each method is
    a route of its own, and the router names only the first route whose path matched. Where
    paths overlap (/accounts/me, /accounts/{name}), the one with fewer parameters is meant."""
    path = request.scope["path"]
    by_path: dict[str, set[str]] = {}
    for context in iter_route_contexts(api.routes):
        route = context.original_route
        if isinstance(route, Route) and route.methods and route.path_regex.fullmatch(path):
            by_path.setdefault(route.path, set()).update(route.methods)
        elif isinstance(route, Mount) and route.path_regex.fullmatch(path):  # Swagger UI files
            by_path.setdefault(route.path, set()).update({"GET", "HEAD"})
    if not by_path:
        return ""
    fewest = min(template.count("{") for template in by_path)
    return ", ".join(
        sorted(set().union(*(m for t, m in by_path.items() if t.count("{") == fewest)))
    )


def _docs_page() -> tuple[str, str]:
    """The Swagger UI page, and a Content-Security-Policy that lets it run only its own
    files and its one inline script, talk only to this server, and never be framed."""
    page = get_swagger_ui_html(
        openapi_url=f"{PREFIX}/openapi.json",
        title="Wharf API",
        swagger_js_url=f"{PREFIX}/docs/static/swagger-ui-bundle.js",
        swagger_css_url=f"{PREFIX}/docs/static/swagger-ui.css",
        swagger_favicon_url=f"{PREFIX}/docs/static/favicon.png",
        # No badge from the online validator: the page must work offline.
        swagger_ui_parameters={"validatorUrl": None},
    )
    html = bytes(page.body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    )
    policy = (
        f"default-src 'none'; script-src 'self' {hashes}; "
        # Swagger UI sets style attributes as it renders, and its CSS has data: images.
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return html, policy
