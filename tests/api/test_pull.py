"""Pull workflow: end-2 (blobs) and end-3 (manifests), GET and HEAD."""

from __future__ import annotations

import pytest

from .helpers import (
    OCI_MANIFEST,
    assert_api_version,
    assert_error,
    push_blob,
    push_image,
    random_blob,
    sha256,
)


def test_pull_manifest_by_tag(client, repo):
    image = push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == image.body
    assert r.headers["content-type"] == OCI_MANIFEST
    assert r.headers["docker-content-digest"] == image.digest
    assert int(r.headers["content-length"]) == len(image.body)
    assert_api_version(r)


def test_pull_manifest_by_digest(client, repo):
    image = push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/{image.digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == image.body
    assert sha256(r.content) == image.digest
    assert r.headers["docker-content-digest"] == image.digest
    assert r.headers["content-type"] == OCI_MANIFEST


def test_pull_manifest_without_accept(client, repo):
    image = push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": ""})
    assert r.status_code == 200
    assert r.content == image.body
    assert r.headers["content-type"] == OCI_MANIFEST


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_head_manifest(client, repo, by):
    image = push_image(client, repo, "v1")
    reference = "v1" if by == "tag" else image.digest
    r = client.head(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["docker-content-digest"] == image.digest
    assert int(r.headers["content-length"]) == len(image.body)
    assert r.headers["content-type"] == OCI_MANIFEST


def test_pull_unknown_tag(client, repo):
    push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/v2")
    assert_error(r, 404, "MANIFEST_UNKNOWN")
    assert_api_version(r)


def test_pull_unknown_digest(client, repo):
    push_image(client, repo, "v1")
    r = client.get(f"/v2/{repo}/manifests/{sha256(b'nothing')}")
    assert_error(r, 404, "MANIFEST_UNKNOWN")


def test_head_unknown_manifest(client, repo):
    push_image(client, repo, "v1")
    r = client.head(f"/v2/{repo}/manifests/nope")
    assert r.status_code == 404
    assert r.content == b""


def test_pull_manifest_from_unknown_repository(client, repo):
    r = client.get(f"/v2/{repo}/manifests/latest")
    assert r.status_code == 404
    assert r.json()["errors"][0]["code"] in {"NAME_UNKNOWN", "MANIFEST_UNKNOWN"}


def test_manifest_is_scoped_to_its_repository(client, repo):
    image = push_image(client, repo, "v1")
    other = f"{repo}-other"
    push_image(client, other, "v0")
    assert_error(client.get(f"/v2/{other}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{other}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")


def test_pull_blob(client, repo):
    data = random_blob(10_000)
    digest = push_blob(client, repo, data)
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data
    assert r.headers["docker-content-digest"] == digest
    assert int(r.headers["content-length"]) == len(data)
    assert r.headers["content-type"] == "application/octet-stream"
    assert_api_version(r)


def test_pull_large_blob_streams_whole(client, repo):
    data = random_blob(3 * 1024 * 1024 + 17)  # several read chunks
    digest = push_blob(client, repo, data)
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert sha256(r.content) == digest
    assert len(r.content) == len(data)


def test_head_blob(client, repo):
    data = random_blob(777)
    digest = push_blob(client, repo, data)
    r = client.head(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["docker-content-digest"] == digest
    assert int(r.headers["content-length"]) == 777


def test_pull_empty_blob(client, repo):
    digest = push_blob(client, repo, b"")
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == "0"
    assert r.headers["docker-content-digest"] == sha256(b"")


def test_pull_unknown_blob(client, repo):
    push_blob(client, repo, b"something")
    r = client.get(f"/v2/{repo}/blobs/{sha256(b'something else')}")
    assert_error(r, 404, "BLOB_UNKNOWN")
    assert_api_version(r)


def test_head_unknown_blob(client, repo):
    push_blob(client, repo, b"something")
    r = client.head(f"/v2/{repo}/blobs/{sha256(b'something else')}")
    assert r.status_code == 404
    assert r.content == b""


def test_blob_is_scoped_to_its_repository(client, repo):
    data = random_blob(100)
    digest = push_blob(client, repo, data)
    other = f"{repo}-other"
    push_blob(client, other, random_blob(10))
    assert_error(client.get(f"/v2/{other}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert client.head(f"/v2/{other}/blobs/{digest}").status_code == 404


def test_pull_blob_caching_headers(client, repo):
    digest = push_blob(client, repo, random_blob(100))
    r = client.get(f"/v2/{repo}/blobs/{digest}")
    assert r.headers["etag"] == f'"{digest}"'
    assert r.headers["accept-ranges"] == "bytes"
