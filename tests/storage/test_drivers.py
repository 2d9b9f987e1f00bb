"""The one test suite every storage driver must pass: the filesystem driver, and the object
store driver on S3 (moto), Google Cloud Storage (gcp-storage-emulator) and Azure (Azurite),
each a real server speaking its cloud's protocol (tests/storage_servers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from wharf.storage import StorageDriver, open_storage

# Blob storage alone, no metadata store: one pass of the suite is enough.
pytestmark = pytest.mark.once

CLOUDS = ("s3", "gs", "az")


@pytest.fixture(params=["file", *CLOUDS])
def driver(request, tmp_path, monkeypatch) -> Iterator[StorageDriver]:
    if request.param == "file":
        yield open_storage(f"file://{tmp_path / 'root'}")
        return
    server = request.getfixturevalue(
        {"s3": "s3_server", "gs": "gcs_server", "az": "azure_server"}[request.param]
    )
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    yield open_storage(server.url("registry/root"))


def test_missing_object(driver):
    assert driver.stat("a/b") is None
    with pytest.raises(FileNotFoundError):
        driver.open_read("a/b")
    driver.delete("a/b")  # not an error


def test_write_commit_read(driver):
    data = os.urandom(3 << 20)
    w = driver.writer("u/1/data")
    w.write(data[: 1 << 20])
    w.write(data[1 << 20 :])
    w.commit()
    assert driver.stat("u/1/data") == len(data)
    with driver.open_read("u/1/data") as f:
        assert f.read() == data
    with driver.open_read("u/1/data", 100) as f:
        assert f.read(10) == data[100:110]


def test_writer_at_offset_discards_what_lies_beyond(driver):
    w = driver.writer("x")
    w.write(b"0123456789")
    w.close()
    w = driver.writer("x", 4)
    w.write(b"ab")
    w.close()
    with driver.open_read("x") as f:
        assert f.read() == b"0123ab"


def test_move_replaces_atomically_and_removes_source(driver):
    for path, content in (("src", b"new"), ("dst/deep/data", b"old")):
        w = driver.writer(path)
        w.write(content)
        w.commit()
    driver.move("src", "dst/deep/data")
    assert driver.stat("src") is None
    with driver.open_read("dst/deep/data") as f:
        assert f.read() == b"new"


def test_delete_prefix(driver):
    for name in ("p/a", "p/b/c"):
        w = driver.writer(name)
        w.write(b"x")
        w.close()
    driver.delete("p")
    assert driver.stat("p/a") is None
    assert driver.stat("p/b/c") is None


def test_paths_cannot_escape_the_root(driver):
    with pytest.raises(ValueError):
        driver.stat("../../etc/passwd")


def _put(driver, path, data, offset=0):
    w = driver.writer(path, offset)
    w.write(data)
    w.close()


def test_chunked_upload_from_many_writers_then_move(driver):
    """A registry upload: chunks of varied sizes (some far below S3's 5 MiB part minimum),
    each from a new writer as if on another replica, then published by a move."""
    data = os.urandom(19 << 20)
    sizes = [1 << 20, 300_000, 6 << 20, 2 << 20, 9 << 20]
    offset = 0
    for size in [*sizes, len(data) - sum(sizes)]:
        _put(driver, "uploads/u1/data", data[offset : offset + size], offset)
        offset += size
        assert driver.stat("uploads/u1/data") == offset
    with driver.open_read("uploads/u1/data", 5 << 20) as f:
        assert f.read(1000) == data[5 << 20 : (5 << 20) + 1000]
    driver.move("uploads/u1/data", "blobs/b1/data")
    assert driver.stat("uploads/u1/data") is None
    assert driver.stat("blobs/b1/data") == len(data)
    with driver.open_read("blobs/b1/data") as f:
        assert f.read() == data
    driver.delete("uploads/u1")
    assert driver.stat("uploads/u1/data") is None


def test_a_writer_cuts_off_unacknowledged_bytes(driver):
    """Bytes past the offset a writer starts at were never acknowledged: gone, even when they
    sit in the middle of an earlier chunk."""
    _put(driver, "uploads/u2/data", b"A" * 1000)
    _put(driver, "uploads/u2/data", b"B" * 1000, 1000)
    w = driver.writer("uploads/u2/data", 1500)  # inside the second chunk
    w.commit()
    assert driver.stat("uploads/u2/data") == 1500
    _put(driver, "uploads/u2/data", b"C" * 10, 1500)
    with driver.open_read("uploads/u2/data") as f:
        assert f.read() == b"A" * 1000 + b"B" * 500 + b"C" * 10


def test_an_aborted_writer_leaves_the_object_as_it_was(driver):
    _put(driver, "uploads/u3/data", b"kept")
    w = driver.writer("uploads/u3/data", 4)
    w.write(b"never acknowledged")
    w.abort()
    w = driver.writer("uploads/u3/data", 4)  # what the next request does
    w.write(b"+more")
    w.close()
    with driver.open_read("uploads/u3/data") as f:
        assert f.read() == b"kept+more"


def test_an_empty_upload_publishes_an_empty_blob(driver):
    driver.writer("uploads/u4/data", 0).commit()
    assert driver.stat("uploads/u4/data") == 0
    driver.move("uploads/u4/data", "blobs/empty/data")
    assert driver.stat("blobs/empty/data") == 0
    with driver.open_read("blobs/empty/data") as f:
        assert f.read() == b""


def test_reading_from_the_end_gives_nothing(driver):
    _put(driver, "obj", b"12345")
    with driver.open_read("obj", 5) as f:
        assert f.read() == b""


def test_describe_and_no_redirect_by_default(driver):
    assert driver.redirect_url("anything") is None
    assert "://" in driver.describe()
