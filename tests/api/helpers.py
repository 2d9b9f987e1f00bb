"""Small building blocks for protocol-level tests: blobs, digests, manifests, error checks."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_NONDIST_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

EMPTY_JSON = b"{}"
EMPTY_JSON_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

# OCI Distribution Spec v1.1, "Error Codes": "The `code` field MUST be one of the following".
SPEC_ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
)

API_VERSION = ("docker-distribution-api-version", "registry/2.0")


# -- digests and blobs ----------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def sha512(data: bytes) -> str:
    return f"sha512:{hashlib.sha512(data).hexdigest()}"


def random_blob(size: int = 1024) -> bytes:
    return os.urandom(size)


def canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def start_upload(client: httpx.Client, repo: str) -> str:
    """POST an upload session; return its Location."""
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202, r.text
    location = r.headers["location"]
    assert location
    return location


def push_blob(client: httpx.Client, repo: str, data: bytes, digest: str | None = None) -> str:
    """Upload a blob monolithically (POST then PUT); return its digest."""
    digest = digest or sha256(data)
    location = start_upload(client, repo)
    r = client.put(
        location,
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == digest
    return digest


def blob_exists(client: httpx.Client, repo: str, digest: str) -> bool:
    r = client.head(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code in (200, 404), r.status_code
    return r.status_code == 200


# -- manifests ------------------------------------------------------------------------------


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data), **extra}


def manifest_descriptor(media_type: str, body: bytes, **extra: Any) -> dict[str, Any]:
    return descriptor(media_type, body, **extra)


def image_manifest(
    config: dict[str, Any],
    layers: list[dict[str, Any]],
    *,
    media_type: str = OCI_MANIFEST,
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config,
        "layers": layers,
    }
    if subject is not None:
        doc["subject"] = subject
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    if annotations is not None:
        doc["annotations"] = annotations
    return doc


def index_manifest(
    manifests: list[dict[str, Any]],
    *,
    media_type: str = OCI_INDEX,
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type, "manifests": manifests}
    if subject is not None:
        doc["subject"] = subject
    if artifact_type is not None:
        doc["artifactType"] = artifact_type
    if annotations is not None:
        doc["annotations"] = annotations
    return doc


def put_manifest(
    client: httpx.Client,
    repo: str,
    reference: str,
    body: bytes,
    media_type: str | None = OCI_MANIFEST,
    **kwargs: Any,
) -> httpx.Response:
    headers = {"Content-Type": media_type} if media_type else {}
    return client.put(f"/v2/{repo}/manifests/{reference}", content=body, headers=headers, **kwargs)


class Image:
    """A pushed image: its manifest bytes and digest, config and layer blobs."""

    def __init__(
        self, body: bytes, media_type: str, config: bytes, layers: list[bytes], tag: str | None
    ) -> None:
        self.body, self.media_type, self.config, self.layers, self.tag = (
            body,
            media_type,
            config,
            layers,
            tag,
        )

    @property
    def digest(self) -> str:
        return sha256(self.body)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return manifest_descriptor(self.media_type, self.body, **extra)


def push_image(
    client: httpx.Client,
    repo: str,
    tag: str | None = "latest",
    *,
    docker: bool = False,
    layer_count: int = 2,
    layer_size: int = 2048,
    subject: dict[str, Any] | None = None,
    artifact_type: str | None = None,
    annotations: dict[str, str] | None = None,
    platform: tuple[str, str] = ("linux", "amd64"),
) -> Image:
    """Push config + layers + an image manifest (OCI or Docker schema 2), by tag or digest."""
    config = canonical(
        {
            "architecture": platform[1],
            "os": platform[0],
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": os.urandom(8).hex(),
        }
    )
    layers = [random_blob(layer_size) for _ in range(layer_count)]
    push_blob(client, repo, config)
    for layer in layers:
        push_blob(client, repo, layer)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    doc = image_manifest(
        descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        [descriptor(DOCKER_LAYER if docker else OCI_LAYER, layer) for layer in layers],
        media_type=media_type,
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )
    body = canonical(doc)
    reference = tag or sha256(body)
    r = put_manifest(client, repo, reference, body, media_type)
    assert r.status_code == 201, r.text
    assert r.headers["docker-content-digest"] == sha256(body)
    return Image(body, media_type, config, layers, tag)


def push_artifact(
    client: httpx.Client,
    repo: str,
    subject: dict[str, Any] | None,
    artifact_type: str | None,
    *,
    annotations: dict[str, str] | None = None,
    config_media_type: str = OCI_EMPTY,
) -> tuple[bytes, httpx.Response]:
    """Push an artifact manifest (empty config, one small layer) by digest."""
    push_blob(client, repo, EMPTY_JSON)
    layer = random_blob(64)
    push_blob(client, repo, layer)
    doc = image_manifest(
        {"mediaType": config_media_type, "digest": EMPTY_JSON_DIGEST, "size": 2},
        [descriptor("application/octet-stream", layer)],
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )
    body = canonical(doc)
    r = put_manifest(client, repo, sha256(body), body, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    return body, r


# -- responses ------------------------------------------------------------------------------


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the spec's JSON error body with this status and (first) code."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/json", r.headers
    body = r.json()
    assert isinstance(body, dict) and list(body) == ["errors"], body
    errors = body["errors"]
    assert isinstance(errors, list) and errors, body
    for entry in errors:
        assert isinstance(entry, dict)
        assert isinstance(entry.get("code"), str)
        assert set(entry) <= {"code", "message", "detail"}, entry
        if "message" in entry:
            assert isinstance(entry["message"], str)
    assert errors[0]["code"] == code, body
    return errors[0]


def assert_api_version(r: httpx.Response) -> None:
    assert r.headers.get(API_VERSION[0]) == API_VERSION[1], (r.request.url, dict(r.headers))


def parse_range(value: str) -> tuple[int, int]:
    """The (start, end) of an upload's `Range: 0-<end>` header (optionally `bytes=`-prefixed)."""
    value = value.removeprefix("bytes=")
    start, _, end = value.partition("-")
    return int(start), int(end)
