"""Many clients pushing the same blob and the same manifest at once: all succeed, and the
content is stored exactly once."""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from integrity_util import (
    MANIFEST_HEADERS,
    OCTET,
    MiB,
    blob_files,
    digest_of,
    image_manifest,
    log_tail,
    push_blob,
    upload_files,
)

CLIENTS = 16


@pytest.mark.parametrize("workers", [1, 3])
def test_concurrent_pushes_of_same_blob_and_manifest(servers, repo: str, workers: int) -> None:
    server = servers.start(workers=workers)
    layer = secrets.token_bytes(8 * MiB)
    config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    digest = digest_of(layer)
    manifest = image_manifest(config, [layer])
    manifest_digest = digest_of(manifest)
    barrier = threading.Barrier(CLIENTS)

    def push_layer(_: int) -> tuple[int, str]:
        with server.client() as c:
            r = c.post(f"/v2/{repo}/blobs/uploads/")
            assert r.status_code == 202, r.text
            barrier.wait()
            r = c.put(
                r.headers["Location"], params={"digest": digest}, content=layer, headers=OCTET
            )
            return r.status_code, r.text

    def push_manifest(_: int) -> tuple[int, str]:
        with server.client() as c:
            barrier.wait()
            r = c.put(f"/v2/{repo}/manifests/latest", content=manifest, headers=MANIFEST_HEADERS)
            return r.status_code, r.headers.get("Docker-Content-Digest", r.text)

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(push_layer, range(CLIENTS)))
    assert [status for status, _ in results] == [201] * CLIENTS, (
        f"{results}\n{log_tail(server.log_path)}"
    )

    with server.client() as c:
        push_blob(c, repo, config)
    barrier.reset()
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(push_manifest, range(CLIENTS)))
    assert [status for status, _ in results] == [201] * CLIENTS, (
        f"{results}\n{log_tail(server.log_path)}"
    )
    assert {d for _, d in results} == {manifest_digest}

    assert len(blob_files(server.data_dir, digest)) == 1, blob_files(server.data_dir, digest)
    assert len(blob_files(server.data_dir, digest_of(config))) == 1
    assert upload_files(server.data_dir) == [], "upload leftovers"

    with server.client() as c:
        r = c.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200
        assert r.content == layer
        r = c.get(
            f"/v2/{repo}/manifests/latest", headers={"Accept": MANIFEST_HEADERS["Content-Type"]}
        )
        assert r.status_code == 200
        assert r.content == manifest
        assert r.headers["Docker-Content-Digest"] == manifest_digest
        r = c.get(f"/v2/{repo}/tags/list")
        assert r.json()["tags"] == ["latest"]
