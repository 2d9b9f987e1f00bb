"""The token service's HTTP endpoint, `/auth/token` (Docker token authentication).

GET  /auth/token?service=&scope=...   Basic credentials (password or access token) or none
POST /auth/token                      OAuth2 form: grant_type=password | refresh_token

Both answer with a short-lived JWT whose `access` claim holds only what the caller is
granted. As in Docker's token servers, a caller with no access to a scope still gets a token
(with empty actions): whether a repository exists is never revealed here.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from anyio import to_thread
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response

from wharf.auth.access import AccessService
from wharf.auth.identity import ANONYMOUS, Identity
from wharf.auth.service import AuthService, InvalidCredentials, TooManyAttempts, parse_basic
from wharf.auth.tokens import SERVICE, parse_scopes
from wharf.bodies import BodyTooLarge, ClientDisconnect, read_body, replay
from wharf.faults import log_failure
from wharf.registry.errors import InternalError, fault_error

log = logging.getLogger("wharf.auth")

MAX_SCOPES = 64
# The login form: a few short fields and up to MAX_SCOPES scopes. It is read before anyone is
# authenticated (the credentials are in it), so it is small and bounded.
MAX_FORM_BYTES = 64 << 10
MAX_FORM_FIELDS = MAX_SCOPES + 16
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**_NO_STORE, **(headers or {})},
    )


def _registry_error(code: str, message: str, status: int, **headers: str) -> Response:
    return _json({"errors": [{"code": code, "message": message}]}, status, headers)


def _oauth_error(
    error: str, description: str, status: int = 400, headers: dict[str, str] | None = None
) -> Response:
    return _json({"error": error, "error_description": description}, status, headers)


class TokenEndpoint:
    def __init__(self, auth: AuthService, access: AccessService) -> None:
        self.auth = auth
        self.access = access

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        request = Request(scope, receive)
        try:
            if request.method == "GET":
                response = await self.get(request)
            elif request.method == "POST":
                try:
                    response = await self.post(request)
                except ClientDisconnect:
                    return
            else:
                response = _registry_error(
                    "UNSUPPORTED", "method not allowed", 405, Allow="GET, POST"
                )
        except Exception as e:
            # A database that cannot be reached is said so (503), in the registry's format,
            # which clients show; anything else is a bug, with its traceback in the log.
            fault = log_failure(log, f"{request.method} {request.url.path}", e)
            error = InternalError() if fault is None else fault_error(fault)
            response = Response(
                error.body(),
                status_code=error.status,
                media_type="application/json",
                headers={**_NO_STORE, **error.headers},
            )
        await response(scope, receive, send)

    def _issue(self, identity: Identity, scopes: list[str], refresh: str | None) -> dict:
        parsed = parse_scopes(scopes)[:MAX_SCOPES]
        access = self.access.grant(identity, parsed)
        lifetime = self.access.policy.settings().tokenLifetimeSeconds
        token, expires_in, issued_at = self.auth.tokens.issue(
            identity.username, access, lifetime, user_id=identity.user_id
        )
        body = {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": datetime.fromtimestamp(issued_at, UTC).isoformat().replace("+00:00", "Z"),
            "scope": " ".join(
                f"{a['type']}:{a['name']}:{','.join(a['actions'])}"
                for a in access  # type: ignore[arg-type]
            ),
        }
        if refresh:
            body["refresh_token"] = refresh
        return body

    async def get(self, request: Request) -> Response:
        service = request.query_params.get("service")
        if service is not None and service != SERVICE:
            return _registry_error("DENIED", f"unknown service {service!r}", 400)
        header = request.headers.get("authorization")
        client = request.client.host if request.client else None
        identity = ANONYMOUS
        secret = ""
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic":
                return _registry_error("UNAUTHORIZED", "use Basic credentials", 401)
            try:
                username, secret = parse_basic(value)
                identity = await to_thread.run_sync(self.auth.login, username, secret, client)
            except InvalidCredentials as e:
                return _registry_error(
                    "UNAUTHORIZED", str(e), 401, **{"WWW-Authenticate": 'Basic realm="Wharf"'}
                )
            except TooManyAttempts as e:
                return _registry_error(
                    "TOOMANYREQUESTS", str(e), 429, **{"Retry-After": str(e.retry_after)}
                )
        elif not self.access.policy.settings().anonymousPull and request.query_params.get("scope"):
            # Without anonymous access a token could grant nothing; ask for credentials.
            return _registry_error(
                "UNAUTHORIZED",
                "authentication required",
                401,
                **{"WWW-Authenticate": 'Basic realm="Wharf"'},
            )
        refresh = None
        if identity.username and request.query_params.get("offline_token") == "true":
            fingerprint = await to_thread.run_sync(
                self.auth.credential_fingerprint, identity, secret
            )
            refresh = self.auth.tokens.issue_refresh(
                identity.username, fingerprint, identity.user_id
            )
        scopes = request.query_params.getlist("scope")
        body = await to_thread.run_sync(self._issue, identity, scopes, refresh)
        return _json(body)

    async def post(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("application/x-www-form-urlencoded"):
            return _oauth_error("invalid_request", "expected a form (x-www-form-urlencoded)")
        try:
            body = await read_body(request.scope, request.receive, MAX_FORM_BYTES)
            form = await Request(request.scope, replay(body, request.receive)).form(
                max_files=0, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_BYTES
            )
        except BodyTooLarge:
            return _oauth_error(
                "invalid_request", f"the form is larger than {MAX_FORM_BYTES} bytes"
            )
        except MultiPartException as e:
            return _oauth_error("invalid_request", f"the form is refused: {e.message}")
        service = form.get("service")
        if service is not None and service != SERVICE:
            return _oauth_error("invalid_request", f"unknown service {service!r}")
        grant_type = form.get("grant_type")
        client = request.client.host if request.client else None
        scopes = [str(s) for s in form.getlist("scope")]
        try:
            if grant_type == "password":
                username, secret = str(form.get("username", "")), str(form.get("password", ""))
                if not username:
                    return _oauth_error("invalid_request", "username is required")
                identity = await to_thread.run_sync(self.auth.login, username, secret, client)
                refresh = None
                if form.get("access_type") == "offline":
                    fingerprint = await to_thread.run_sync(
                        self.auth.credential_fingerprint, identity, secret
                    )
                    refresh = self.auth.tokens.issue_refresh(
                        identity.username or "", fingerprint, identity.user_id
                    )
            elif grant_type == "refresh_token":
                refresh = str(form.get("refresh_token", ""))
                identity = await to_thread.run_sync(self.auth.refresh, refresh)
            else:
                return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r}")
        except InvalidCredentials as e:
            return _oauth_error("invalid_grant", str(e), 401)
        except TooManyAttempts as e:
            return _oauth_error("invalid_grant", str(e), 429, {"Retry-After": str(e.retry_after)})
        body = await to_thread.run_sync(self._issue, identity, scopes, refresh)
        return _json(body)
