"""The whole HTTP application of one replica: the registry API under /v2/, the token
endpoint /auth/token, the management API under /api/v0/ and the CA certificate at /ca; and
the application of a plain-HTTP listener that only redirects to HTTPS."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from wharf.auth.endpoint import TokenEndpoint
from wharf.config import Settings, split_addr
from wharf.registry.app import _HOST, RegistryApp
from wharf.services import Services, build_services

# On every response of both listeners: browsers ignore it over plain HTTP, and a response
# that lacks it because of where it came from would be one more thing to reason about.
HSTS = (b"strict-transport-security", b"max-age=31536000")
# Also on every response: no MIME sniffing, no framing (clickjacking), and a policy that runs
# nothing unless the response brings its own (the API's docs page does).
SECURITY_HEADERS = (
    HSTS,
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
)
DEFAULT_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
CA_PATH = "/ca"


def create_app(
    settings: Settings,
    services: Services | None = None,
    ca_pem: Callable[[], str | None] | None = None,
) -> ASGIApp:
    """`ca_pem` returns the CA certificate that clients of this replica's HTTPS listener
    should trust (served at /ca), or None when it serves no HTTPS."""
    services = services or build_services(settings)
    registry = RegistryApp(services.registry, services.auth, services.access)
    token_endpoint = TokenEndpoint(services.auth, services.access)
    # The management API (FastAPI, pydantic) is built on its first request: a worker that
    # only ever serves the registry does not pay for it.
    management: list[ASGIApp] = []
    not_found = json.dumps({"errors": [{"code": "NOT_FOUND", "message": "not found"}]}).encode()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        send = _with_security_headers(send)
        path = scope["path"]
        if path == CA_PATH:
            await _serve_ca(scope, send, ca_pem() if ca_pem else None)
            return
        registry_path = path == "/v2" or path.startswith("/v2/")
        has_nul = b"%00" in scope.get("query_string", b"") or (
            "\x00" in path and not registry_path  # the registry answers per parameter
        )
        if has_nul:
            # No parameter may hold a NUL byte (and PostgreSQL refuses them in text):
            # refused at the edge, in each API's error format.
            api = path.startswith("/api/")
            await _respond(send, 400, _NUL_API if api else _NUL_REGISTRY)
            return
        if path == "/v2" or path.startswith("/v2/"):
            await registry(scope, receive, send)
            return
        if path == "/auth/token":
            await token_endpoint(scope, receive, send)
            return
        if path.startswith("/api/v0/"):
            if b"%2f" in scope.get("raw_path", b"").lower():
                # An encoded slash would be decoded into a path parameter ("bob%2Fprivate" as
                # the namespace "bob/private"): no API path has one.
                await _not_found(send, not_found)
                return
            if not management:
                from wharf.api.app import create_api

                management.append(create_api(services))
            await management[0](scope, receive, send)
            return
        await _not_found(send, not_found)

    return app


def redirect_to_https(settings: Settings, app: ASGIApp) -> ASGIApp:
    """The application of a plain-HTTP listener when the replica serves HTTPS: every request
    is redirected (308, which keeps the method and body) to the same path over HTTPS, at the
    external URL when one is configured, else at the request's Host with the HTTPS port.
    /ca is served as is: clients fetch the CA before they can trust the HTTPS listener."""
    assert settings.https_addr
    https_host, https_port = split_addr(settings.https_addr)
    port = "" if https_port == 443 else f":{https_port}"
    external = settings.external_url
    if external and external.startswith("http://"):
        external = None  # an external URL over plain HTTP: a TLS proxy's business, not ours
    wildcard = https_host in ("0.0.0.0", "::", "")  # noqa: S104 - compared, not bound
    fallback = None if wildcard else _host_part(https_host)

    async def redirect(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == CA_PATH:
            await app(scope, receive, send)
            return
        send = _with_security_headers(send)
        if external:
            base = external
        else:
            host = _header(scope, b"host")
            # Never a Host that fails the registry's own check: it would be reflected into
            # the Location header verbatim.
            name = _strip_port(host) if host is not None and _HOST.match(host) else fallback
            if name is None:
                await _respond(send, 400, _BAD_HOST)
                return
            base = f"https://{name}{port}"
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        location = base.encode() + target + (b"?" + query if query else b"")
        headers = [(b"location", location), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 308, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return redirect


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.rsplit(":", 1)[0]


def _host_part(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve_ca(scope: Scope, send: Send, pem: str | None) -> None:
    if scope["method"] not in ("GET", "HEAD"):
        body = json.dumps(
            {"errors": [{"code": "UNSUPPORTED", "message": "GET or HEAD only"}]}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"allow", b"GET, HEAD")]
        await send({"type": "http.response.start", "status": 405, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    if pem is None:
        await _respond(send, 404, _NO_CA, head=scope["method"] == "HEAD")
        return
    await _respond(
        send, 200, pem.encode(), b"application/x-pem-file", head=scope["method"] == "HEAD"
    )


async def _not_found(send: Send, body: bytes) -> None:
    await _respond(send, 404, body)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    *,
    head: bool = False,
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


_NO_CA = json.dumps(
    {"errors": [{"code": "NOT_FOUND", "message": "this replica serves no HTTPS: no CA to trust"}]}
).encode()
_BAD_HOST = json.dumps(
    {
        "errors": [
            {
                "code": "UNSUPPORTED",
                "message": "plain HTTP only redirects to HTTPS, and the request's Host header "
                "is not one to redirect to: use https:// directly",
            }
        ]
    }
).encode()


_NUL_REGISTRY = json.dumps(
    {"errors": [{"code": "UNSUPPORTED", "message": "NUL bytes are not allowed in URLs"}]}
).encode()
_NUL_API = json.dumps(
    {"errors": [{"code": "INVALID_PARAMETERS", "message": "NUL bytes are not allowed in URLs"}]}
).encode()


def _with_security_headers(send: Send) -> Send:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", []), *SECURITY_HEADERS]
            if not any(name.lower() == DEFAULT_CSP[0] for name, _ in headers):
                headers.append(DEFAULT_CSP)
            message["headers"] = headers
        await send(message)

    return wrapped


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
