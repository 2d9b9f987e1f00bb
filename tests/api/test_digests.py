"""Digest algorithms: sha512 blobs and manifests; unknown or malformed digests everywhere."""

from __future__ import annotations

import secrets

import pytest

from .helpers import (
    OCI_CONFIG,
    OCI_LAYER,
    OCI_MANIFEST,
    assert_error,
    canonical,
    image_manifest,
    push_blob,
    push_image,
    put_manifest,
    random_blob,
    sha256,
    sha512,
    start_upload,
)


def test_sha512_single_post(client, repo):
    data = random_blob(1000)
    digest = sha512(data)
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["location"] == f"/v2/{repo}/blobs/{digest}"
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["docker-content-digest"] == digest


def test_sha512_post_then_put(client, repo):
    data = random_blob(3000)
    digest = push_blob(client, repo, data, sha512(data))
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["docker-content-digest"] == digest
    assert int(head.headers["content-length"]) == 3000


def test_sha512_mismatch(client, repo):
    data = random_blob(100)
    location = start_upload(client, repo)
    r = client.put(location, params={"digest": sha512(b"other")}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{sha512(data)}").status_code == 404


def test_sha512_blob_is_not_visible_by_sha256(client, repo):
    data = random_blob(100)
    push_blob(client, repo, data, sha512(data))
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_manifest_referencing_sha512_blobs(client, repo):
    config, layer = b'{"os":"linux"}', random_blob(500)
    push_blob(client, repo, config, sha512(config))
    push_blob(client, repo, layer, sha512(layer))
    body = canonical(
        image_manifest(
            {"mediaType": OCI_CONFIG, "digest": sha512(config), "size": len(config)},
            [{"mediaType": OCI_LAYER, "digest": sha512(layer), "size": len(layer)}],
        )
    )
    assert put_manifest(client, repo, "v1", body).status_code == 201
    assert client.get(f"/v2/{repo}/manifests/v1").content == body


def test_manifest_pushed_by_sha512(client, repo):
    image = push_image(client, repo, None)
    body = image.body + b"\n"  # a new manifest, same blobs
    digest = sha512(body)
    r = put_manifest(client, repo, digest, body, OCI_MANIFEST, params={"tag": "t512"})
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["location"] == f"/v2/{repo}/manifests/{digest}"
    got = client.get(f"/v2/{repo}/manifests/{digest}")
    assert got.status_code == 200
    assert got.content == body
    assert got.headers["docker-content-digest"] == digest
    head = client.head(f"/v2/{repo}/manifests/{digest}")
    assert head.status_code == 200
    assert head.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{repo}/manifests/t512").content == body


def test_sha512_manifest_digest_mismatch(client, repo):
    image = push_image(client, repo, None)
    r = put_manifest(client, repo, sha512(b"nope"), image.body)
    assert_error(r, 400, "DIGEST_INVALID")


def test_delete_manifest_by_sha512(client, repo):
    image = push_image(client, repo, None)
    body = image.body + b" "
    digest = sha512(body)
    assert put_manifest(client, repo, digest, body).status_code == 201
    assert client.delete(f"/v2/{repo}/manifests/{digest}").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/{digest}").status_code == 404


BAD_DIGESTS = {
    "unknown-algorithm": "md5:" + "0" * 32,
    "sha384": "sha384:" + "0" * 96,
    "short-hex": "sha256:" + "a" * 63,
    "long-hex": "sha256:" + "a" * 65,
    "upper-hex": "sha256:" + "A" * 64,
    "not-hex": "sha256:" + "g" * 64,
    "sha512-short": "sha512:" + "a" * 64,
    "empty-encoded": "sha256:",
    "no-algorithm": ":" + "a" * 64,
}
BAD_IDS = list(BAD_DIGESTS)
BAD = list(BAD_DIGESTS.values())


@pytest.fixture(scope="module")
def populated(wharf_server):
    """One repository with an image, shared by the bad-digest tests (they change nothing)."""
    name = f"test/digests-{secrets.token_hex(3)}"
    with wharf_server.client() as c:
        push_image(c, name, "v1")
    return name


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
def test_blob_get_bad_digest(client, populated, bad):
    assert_error(client.get(f"/v2/{populated}/blobs/{bad}"), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{populated}/blobs/{bad}").status_code == 400
    assert_error(client.delete(f"/v2/{populated}/blobs/{bad}"), 400, "DIGEST_INVALID")


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
def test_manifest_bad_digest(client, populated, bad):
    assert_error(client.get(f"/v2/{populated}/manifests/{bad}"), 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{populated}/manifests/{bad}").status_code == 400
    assert_error(client.delete(f"/v2/{populated}/manifests/{bad}"), 400, "DIGEST_INVALID")
    body = client.get(f"/v2/{populated}/manifests/v1").content
    assert_error(put_manifest(client, populated, bad, body), 400, "DIGEST_INVALID")


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
def test_upload_bad_digest(client, populated, bad):
    location = start_upload(client, populated)
    assert_error(client.put(location, params={"digest": bad}, content=b"x"), 400, "DIGEST_INVALID")
    r = client.post(f"/v2/{populated}/blobs/uploads/", params={"digest": bad}, content=b"x")
    assert_error(r, 400, "DIGEST_INVALID")
    # A mount that cannot happen becomes a plain upload (spec: "SHOULD return a 202").
    r = client.post(f"/v2/{populated}/blobs/uploads/", params={"mount": bad, "from": populated})
    assert r.status_code == 202


@pytest.mark.parametrize("bad", BAD, ids=BAD_IDS)
def test_referrers_bad_digest(client, populated, bad):
    assert_error(client.get(f"/v2/{populated}/referrers/{bad}"), 400, "DIGEST_INVALID")


def test_blob_route_with_non_digest(client, populated):
    assert_error(client.get(f"/v2/{populated}/blobs/latest"), 400, "DIGEST_INVALID")


def test_failed_bad_digest_put_keeps_upload(client, repo):
    """A closing PUT refused for its digest syntax leaves the session usable."""
    data = random_blob(50)
    location = start_upload(client, repo)
    client.patch(location, content=data, headers={"Content-Range": "0-49"})
    assert_error(client.put(location, params={"digest": "sha256:zz"}), 400, "DIGEST_INVALID")
    assert client.get(location).headers["range"] == "0-49"
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201
