"""Byte ranges: blob GET/HEAD with Range (RFC 9110), and the upload protocol's Range header."""

from __future__ import annotations

import pytest

from .helpers import assert_api_version, parse_range, push_blob, random_blob, sha256, start_upload

SIZE = 1000


@pytest.fixture
def blob(client, repo):
    data = random_blob(SIZE)
    digest = push_blob(client, repo, data)
    return repo, digest, data


def get_range(client, blob, value, method="GET"):
    repo, digest, _ = blob
    return client.request(method, f"/v2/{repo}/blobs/{digest}", headers={"Range": value})


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=100-199", 100, 199),
        ("bytes=999-999", 999, 999),
        ("bytes=500-", 500, 999),
        ("bytes=0-", 0, 999),
        ("bytes=-1", 999, 999),
        ("bytes=-100", 900, 999),
        ("bytes=-5000", 0, 999),  # suffix longer than the blob: all of it
        ("bytes=900-5000", 900, 999),  # end past the blob: clamped
    ],
    ids=[
        "first-byte",
        "head",
        "middle",
        "last-byte",
        "open-end",
        "from-zero",
        "suffix-1",
        "suffix-100",
        "suffix-too-long",
        "end-clamped",
    ],
)
def test_satisfiable_range(client, blob, value, start, end):
    _, digest, data = blob
    r = get_range(client, blob, value)
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert int(r.headers["content-length"]) == end - start + 1
    assert r.content == data[start : end + 1]
    assert r.headers["docker-content-digest"] == digest
    assert_api_version(r)


def test_resume_download_with_ranges(client, blob):
    _, digest, data = blob
    got = b""
    while len(got) < SIZE:
        r = get_range(client, blob, f"bytes={len(got)}-{len(got) + 299}")
        assert r.status_code == 206
        got += r.content
    assert got == data
    assert sha256(got) == digest


def test_head_with_range(client, blob):
    r = get_range(client, blob, "bytes=10-19", method="HEAD")
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes 10-19/{SIZE}"
    assert r.headers["content-length"] == "10"
    assert r.content == b""


@pytest.mark.parametrize(
    "value",
    ["bytes=1000-", "bytes=1000-1001", "bytes=5000-6000", "bytes=-0"],
    ids=["at-end", "past-end", "far-past-end", "empty-suffix"],
)
def test_unsatisfiable_range(client, blob, value):
    r = get_range(client, blob, value)
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert_api_version(r)


def test_range_on_empty_blob(client, repo):
    digest = push_blob(client, repo, b"")
    r = client.get(f"/v2/{repo}/blobs/{digest}", headers={"Range": "bytes=0-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == "bytes */0"


def test_invalid_range_is_not_served_partially(client, blob):
    """`bytes=9-3` is an invalid range-spec: RFC 9110 lets the server ignore it or refuse it."""
    _, _, data = blob
    r = get_range(client, blob, "bytes=9-3")
    assert r.status_code in (200, 416)
    if r.status_code == 200:
        assert r.content == data


def test_unknown_range_unit_is_ignored(client, blob):
    _, _, data = blob
    r = get_range(client, blob, "items=0-5")
    assert r.status_code == 200
    assert r.content == data


def test_multiple_ranges_are_not_refused(client, blob):
    _, _, data = blob
    r = get_range(client, blob, "bytes=0-1,5-6")
    assert r.status_code in (200, 206)
    if r.status_code == 200:
        assert r.content == data


def test_head_blob_has_length_and_digest_but_no_body(client, blob):
    repo, digest, _ = blob
    r = client.head(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["content-length"] == str(SIZE)
    assert r.headers["docker-content-digest"] == digest
    assert r.content == b""


# -- the upload protocol's Range ------------------------------------------------------------


def test_upload_range_tracks_progress(client, repo):
    location = start_upload(client, repo)
    assert client.get(location).headers["range"] == "0-0"
    sizes = [1, 9, 90, 900]
    total = 0
    for n in sizes:
        r = client.patch(
            location, content=random_blob(n), headers={"Content-Range": f"{total}-{total + n - 1}"}
        )
        total += n
        assert r.status_code == 202
        assert r.headers["range"] == f"0-{total - 1}"
        status = client.get(location)
        assert status.status_code == 204
        assert status.headers["range"] == f"0-{total - 1}"
        assert status.headers["location"] == location


def test_out_of_order_patch_reports_current_range(client, repo):
    location = start_upload(client, repo)
    client.patch(location, content=b"a" * 10, headers={"Content-Range": "0-9"})
    for bad in ("0-9", "5-14", "11-20", "100-109"):
        r = client.patch(location, content=b"b" * 10, headers={"Content-Range": bad})
        assert r.status_code == 416, bad
        assert parse_range(r.headers["range"]) == (0, 9)
        assert_api_version(r)
    assert client.get(location).headers["range"] == "0-9"


@pytest.mark.parametrize(
    "content_range",
    ["0-9", "bytes 0-9", "bytes=0-9", "0-9/10", "0-9/*"],
    ids=["plain", "bytes-space", "bytes-equals", "with-total", "star-total"],
)
def test_content_range_forms_accepted(client, repo, content_range):
    """The spec's form is `^[0-9]+-[0-9]+$`; Wharf also takes the RFC 9110 spellings."""
    data = random_blob(10)
    location = start_upload(client, repo)
    r = client.patch(location, content=data, headers={"Content-Range": content_range})
    assert r.status_code == 202
    assert r.headers["range"] == "0-9"
    assert client.put(location, params={"digest": sha256(data)}).status_code == 201


@pytest.mark.parametrize(
    ("content_range", "length"),
    [("0-9", 5), ("0-4", 10), ("0-0", 2)],
    ids=["range-longer", "range-shorter", "single-byte"],
)
def test_content_range_and_length_mismatch(client, repo, content_range, length):
    location = start_upload(client, repo)
    r = client.patch(location, content=b"z" * length, headers={"Content-Range": content_range})
    assert r.status_code == 416
    assert client.get(location).headers["range"] == "0-0"
