"""Chunked blob pushes: POST, PATCH... (end-5), upload status (end-13), closing PUT (end-6)."""

from __future__ import annotations

from .helpers import (
    assert_api_version,
    assert_error,
    parse_range,
    random_blob,
    sha256,
    sha512,
    start_upload,
)


def patch(client, location, chunk: bytes, start: int | None):
    headers = {"Content-Type": "application/octet-stream"}
    if start is not None:
        headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
    return client.patch(location, content=chunk, headers=headers)


def test_chunked_upload(client, repo):
    data = random_blob(3000)
    chunks = [data[:1000], data[1000:2500], data[2500:]]
    location = start_upload(client, repo)
    offset = 0
    for chunk in chunks:
        r = patch(client, location, chunk, offset)
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert r.headers["range"] == f"0-{offset - 1}"
        assert r.headers["content-length"] == "0"
        assert r.headers["location"]
        assert_api_version(r)
        location = r.headers["location"]
    r = client.put(location, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert r.headers["location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert r.headers["docker-content-digest"] == sha256(data)
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_final_chunk_in_closing_put(client, repo):
    data = random_blob(2000)
    location = start_upload(client, repo)
    r = patch(client, location, data[:1200], 0)
    assert r.status_code == 202
    r = client.put(
        r.headers["location"],
        params={"digest": sha256(data)},
        content=data[1200:],
        headers={"Content-Range": "1200-1999", "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_streamed_patch_without_content_range(client, repo):
    """Docker's habit: PATCH the whole body, streamed, without Content-Range."""
    data = random_blob(200_000)

    def body():
        for i in range(0, len(data), 30_000):
            yield data[i : i + 30_000]

    location = start_upload(client, repo)
    r = client.patch(location, content=body())
    assert r.status_code == 202
    assert r.headers["range"] == f"0-{len(data) - 1}"
    r = client.put(r.headers["location"], params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_upload_status(client, repo):
    location = start_upload(client, repo)
    r = client.get(location)
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["location"] == location
    assert r.headers["range"] == "0-0"
    assert_api_version(r)
    patch(client, location, b"0123456789", 0)
    r = client.get(location)
    assert r.status_code == 204
    assert r.headers["range"] == "0-9"
    assert r.headers["docker-upload-uuid"] == location.rsplit("/", 1)[1]


def test_upload_status_unknown_session(client, repo):
    start_upload(client, repo)
    r = client.get(f"/v2/{repo}/blobs/uploads/no-such-session")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_patch_unknown_session(client, repo):
    start_upload(client, repo)
    r = patch(client, f"/v2/{repo}/blobs/uploads/no-such-session", b"abc", 0)
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")


def test_out_of_order_chunk_then_resume(client, repo):
    data = random_blob(300)
    location = start_upload(client, repo)
    assert patch(client, location, data[:100], 0).status_code == 202
    # A chunk that skips ahead is refused with the current state.
    r = patch(client, location, data[200:], 200)
    assert_error(r, 416, "BLOB_UPLOAD_INVALID")
    assert parse_range(r.headers["range"]) == (0, 99)
    assert_api_version(r)
    # A chunk that overlaps what was received is refused too.
    r = patch(client, location, data[50:150], 50)
    assert r.status_code == 416
    assert parse_range(r.headers["range"]) == (0, 99)
    # The upload is intact and resumes from the reported offset.
    status = client.get(location)
    assert status.status_code == 204
    assert status.headers["range"] == "0-99"
    assert patch(client, location, data[100:], 100).status_code == 202
    r = client.put(location, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_first_chunk_must_start_at_zero(client, repo):
    location = start_upload(client, repo)
    r = patch(client, location, b"abcdef", 5)
    assert r.status_code == 416
    assert parse_range(r.headers["range"]) == (0, 0)
    assert client.get(location).headers["range"] == "0-0"


def test_out_of_order_final_chunk_in_put(client, repo):
    data = random_blob(100)
    location = start_upload(client, repo)
    patch(client, location, data[:50], 0)
    r = client.put(
        location,
        params={"digest": sha256(data)},
        content=data[60:],
        headers={"Content-Range": "60-99"},
    )
    assert r.status_code == 416
    assert parse_range(r.headers["range"]) == (0, 49)
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_invalid_content_range_format(client, repo):
    location = start_upload(client, repo)
    r = client.patch(location, content=b"abc", headers={"Content-Range": "bytes lots"})
    assert r.status_code == 416
    r = client.patch(location, content=b"abc", headers={"Content-Range": "5-2"})
    assert r.status_code == 416
    assert client.get(location).headers["range"] == "0-0"


def test_content_range_must_match_content_length(client, repo):
    location = start_upload(client, repo)
    # Content-Range declares 10 bytes; Content-Length (and the body) has 5.
    r = client.patch(location, content=b"abcde", headers={"Content-Range": "0-9"})
    assert r.status_code == 416
    assert client.get(location).headers["range"] == "0-0"


def test_short_streamed_chunk_is_refused_and_not_kept(client, repo):
    data = random_blob(120)
    location = start_upload(client, repo)
    assert patch(client, location, data[:20], 0).status_code == 202

    def short():
        yield b"x" * 50  # Content-Range promises 100 bytes

    r = client.patch(location, content=short(), headers={"Content-Range": "20-119"})
    assert_error(r, 400, "SIZE_INVALID")
    # The partial chunk is not part of the upload; resuming gives the right blob.
    assert client.get(location).headers["range"] == "0-19"
    assert patch(client, location, data[20:], 20).status_code == 202
    r = client.put(location, params={"digest": sha256(data)})
    assert r.status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_closing_put_digest_mismatch(client, repo):
    data = random_blob(100)
    location = start_upload(client, repo)
    patch(client, location, data, 0)
    r = client.put(location, params={"digest": sha256(b"different")})
    assert_error(r, 400, "DIGEST_INVALID")
    assert client.head(f"/v2/{repo}/blobs/{sha256(data)}").status_code == 404


def test_chunked_upload_with_sha512(client, repo):
    data = random_blob(5000)
    location = start_upload(client, repo)
    patch(client, location, data[:2500], 0)
    patch(client, location, data[2500:], 2500)
    r = client.put(location, params={"digest": sha512(data)})
    assert r.status_code == 201
    assert r.headers["docker-content-digest"] == sha512(data)
    got = client.get(f"/v2/{repo}/blobs/{sha512(data)}")
    assert got.status_code == 200
    assert got.content == data


def test_many_small_chunks(client, repo):
    data = random_blob(64 * 50)
    location = start_upload(client, repo)
    for i in range(0, len(data), 64):
        r = patch(client, location, data[i : i + 64], i)
        assert r.status_code == 202
        assert r.headers["range"] == f"0-{i + 63}"
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201
    assert client.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
