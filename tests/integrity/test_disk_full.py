"""A data directory on a small filesystem that fills up, or turns read-only: pushes are
answered 507 with the spec's error body, the failed upload's bytes are given back, the log
has one line per failure (no traceback), and the registry keeps serving: earlier images stay
intact, pushes work again once space is freed, and a restart finds everything in place.

The data directory is a tmpfs of its own (the tests run as root), unmounted at teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from integrity_util import (
    MANIFEST_HEADERS,
    OCTET,
    MiB,
    digest_of,
    image_manifest,
    patch_chunk,
    push_blob,
    start_upload,
    upload_file_size,
)

from tests import metadata_db

DISK_SIZE = 8 * MiB
HEADROOM = 2 * MiB  # what is left free for the pushes that must fail
SLACK = 128 * 1024  # the metadata store's own growth between two measurements


class SmallDisk:
    def __init__(self, tmp: Path, servers) -> None:  # type: ignore[no-untyped-def]
        self.data = tmp / "data"
        self.servers = servers
        self.filler = self.data / "filler"

    def free(self) -> int:
        st = os.statvfs(self.data)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> None:
        """Take all the free space but `leave` bytes (0: until the disk refuses more)."""
        with self.filler.open("ab", buffering=0) as f:
            for block in (b"\0" * (64 * 1024), b"\0" * 4096):
                try:
                    while self.free() - len(block) >= leave:
                        f.write(block)
                except OSError:  # full: what is left is less than a block
                    pass

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path, servers) -> Iterator[SmallDisk]:  # type: ignore[no-untyped-def]
    small = SmallDisk(tmp_path, servers)
    small.data.mkdir()
    size = f"size={DISK_SIZE // 1024}k"
    subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(small.data)], check=True)
    try:
        yield small
    finally:
        servers.stop_all()
        subprocess.run(["umount", str(small.data)], check=True)


def error_of(r: httpx.Response) -> dict:
    assert r.headers["content-type"] == "application/json", r.text
    (error,) = r.json()["errors"]
    return error


def assert_storage_full(r: httpx.Response) -> None:
    assert r.status_code == 507, r.text
    error = error_of(r)
    assert error["code"] == "UNAVAILABLE"
    assert "storage is full" in error["message"]


def push_image(c: httpx.Client, repo: str, tag: str, seed: int) -> tuple[bytes, list[bytes]]:
    config = json.dumps({"seed": seed}).encode()
    layers = [os.urandom(256 * 1024), os.urandom(100 * 1024)]
    for blob in (config, *layers):
        push_blob(c, repo, blob)
    manifest = image_manifest(config, layers)
    r = c.put(f"/v2/{repo}/manifests/{tag}", content=manifest, headers=MANIFEST_HEADERS)
    assert r.status_code == 201, r.text
    return manifest, [config, *layers]


def assert_image(c: httpx.Client, repo: str, tag: str, image: tuple[bytes, list[bytes]]) -> None:
    manifest, blobs = image
    r = c.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": MANIFEST_HEADERS["Content-Type"]})
    assert r.status_code == 200, r.text
    assert r.content == manifest
    for blob in blobs:
        r = c.get(f"/v2/{repo}/blobs/{digest_of(blob)}")
        assert r.status_code == 200, r.text
        assert r.content == blob


def assert_no_traceback(log_path: Path | None) -> str:
    assert log_path is not None
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    return text


def test_blob_pushes_on_a_full_disk_answer_507_and_give_the_space_back(disk, repo: str) -> None:
    server = disk.servers.start()
    big = os.urandom(4 * MiB)  # more than the headroom
    with server.client() as c:
        earlier = push_image(c, repo, "v1", seed=1)
        disk.fill(leave=HEADROOM)

        # Monolithic: POST ?digest= with the whole blob.
        before = disk.free()
        r = c.post(
            f"/v2/{repo}/blobs/uploads/",
            params={"digest": digest_of(big)},
            content=big,
            headers=OCTET,
        )
        assert_storage_full(r)
        assert disk.free() >= before - SLACK
        assert c.head(f"/v2/{repo}/blobs/{digest_of(big)}").status_code == 404

        # Chunked: a first chunk that fits is kept, the next one that does not is refused and
        # its bytes are freed; the upload stays where it was, to be continued.
        location, upload_id = start_upload(c, repo)
        first = big[: MiB // 2]
        r = patch_chunk(c, location, first, 0)
        assert r.status_code == 202, r.text
        before = disk.free()
        r = patch_chunk(c, location, big[len(first) :], len(first))
        assert_storage_full(r)
        assert disk.free() >= before - SLACK
        assert upload_file_size(disk.data, upload_id) == len(first)
        r = c.get(location)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == f"0-{len(first) - 1}"

        # The final PUT carrying the rest: refused the same way, the upload unchanged.
        r = c.put(
            location,
            params={"digest": digest_of(big)},
            content=big[len(first) :],
            headers={**OCTET, "Content-Range": f"{len(first)}-{len(big) - 1}"},
        )
        assert_storage_full(r)
        assert disk.free() >= before - SLACK
        assert upload_file_size(disk.data, upload_id) == len(first)

        # Still serving: the earlier image is whole, and pulls work on the full disk.
        assert_image(c, repo, "v1", earlier)

        # Space freed: the same upload is continued and finished, new pushes work.
        disk.unfill()
        r = c.put(
            location,
            params={"digest": digest_of(big)},
            content=big[len(first) :],
            headers={**OCTET, "Content-Range": f"{len(first)}-{len(big) - 1}"},
        )
        assert r.status_code == 201, r.text
        assert c.get(f"/v2/{repo}/blobs/{digest_of(big)}").content == big
        later = push_image(c, repo, "v2", seed=2)

    server.stop()
    text = assert_no_traceback(server.log_path)
    assert text.count("storage is full") == 3, text[-4000:]

    server = disk.servers.restart(server)
    with server.client() as c:
        assert_image(c, repo, "v1", earlier)
        assert_image(c, repo, "v2", later)
        assert c.get(f"/v2/{repo}/blobs/{digest_of(big)}").content == big
        push_image(c, repo, "v3", seed=3)


def test_manifest_push_when_the_disk_is_full(disk, repo: str) -> None:
    """A manifest is only metadata: on PostgreSQL nothing of it goes to the full disk; the
    embedded SQLite store, on that disk, cannot write it and says so (507, not 500)."""
    server = disk.servers.start()
    with server.client() as c:
        earlier = push_image(c, repo, "v1", seed=1)
        config, *layers = earlier[1]
        doc = json.loads(image_manifest(config, layers))
        # Large enough that SQLite cannot fit it in the space its files already have.
        doc["annotations"] = {"padding": "x" * MiB}
        big_manifest = json.dumps(doc).encode()
        token_url = f"/auth/token?scope=repository:{repo}:pull"
        assert c.get(token_url).status_code == 200  # its signing key is made on first use
        disk.fill()

        r = c.put(f"/v2/{repo}/manifests/v2", content=big_manifest, headers=MANIFEST_HEADERS)
        if metadata_db.backend() == "sqlite":
            assert r.status_code == 507, r.text
            error = error_of(r)
            assert error["code"] == "UNAVAILABLE"
            assert "metadata database is out of space" in error["message"]
            assert c.get(f"/v2/{repo}/manifests/v2").status_code == 404
        else:
            assert r.status_code == 201, r.text
        assert_image(c, repo, "v1", earlier)
        # Logins still work: failing to write their audit event does not fail them.
        r = c.get(token_url)
        assert r.status_code == 200, r.text

    server.stop()
    assert_no_traceback(server.log_path)
    disk.fill()  # what a clean shutdown of SQLite freed (its WAL file)
    if metadata_db.backend() == "sqlite":
        # The embedded store cannot start on a full disk: it says why, in one line.
        with pytest.raises(RuntimeError) as failed:
            disk.servers.restart(server)
        assert "metadata database is out of space" in str(failed.value)
        assert "Traceback" not in str(failed.value)
    else:
        disk.servers.restart(server).stop()

    disk.unfill()
    server = disk.servers.restart(server)
    with server.client() as c:
        assert_image(c, repo, "v1", earlier)
        r = c.put(f"/v2/{repo}/manifests/v2", content=big_manifest, headers=MANIFEST_HEADERS)
        assert r.status_code == 201, r.text
        later = push_image(c, repo, "v3", seed=3)

    server.stop()
    assert_no_traceback(server.log_path)
    server = disk.servers.restart(server)
    with server.client() as c:
        assert_image(c, repo, "v1", earlier)
        assert_image(c, repo, "v3", later)
        r = c.get(f"/v2/{repo}/manifests/v2", headers={"Accept": MANIFEST_HEADERS["Content-Type"]})
        assert r.status_code == 200 and r.content == big_manifest


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """`path` read-only (a read-only bind mount over itself) for the duration."""
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_storage_answers_507_and_keeps_serving(disk, repo: str) -> None:
    server = disk.servers.start()
    blob = os.urandom(64 * 1024)
    with server.client() as c:
        earlier = push_image(c, repo, "v1", seed=1)
        with read_only(disk.data / "storage"):
            r = c.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": digest_of(blob)},
                content=blob,
                headers=OCTET,
            )
            assert r.status_code == 507, r.text
            error = error_of(r)
            assert error["code"] == "UNAVAILABLE"
            assert "storage is read-only" in error["message"]
            assert_image(c, repo, "v1", earlier)
        push_blob(c, repo, blob)
    server.stop()
    text = assert_no_traceback(server.log_path)
    assert "read-only file system" in text
