"""Content management: deleting manifests, tags (end-9), blobs (end-10), uploads (end-14)."""

from __future__ import annotations

from .helpers import (
    OCI_MANIFEST,
    assert_api_version,
    assert_error,
    push_blob,
    push_image,
    put_manifest,
    random_blob,
    sha256,
    start_upload,
)


def tags_of(client, repo):
    return client.get(f"/v2/{repo}/tags/list").json()["tags"]


def test_delete_manifest_by_digest_removes_its_tags(client, repo):
    image = push_image(client, repo, "v1")
    assert put_manifest(client, repo, "v1-alias", image.body).status_code == 201
    other = push_image(client, repo, "other")
    r = client.delete(f"/v2/{repo}/manifests/{image.digest}")
    assert r.status_code == 202
    assert r.content == b""
    assert_api_version(r)
    assert_error(client.get(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/{image.digest}").status_code == 404
    assert_error(client.get(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{repo}/manifests/v1-alias"), 404, "MANIFEST_UNKNOWN")
    assert tags_of(client, repo) == ["other"]
    # Unrelated content is untouched.
    assert client.get(f"/v2/{repo}/manifests/other").content == other.body


def test_delete_manifest_twice(client, repo):
    image = push_image(client, repo, "v1")
    assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    assert_error(client.delete(f"/v2/{repo}/manifests/{image.digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_unknown_manifest(client, repo):
    push_image(client, repo, "v1")
    assert_error(client.delete(f"/v2/{repo}/manifests/{sha256(b'x')}"), 404, "MANIFEST_UNKNOWN")


def test_delete_manifest_in_unknown_repository(client, repo):
    r = client.delete(f"/v2/{repo}/manifests/{sha256(b'x')}")
    assert r.status_code == 404


def test_manifest_can_be_pushed_again_after_delete(client, repo):
    image = push_image(client, repo, "v1")
    assert client.delete(f"/v2/{repo}/manifests/{image.digest}").status_code == 202
    assert put_manifest(client, repo, "v1", image.body).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/v1").content == image.body


def test_delete_tag(client, repo):
    image = push_image(client, repo, "v1")
    assert put_manifest(client, repo, "v2", image.body).status_code == 201
    r = client.delete(f"/v2/{repo}/manifests/v1")
    assert r.status_code == 202
    assert_error(client.get(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    # The manifest and its other tags stay.
    assert client.get(f"/v2/{repo}/manifests/{image.digest}").content == image.body
    assert client.get(f"/v2/{repo}/manifests/v2").content == image.body
    assert tags_of(client, repo) == ["v2"]


def test_delete_unknown_tag(client, repo):
    push_image(client, repo, "v1")
    assert_error(client.delete(f"/v2/{repo}/manifests/nope"), 404, "MANIFEST_UNKNOWN")
    assert tags_of(client, repo) == ["v1"]


def test_delete_blob(client, repo):
    data = random_blob(100)
    digest = push_blob(client, repo, data)
    r = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 202
    assert_api_version(r)
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    assert_error(client.get(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(client.delete(f"/v2/{repo}/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_delete_blob_only_in_one_repository(client, repo):
    data = random_blob(100)
    digest = push_blob(client, repo, data)
    other = f"{repo}-other"
    push_blob(client, other, data)
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    assert client.get(f"/v2/{other}/blobs/{digest}").content == data


def test_delete_unknown_blob(client, repo):
    push_blob(client, repo, b"a")
    assert_error(client.delete(f"/v2/{repo}/blobs/{sha256(b'b')}"), 404, "BLOB_UNKNOWN")


def test_blob_can_be_pushed_again_after_delete(client, repo):
    data = random_blob(100)
    digest = push_blob(client, repo, data)
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202
    push_blob(client, repo, data)
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_manifest_needing_deleted_blob_is_refused(client, repo):
    image = push_image(client, repo, None)
    assert client.delete(f"/v2/{repo}/blobs/{sha256(image.layers[0])}").status_code == 202
    r = put_manifest(client, repo, "again", image.body, OCI_MANIFEST)
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


def test_cancel_upload(client, repo):
    location = start_upload(client, repo)
    assert (
        client.patch(location, content=b"partial", headers={"Content-Range": "0-6"}).status_code
        == 202
    )
    r = client.delete(location)
    assert r.status_code == 204
    assert_api_version(r)
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    r = client.patch(location, content=b"more", headers={"Content-Range": "7-10"})
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    r = client.put(location, params={"digest": sha256(b"partialmore")})
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.delete(location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.head(f"/v2/{repo}/blobs/{sha256(b'partial')}").status_code == 404


def test_cancel_unknown_upload(client, repo):
    start_upload(client, repo)
    r = client.delete(f"/v2/{repo}/blobs/uploads/no-such-upload")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_cancel_upload_of_other_repository(client, repo):
    location = start_upload(client, repo)
    session = location.rsplit("/", 1)[1]
    other = f"{repo}-other"
    start_upload(client, other)
    assert_error(client.delete(f"/v2/{other}/blobs/uploads/{session}"), 404, "BLOB_UPLOAD_UNKNOWN")
    assert client.get(location).status_code == 204
