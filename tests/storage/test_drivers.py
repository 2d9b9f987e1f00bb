"""The one test suite every storage driver must pass (only the filesystem driver so far)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from wharf.storage import StorageDriver, open_storage


@pytest.fixture(params=["file"])
def driver(request, tmp_path) -> Iterator[StorageDriver]:
    yield open_storage(f"file://{tmp_path / 'root'}")


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
