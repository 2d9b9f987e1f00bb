"""Building blocks of the security tests: accounts made through the management API, images
pushed over HTTP, raw HTTP requests that no client library normalises, and JWT handling."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests import metadata_db

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def unique(prefix: str) -> str:
    """An account or repository component unique to this test session."""
    return f"{prefix}{secrets.token_hex(4)}"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def basic(username: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{secret}".encode()).decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error_code(r: httpx.Response) -> str | None:
    """The first error code of a JSON error body (registry or management API), else None."""
    try:
        body = r.json()
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        return body["errors"][0].get("code")
    return None


# -- accounts -------------------------------------------------------------------------------


@dataclass
class Account:
    name: str
    password: str
    url: str
    tokens: list[dict[str, Any]] = field(default_factory=list)

    @property
    def auth(self) -> tuple[str, str]:
        return (self.name, self.password)

    def client(self, secret: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            auth=(self.name, secret or self.password),
            timeout=60,
            follow_redirects=False,
        )

    def new_token(self, label: str = "tests") -> dict[str, Any]:
        """A personal access token of this user (the response holds the secret `token`)."""
        with self.client() as c:
            r = c.post("/api/v0/api_tokens", json={"tokenLabel": label})
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["token"].startswith("wharf_pat_"), created
        self.tokens.append(created)
        return created


class Admin:
    """The management API as the system administrator of a server."""

    def __init__(self, server) -> None:
        self.server = server
        self.http = server.client()

    def user(self, prefix: str = "user", password: str | None = None) -> Account:
        name = unique(prefix)
        password = password or "pw-" + secrets.token_urlsafe(12)
        r = self.http.post("/api/v0/accounts", json={"name": name, "password": password})
        assert r.status_code == 201, r.text
        return Account(name, password, self.server.url)

    def org(self, prefix: str = "org") -> str:
        name = unique(prefix)
        r = self.http.post("/api/v0/accounts", json={"name": name, "isOrg": True})
        assert r.status_code == 201, r.text
        return name

    def team(self, org: str, team: str, *members: str) -> None:
        r = self.http.post(f"/api/v0/accounts/{org}/teams", json={"name": team})
        assert r.status_code == 201, r.text
        for member in members:
            r = self.http.put(f"/api/v0/accounts/{org}/teams/{team}/members/{member}")
            assert r.status_code == 200, r.text

    def grant(self, repository: str, team: str, level: str) -> None:
        r = self.http.put(
            f"/api/v0/repositories/{repository}/teamAccess/{team}", json={"accessLevel": level}
        )
        assert r.status_code == 200, r.text

    def visibility(self, repository: str, visibility: str) -> None:
        r = self.http.patch(f"/api/v0/repositories/{repository}", json={"visibility": visibility})
        assert r.status_code == 200, r.text
        assert r.json()["visibility"] == visibility

    def settings(self, **changes: Any) -> dict[str, Any]:
        r = self.http.post("/api/v0/meta/settings", json=changes)
        assert r.status_code == 202, r.text
        return r.json()

    def close(self) -> None:
        self.http.close()


# -- images ---------------------------------------------------------------------------------


@dataclass
class Image:
    repository: str
    tag: str
    manifest: bytes
    config: bytes
    layer: bytes

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def layer_digest(self) -> str:
        return sha256(self.layer)


def push_blob(c: httpx.Client, repository: str, data: bytes) -> str:
    r = c.post(f"/v2/{repository}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = httpx.URL(r.headers["location"]).copy_merge_params({"digest": sha256(data)})
    r = c.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return sha256(data)


def push_image(c: httpx.Client, repository: str, tag: str = "v1") -> Image:
    """Config, one random layer and an OCI manifest, pushed with `c`'s credentials."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}
    ).encode()
    layer = os.urandom(512)
    push_blob(c, repository, config)
    push_blob(c, repository, layer)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256(layer), "size": len(layer)}],
        }
    ).encode()
    r = c.put(
        f"/v2/{repository}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text
    return Image(repository, tag, manifest, config, layer)


def push_referrer(c: httpx.Client, image: Image) -> str:
    """An artifact whose subject is `image`, pushed by digest; returns its digest."""
    push_blob(c, image.repository, b"{}")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sig",
            "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}],
            "subject": {
                "mediaType": OCI_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
            },
        }
    ).encode()
    r = c.put(
        f"/v2/{image.repository}/manifests/{sha256(body)}",
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text
    return sha256(body)


# -- tokens ---------------------------------------------------------------------------------


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(header, claims, signature segment) of a JWT, without verifying it."""
    header, payload, signature = token.split(".")
    return json.loads(b64url_decode(header)), json.loads(b64url_decode(payload)), signature


def get_token(
    server, scopes: list[str], auth: tuple[str, str] | None = None, **params: str
) -> httpx.Response:
    """GET /auth/token as a Docker client does."""
    return httpx.get(
        f"{server.url}/auth/token",
        params=[("service", "wharf"), *(("scope", s) for s in scopes), *params.items()],
        auth=auth,
        timeout=60,
    )


def access_token(server, scopes: list[str], auth: tuple[str, str] | None = None) -> str:
    r = get_token(server, scopes, auth)
    assert r.status_code == 200, r.text
    return r.json()["token"]


def signing_key_pem(server) -> str:
    """The server's token signing key, read from its metadata store (to sign tokens whose only
    fault is the one under test)."""
    value = metadata_db.query_setting(server.db_url, "token_signing_key")
    assert value is not None, "the server has no token signing key yet"
    return json.loads(value)


# -- raw HTTP -------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        try:
            body = self.json()
        except ValueError:
            return None
        if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
            return body["errors"][0].get("code")
        return None


def raw_request(
    server,
    method: str,
    target: str | bytes,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str | None = None,
) -> RawResponse:
    """Send `target` exactly as given (no dot-segment removal, no re-encoding) over a new
    connection, and read the whole answer."""
    if isinstance(target, str):
        target = target.encode()
    lines = [method.encode() + b" " + target + b" HTTP/1.1"]
    all_headers = {"Host": host if host is not None else server.host, "Connection": "close"}
    all_headers.update(headers or {})
    if body or method in ("POST", "PUT", "PATCH"):
        all_headers["Content-Length"] = str(len(body))
    for key, value in all_headers.items():
        lines.append(f"{key}: {value}".encode())
    request = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    parsed: dict[str, str] = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    if "chunked" in parsed.get("transfer-encoding", "").lower():
        rest = _dechunk(rest)
    elif "content-length" in parsed:
        rest = rest[: int(parsed["content-length"])]
    return RawResponse(status, parsed, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)


def challenge_params(header: str) -> dict[str, str]:
    """The auth-params of a `Bearer k="v",...` challenge (a parameter seen twice fails)."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Bearer", header
    params: dict[str, str] = {}
    for m in re.finditer(r'(\w+)="([^"]*)"', rest):
        assert m.group(1) not in params, f"{m.group(1)} given twice in {header!r}"
        params[m.group(1)] = m.group(2)
    # Nothing but the parameters and their separating commas.
    assert re.fullmatch(r'(\w+="[^"]*")(,\w+="[^"]*")*', rest), header
    return params
