"""The object store fails under a running registry (its bucket deleted, as by a mistaken
cleanup or a lapsed account): pushes and pulls are answered 503 with the spec's error body
and one log line each (no traceback), and everything works again once the bucket is back.

Runs against each cloud's emulator (tests/storage_servers.py)."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from integrity_util import OCTET, digest_of, push_blob

from tests.conftest import start_server
from tests.storage_servers import s3_emulator


def delete_bucket(kind: str, emulator: Any, name: str) -> None:
    client = emulator.client()
    if kind == "s3":
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=name, Key=item["Key"])
        client.delete_bucket(Bucket=name)
    elif kind == "gcs":
        client.bucket(name).delete(force=True)
    else:
        client.delete_container(name)


def assert_storage_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"]
    (error,) = r.json()["errors"]
    assert error["code"] == "UNAVAILABLE"
    assert error["message"] == "the registry's storage is unavailable; try again later"


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_a_missing_bucket_answers_503_and_recovers(kind: str, request, servers, repo) -> None:  # type: ignore[no-untyped-def]
    emulator = request.getfixturevalue(f"{kind}_server")
    bucket = emulator.new_bucket()
    server = start_server(
        servers.tmp,
        extra_args=["--storage", emulator.url("registry", bucket=bucket)],
        env=emulator.env,
    )
    servers.started.append(server)
    blob, later = os.urandom(300 * 1024), os.urandom(200 * 1024)
    with server.client() as c:
        earlier = push_blob(c, repo, os.urandom(100 * 1024))
        delete_bucket(kind, emulator, bucket)

        assert_storage_unavailable(c.get(f"/v2/{repo}/blobs/{earlier}"))
        r = c.post(
            f"/v2/{repo}/blobs/uploads/",
            params={"digest": digest_of(blob)},
            content=blob,
            headers=OCTET,
        )
        assert_storage_unavailable(r)
        r = c.post(f"/v2/{repo}/blobs/uploads/")
        assert r.status_code == 202, r.text
        r = c.patch(r.headers["Location"], content=blob, headers=OCTET)
        assert_storage_unavailable(r)

        emulator._create_bucket(bucket)
        push_blob(c, repo, later)
        assert c.get(f"/v2/{repo}/blobs/{digest_of(later)}").content == later
    server.stop()
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert log.count("storage is unavailable") >= 3, log[-4000:]


def test_an_unreachable_s3_endpoint_answers_503(servers, repo: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The store stops answering at all (connection refused). One attempt per call
    (AWS_MAX_ATTEMPTS, AWS's own variable), so the test does not wait out the backoff."""
    (tmp_path / "s3").mkdir()
    with s3_emulator(tmp_path / "s3") as s3:
        server = start_server(
            servers.tmp,
            extra_args=["--storage", s3.url("registry")],
            env={**s3.env, "AWS_MAX_ATTEMPTS": "1"},
        )
        servers.started.append(server)
        with server.client() as c:
            earlier = push_blob(c, repo, os.urandom(100 * 1024))
            s3.stop()
            assert_storage_unavailable(c.get(f"/v2/{repo}/blobs/{earlier}"))
            blob = os.urandom(1024)
            r = c.post(
                f"/v2/{repo}/blobs/uploads/",
                params={"digest": digest_of(blob)},
                content=blob,
                headers=OCTET,
            )
            assert_storage_unavailable(r)
    server.stop()
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]
    assert log.count("storage is unavailable") >= 2, log[-4000:]
