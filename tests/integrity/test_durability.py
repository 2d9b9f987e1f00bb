"""What a registry acknowledged is there, byte for byte, after it is stopped or killed and
started again on the same data directory."""

from __future__ import annotations

import json
import secrets

import pytest
from integrity_util import (
    MANIFEST_HEADERS,
    MiB,
    digest_of,
    image_manifest,
    log_tail,
    push_blob,
)

OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_pushed_image_survives_restart(servers, repo: str, how: str) -> None:
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "n": secrets.token_hex(8)}
    ).encode()
    layers = [secrets.token_bytes(3 * MiB + 1), secrets.token_bytes(1234), b""]
    manifest = image_manifest(config, layers)
    manifest_digest = digest_of(manifest)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": MANIFEST_HEADERS["Content-Type"],
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    index_digest = digest_of(index)
    blobs = {digest_of(b): b for b in [config, *layers]}

    server = servers.start()
    with server.client() as c:
        for blob in blobs.values():
            push_blob(c, repo, blob)
        r = c.put(f"/v2/{repo}/manifests/v1", content=manifest, headers=MANIFEST_HEADERS)
        assert r.status_code == 201, r.text
        r = c.put(f"/v2/{repo}/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})
        assert r.status_code == 201, r.text
    if how == "stop":
        server.stop()
    else:
        server.kill()  # acknowledged writes must already be durable

    server = servers.restart(server)
    accept = {"Accept": f"{MANIFEST_HEADERS['Content-Type']}, {OCI_INDEX}"}
    with server.client() as c:
        for reference in ("v1", manifest_digest):
            r = c.get(f"/v2/{repo}/manifests/{reference}", headers=accept)
            assert r.status_code == 200, f"{reference}: {r.text}\n{log_tail(server.log_path)}"
            assert r.content == manifest
            assert r.headers["Docker-Content-Digest"] == manifest_digest
            assert r.headers["Content-Type"] == MANIFEST_HEADERS["Content-Type"]
        for reference in ("multi", index_digest):
            r = c.get(f"/v2/{repo}/manifests/{reference}", headers=accept)
            assert r.status_code == 200, f"{reference}: {r.text}"
            assert r.content == index
            assert r.headers["Docker-Content-Digest"] == index_digest
        r = c.get(f"/v2/{repo}/tags/list")
        assert r.status_code == 200
        assert sorted(r.json()["tags"]) == ["multi", "v1"]
        for digest, blob in blobs.items():
            r = c.get(f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 200, digest
            assert r.content == blob
            assert r.headers["Docker-Content-Digest"] == digest
            r = c.head(f"/v2/{repo}/blobs/{digest}")
            assert r.status_code == 200
            assert int(r.headers["Content-Length"]) == len(blob)
