"""The whole HTTP application of one replica: the registry API under /v2/, the token
endpoint /auth/token, the management API under /api/v0/ and the CA certificate at /ca; and
the application of a plain-HTTP listener that only redirects to HTTPS."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from wharf.auth.endpoint import TokenEndpoint
from wharf.config import Settings, split_addr
from wharf.hosts import HostPolicy
from wharf.registry.app import RegistryApp
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
# Bytes no header value may hold: uvicorn refuses to send such a response and drops the
# connection without an answer (while the access log says 200).
_UNSAFE_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

log = logging.getLogger("wharf")


def create_app(
    settings: Settings,
    services: Services | None = None,
    ca_pem: Callable[[], str | None] | None = None,
    hosts: HostPolicy | None = None,
) -> ASGIApp:
    """`ca_pem` returns the CA certificate that clients of this replica's HTTPS listener
    should trust (served at /ca), or None when it serves no HTTPS. `hosts` says which Host
    headers are answered (default: the settings' policy, without certificate names)."""
    services = services or build_services(settings)
    hosts = hosts or HostPolicy(settings)
    registry = RegistryApp(services.registry, services.auth, services.access, hosts.base_url)
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
        if hosts.host(scope) is None:
            # A Host this replica does not answer for: no URL is ever built from it.
            api = path.startswith("/api/")
            await _respond(send, 400, _UNKNOWN_HOST_API if api else _UNKNOWN_HOST)
            return
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

    return _safe_header_values(app)


def redirect_to_https(settings: Settings, app: ASGIApp, hosts: HostPolicy | None = None) -> ASGIApp:
    """The application of a plain-HTTP listener when the replica serves HTTPS: every request
    is redirected (308, which keeps the method and body) to the same path over HTTPS, at the
    external URL when one is configured, else at the request's Host (one the replica answers
    for, see hosts.py) with the HTTPS port. /ca is served as is: clients fetch the CA before
    they can trust the HTTPS listener."""
    assert settings.https_addr
    _, https_port = split_addr(settings.https_addr)
    port = "" if https_port == 443 else f":{https_port}"
    external = settings.external_url
    if external and external.startswith("http://"):
        # Clients reach the registry over plain HTTP at that name: HTTPS is at the same name,
        # on this replica's HTTPS port.
        external = f"https://{_strip_port(external.removeprefix('http://'))}{port}"
    hosts = hosts or HostPolicy(settings)

    async def redirect(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == CA_PATH:
            await app(scope, receive, send)
            return
        send = _with_security_headers(send)
        if external:
            base = external
        else:
            host = hosts.host(scope)
            if host is None:
                await _respond(send, 400, _UNKNOWN_HOST)
                return
            base = f"https://{_strip_port(host)}{port}"
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        location = base.encode() + target + (b"?" + query if query else b"")
        headers = [(b"location", location), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 308, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    return redirect


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.rsplit(":", 1)[0]


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
_UNKNOWN_HOST_MESSAGE = (
    "this registry does not answer for the request's Host: use its configured address "
    "(the operator can add names with allowed_hosts)"
)
_UNKNOWN_HOST = json.dumps(
    {"errors": [{"code": "UNSUPPORTED", "message": _UNKNOWN_HOST_MESSAGE}]}
).encode()
_UNKNOWN_HOST_API = json.dumps(
    {"errors": [{"code": "INVALID_PARAMETERS", "message": _UNKNOWN_HOST_MESSAGE}]}
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


def _safe_header_values(app: ASGIApp) -> ASGIApp:
    """Last line of defence for values echoed into headers (a name stored before it was
    validated): control characters are sent percent-encoded rather than the connection lost."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        async def checked(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                if any(_UNSAFE_VALUE.search(value) for _, value in headers):
                    message["headers"] = [(name, _escape(name, value)) for name, value in headers]
            await send(message)

        await app(scope, receive, checked if scope["type"] == "http" else send)

    return guarded


def _escape(name: bytes, value: bytes) -> bytes:
    if not _UNSAFE_VALUE.search(value):
        return value
    log.warning("control characters in the %s response header, sent percent-encoded", name)
    return _UNSAFE_VALUE.sub(lambda m: b"%%%02X" % m.group()[0], value)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
