"""Monolithic blob pushes: POST then PUT (end-4a + end-6) and single POST (end-4b)."""

from __future__ import annotations

import uuid

from .helpers import (
    assert_api_version,
    assert_error,
    random_blob,
    sha256,
    start_upload,
)


def test_post_starts_an_upload_session(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"})
    assert r.status_code == 202
    location = r.headers["location"]
    assert location.startswith(f"/v2/{repo}/blobs/uploads/")
    session = location.rsplit("/", 1)[1]
    assert str(uuid.UUID(session)) == session  # "MUST contain a UUID"
    assert r.headers["docker-upload-uuid"] == session
    assert r.headers["range"] == "0-0"
    assert r.headers["content-length"] == "0"
    assert_api_version(r)


def test_post_without_trailing_slash(client, repo):
    r = client.post(f"/v2/{repo}/blobs/uploads")
    assert r.status_code == 202
    assert r.headers["location"].startswith(f"/v2/{repo}/blobs/uploads/")


def test_sessions_are_unique(client, repo):
    assert start_upload(client, repo) != start_upload(client, repo)


def test_post_then_put(client, repo):
    data = random_blob(4096)
    digest = sha256(data)
    location = start_upload(client, repo)
    r = client.put(
        location,
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{repo}/blobs/{digest}"
    assert r.headers["docker-content-digest"] == digest
    assert r.headers["content-length"] == "0"
    assert_api_version(r)
    pulled = client.get(r.headers["location"])
    assert pulled.status_code == 200
    assert pulled.content == data


def test_put_completes_session(client, repo):
    data = random_blob(10)
    location = start_upload(client, repo)
    assert client.put(location, params={"digest": sha256(data)}, content=data).status_code == 201
    # The session is over once the blob is stored.
    assert_error(client.get(location), 404, "BLOB_UPLOAD_UNKNOWN")
    r = client.put(location, params={"digest": sha256(data)}, content=data)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_put_empty_blob(client, repo):
    location = start_upload(client, repo)
    r = client.put(location, params={"digest": sha256(b"")})
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == sha256(b"")
    assert client.get(f"/v2/{repo}/blobs/{sha256(b'')}").content == b""


def test_put_digest_mismatch(client, repo):
    data = random_blob(100)
    wrong = sha256(b"other content")
    location = start_upload(client, repo)
    r = client.put(location, params={"digest": wrong}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_put_without_digest(client, repo):
    data = random_blob(100)
    location = start_upload(client, repo)
    r = client.put(location, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_put_unknown_session(client, repo):
    start_upload(client, repo)
    r = client.put(
        f"/v2/{repo}/blobs/uploads/00000000-0000-0000-0000-000000000000",
        params={"digest": sha256(b"x")},
        content=b"x",
    )
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_session_is_bound_to_its_repository(client, repo):
    location = start_upload(client, repo)
    session = location.rsplit("/", 1)[1]
    other = f"{repo}-other"
    start_upload(client, other)
    r = client.put(
        f"/v2/{other}/blobs/uploads/{session}", params={"digest": sha256(b"x")}, content=b"x"
    )
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(client.get(f"/v2/{other}/blobs/uploads/{session}"), 404, "BLOB_UPLOAD_UNKNOWN")


def test_push_same_blob_twice(client, repo):
    data = random_blob(300)
    digest = sha256(data)
    for _ in range(2):
        location = start_upload(client, repo)
        r = client.put(location, params={"digest": digest}, content=data)
        assert r.status_code == 201
        assert r.headers["docker-content-digest"] == digest
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_single_post(client, repo):
    data = random_blob(2048)
    digest = sha256(data)
    r = client.post(
        f"/v2/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{repo}/blobs/{digest}"
    assert r.headers["docker-content-digest"] == digest
    assert_api_version(r)
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_single_post_digest_mismatch(client, repo):
    data = random_blob(100)
    wrong = sha256(b"not the data")
    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": wrong}, content=data)
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{wrong}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_single_post_streamed_body(client, repo):
    data = random_blob(300_000)
    digest = sha256(data)

    def body():
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    r = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=body())
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_large_monolithic_put(client, repo):
    data = random_blob(5 * 1024 * 1024 + 3)
    digest = sha256(data)
    location = start_upload(client, repo)
    r = client.put(location, params={"digest": digest}, content=data)
    assert r.status_code == 201
    head = client.head(f"/v2/{repo}/blobs/{digest}")
    assert head.status_code == 200
    assert int(head.headers["content-length"]) == len(data)
    assert sha256(client.get(f"/v2/{repo}/blobs/{digest}").content) == digest
