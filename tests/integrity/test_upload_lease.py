"""A request that loses its upload's write lease writes nothing more and is told so: bytes
another request wrote and had acknowledged are never overwritten (issue 13, item 1).

The server's lease is shortened (WHARF_UPLOAD_LEASE_SECONDS) so that a stalled client outlives
it within seconds."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest
from integrity_util import Trickle, digest_of, log_tail, patch_chunk, start_upload

from tests.conftest import start_server

LEASE_SECONDS = 2.0


@pytest.fixture
def server(servers):
    return servers.start(env={"WHARF_UPLOAD_LEASE_SECONDS": str(LEASE_SECONDS)})


def _take_over(server, location: str, blob: bytes) -> None:
    """Another client writes the whole blob once the stalled request's lease has run out."""
    time.sleep(LEASE_SECONDS * 1.5)
    with server.client() as c:
        r = patch_chunk(c, location, blob, 0)
        assert r.status_code == 202, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
        assert r.headers["Range"] == f"0-{len(blob) - 1}"


def _assert_published(server, repo: str, location: str, blob: bytes) -> None:
    digest = digest_of(blob)
    with server.client() as c:
        r = c.get(location)
        assert r.status_code == 204, r.text
        assert r.headers["Range"] == f"0-{len(blob) - 1}"
        r = c.put(location, params={"digest": digest})
        assert r.status_code == 201, f"{r.status_code} {r.text}\n{log_tail(server.log_path)}"
        r = c.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200
        assert r.content == blob


def _stalled_patch_loses_to_a_takeover(server, repo: str, split: int) -> None:
    """The report: A trickles 80 bytes and stalls past its lease; B writes 0-79 and gets 202;
    A's request must then fail, and the upload must hold B's bytes."""
    a_bytes, b_bytes = secrets.token_bytes(80), secrets.token_bytes(80)
    with server.client() as c:
        location, _ = start_upload(c, repo)
    a = Trickle(server, "PATCH", location, 80, {"Content-Range": "0-79"})
    a.send(a_bytes[:split])
    _take_over(server, location, b_bytes)
    a.send(a_bytes[split:])
    status, body = a.response()
    assert not 200 <= status < 300, f"the stalled writer was acknowledged: {status} {body!r}"
    assert status == 400, body
    assert [e["code"] for e in json.loads(body)["errors"]] == ["BLOB_UPLOAD_INVALID"]
    _assert_published(server, repo, location, b_bytes)


@pytest.mark.parametrize("split", [40, 1], ids=["half", "one-byte"])
def test_stalled_patch_cannot_overwrite_a_takeover(server, repo: str, split: int) -> None:
    _stalled_patch_loses_to_a_takeover(server, repo, split)


@pytest.mark.parametrize("emulator", ["s3_server", "gcs_server", "azure_server"])
def test_stalled_patch_cannot_overwrite_a_takeover_on_object_stores(
    tmp_path: Path, repo: str, emulator: str, request: pytest.FixtureRequest
) -> None:
    """Both requests write the segment (S3, GCS) or block list (Azure) at offset 0: the
    stalled one must not commit its own over the takeover's."""
    store = request.getfixturevalue(emulator)
    server = start_server(
        tmp_path,
        extra_args=["--storage", store.url(f"lease-{secrets.token_hex(3)}")],
        env={**store.env, "WHARF_UPLOAD_LEASE_SECONDS": str(LEASE_SECONDS)},
    )
    try:
        _stalled_patch_loses_to_a_takeover(server, repo, 40)
    finally:
        server.stop()


def test_stalled_final_put_cannot_publish_over_a_takeover(server, repo: str) -> None:
    """The same with the last chunk sent in the closing PUT: A's PUT must not publish."""
    a_bytes, b_bytes = secrets.token_bytes(80), secrets.token_bytes(80)
    with server.client() as c:
        location, _ = start_upload(c, repo)
    sep = "&" if "?" in location else "?"
    a = Trickle(server, "PUT", f"{location}{sep}digest={digest_of(a_bytes)}", 80, {})
    a.send(a_bytes[:40])
    _take_over(server, location, b_bytes)
    a.send(a_bytes[40:])
    status, body = a.response()
    assert not 200 <= status < 300, f"the stalled writer was acknowledged: {status} {body!r}"
    assert status == 400, body
    with server.client() as c:
        r = c.head(f"/v2/{repo}/blobs/{digest_of(a_bytes)}")
        assert r.status_code == 404, "the stalled writer's blob was published"
    _assert_published(server, repo, location, b_bytes)


def test_a_slow_client_nobody_competes_with_keeps_its_upload(server, repo: str) -> None:
    """Stalling past the lease alone costs nothing: the request renews it when bytes come
    again, as long as no other request took the upload over."""
    blob = secrets.token_bytes(80)
    with server.client() as c:
        location, _ = start_upload(c, repo)
    a = Trickle(server, "PATCH", location, 80, {"Content-Range": "0-79"})
    a.send(blob[:40])
    time.sleep(LEASE_SECONDS * 1.5)  # past the lease: another request could have taken it
    a.send(blob[40:])
    status, body = a.response()
    assert status == 202, body
    _assert_published(server, repo, location, blob)
