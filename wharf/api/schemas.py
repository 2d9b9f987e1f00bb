"""What the management API answers, for its OpenAPI document: the error body, the resources
the operations return, and which error statuses each operation can answer.

These models only describe: handlers return plain dicts built by the services, and nothing
here validates them (the test suite checks the document against the server). Every
operation can answer 401 (wrong credentials, or none where they are needed) and 429 (too
many failed logins); one with parameters, 400; one with path parameters, 404; one with a
body, 413. `finish` adds those to every operation; the rest each route declares with
`answers`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Level = Literal["read-only", "read-write", "admin"]


class ErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, e.g. NO_SUCH_REPOSITORY")
    message: str = Field(description="For people")


class Error(BaseModel):
    errors: list[ErrorDetail] = Field(min_length=1)


_WHAT = {
    400: "Invalid parameters or body (INVALID_PARAMETERS, INVALID_JSON, INVALID_...)",
    401: "Wrong or missing credentials (NOT_AUTHENTICATED)",
    403: "The caller may not do this (NOT_AUTHORIZED)",
    404: "No such resource (NO_SUCH_...), or one the caller may not see",
    409: "Conflicts with the current state (..._EXISTS, JOB_RUNNING, JOB_FINISHED)",
    413: "The body is larger than 2 MiB (REQUEST_TOO_LARGE)",
    429: "Too many failed logins (TOO_MANY_REQUESTS); see Retry-After",
    502: "The LDAP directory could not be reached (LDAP_UNAVAILABLE)",
}


def answers(model: Any = None, *errors: int, status: int = 200) -> dict[int | str, Any]:
    """`responses=` of an operation: its success body (`model`, if any) and the error
    statuses it answers beyond those `finish` adds from its shape."""
    responses: dict[int | str, Any] = {}
    if model is not None:
        responses[status] = {"model": model}
    for code in errors:
        responses[code] = {"model": Error, "description": _WHAT[code]}
    return responses


def finish(doc: dict[str, Any]) -> dict[str, Any]:
    """Make FastAPI's document say what the server does: no 422 (validation errors are 400
    in the API's error format), the errors every operation can answer, HTTP Basic auth, and
    query parameters that are absent rather than null."""
    error_ref = {"$ref": "#/components/schemas/Error"}
    for methods in doc["paths"].values():
        for operation in methods.values():
            responses = operation["responses"]
            responses.pop("422", None)
            params = operation.get("parameters", [])
            codes = [401, 429]
            if params or "requestBody" in operation:
                codes.append(400)
            if any(p["in"] == "path" for p in params):
                codes.append(404)
            if "requestBody" in operation:
                codes.append(413)
            for code in codes:
                responses.setdefault(
                    str(code),
                    {
                        "description": _WHAT[code],
                        "content": {"application/json": {"schema": error_ref}},
                    },
                )
            responses["429"]["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            }
            for param in params:
                if param["in"] == "query":
                    _not_null(param["schema"])
            operation["responses"] = dict(sorted(responses.items()))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    for schema in schemas.values():
        for prop in schema.get("properties", {}).values():
            # A field left out is not set (a non-null type with a None default, in models).
            if "default" in prop and prop["default"] is None and "anyOf" not in prop:
                del prop["default"]
    schemas.setdefault(
        "Error", Error.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    defs = schemas["Error"].pop("$defs", {})
    for name, schema in defs.items():
        schemas.setdefault(name, schema)
    doc["components"]["securitySchemes"] = {
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": "A password or a personal access token",
        }
    }
    # Anonymous callers may browse public repositories (while anonymous pulls are on).
    doc["security"] = [{"basic": []}, {}]
    return doc


def _not_null(schema: dict[str, Any]) -> None:
    """A query parameter is given or absent, never null: drop `null` from its schema."""
    options = schema.get("anyOf")
    if not options:
        return
    kept = [o for o in options if o.get("type") != "null"]
    if len(kept) == 1:
        del schema["anyOf"]
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


# -- resources ------------------------------------------------------------------------------


class Account(BaseModel):
    id: int
    name: str
    fullName: str
    isOrg: bool
    isAdmin: bool
    isActive: bool
    source: str = Field(description="local, or ldap")
    createdAt: datetime
    updatedAt: datetime


class Organization(BaseModel):
    name: str
    isOwner: bool


class Me(Account):
    organizations: list[Organization]


class Member(BaseModel):
    member: Account
    isOwner: bool


class Team(BaseModel):
    id: int
    orgName: str
    name: str
    description: str
    ldapGroupDN: str | None
    createdAt: datetime


class RepositoryLevel(BaseModel):
    repository: str
    accessLevel: Level


class TeamRepositoryAccess(BaseModel):
    team: Team
    repositoryAccessList: list[RepositoryLevel]


class UserRepositoryAccess(BaseModel):
    user: str
    repository: str
    accessLevel: Literal["none", "read-only", "read-write", "admin"]


class Repository(BaseModel):
    id: int
    namespace: str
    namespaceType: Literal["user", "organization"]
    name: str
    fullName: str
    shortDescription: str
    longDescription: str
    visibility: Literal["public", "private"]
    createdAt: datetime


class Tag(BaseModel):
    name: str
    digest: str
    mediaType: str
    size: int = Field(description="The image: its manifest, config and layers")
    manifestSize: int
    author: str | None
    createdAt: datetime
    updatedAt: datetime


class TeamAccess(BaseModel):
    team: Team
    accessLevel: Level


class RepositoryTeamAccess(BaseModel):
    repository: Repository
    teamAccessList: list[TeamAccess]


class NamespaceTeamAccess(BaseModel):
    namespace: Account
    teamAccessList: list[TeamAccess]


class Token(BaseModel):
    hashedToken: str
    tokenLabel: str
    username: str
    isActive: bool
    createdAt: datetime
    lastUsed: datetime | None
    generatedBy: str
    creatorUa: str


class NewToken(Token):
    token: str = Field(description="The secret: shown in this response only")


class Deleted(BaseModel):
    deleted: int


class Settings(BaseModel):
    createRepositoryOnPush: bool
    anonymousPull: bool
    tokenLifetimeSeconds: int
    failedLoginLimit: int
    failedLoginWindowSeconds: int
    jobHistoryMaxAgeDays: int
    jobHistoryMaxCount: int


class LdapView(BaseModel):
    enabled: bool
    config: dict[str, Any] | None = Field(
        description="The settings without bindPassword (bindPasswordSet says if there is "
        "one); null when LDAP was never configured"
    )


class LdapCheck(BaseModel):
    ok: bool


class AuditEvent(BaseModel):
    id: int
    at: datetime
    actor: str | None
    client: str | None
    action: str
    target: str
    success: bool
    details: dict[str, Any] | None


class Job(BaseModel):
    id: str
    action: str
    parameters: dict[str, Any]
    state: Literal["waiting", "running", "done", "errored", "canceled"]
    workerID: str | None
    retriesLeft: int
    scheduledAt: datetime
    createdAt: datetime
    startedAt: datetime | None
    endedAt: datetime | None
    heartbeatAt: datetime | None
    cancelRequested: bool
    cron: str | None
    createdBy: str | None
    logLines: int


class JobLogLine(BaseModel):
    line: int
    time: datetime
    data: str


class Cron(BaseModel):
    action: str
    schedule: str
    parameters: dict[str, Any]
    retries: int
    nextRun: datetime | None
    lastJobID: str | None


class Worker(BaseModel):
    id: str
    replicaID: str
    hostname: str
    pid: int
    startedAt: datetime
    heartbeatAt: datetime
    status: Literal["running", "stale"]
    runningJobs: int
