"""Errors of the management services, with the DTR-style codes the API answers with."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "INVALID_PARAMETERS"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotAuthenticated(ServiceError):
    status, code = 401, "NOT_AUTHENTICATED"


class NotAuthorized(ServiceError):
    status, code = 403, "NOT_AUTHORIZED"


class NoSuch(ServiceError):
    """404; `code` names what is missing (NO_SUCH_ACCOUNT, NO_SUCH_REPOSITORY, ...)."""

    status, code = 404, "NOT_FOUND"


class Conflict(ServiceError):
    status, code = 409, "CONFLICT"


class Invalid(ServiceError):
    status, code = 400, "INVALID_PARAMETERS"
