"""skopeo against Wharf: push/pull round trips, inspect, tags, delete, Docker schema 2, auth."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class OciImage:
    """An image written by hand as an OCI image layout (no daemon, no umoci)."""

    layout: Path
    tag: str
    manifest: bytes
    config: bytes
    layers: list[bytes]
    label: str

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:{self.tag}"

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [sha256(layer) for layer in self.layers]


def make_layer(index: int, size: int) -> bytes:
    """A gzipped tar holding one directory and one file of random (incompressible) bytes."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(f"layer{index}")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(d)
        data = os.urandom(size)
        f = tarfile.TarInfo(f"layer{index}/payload.bin")
        f.size, f.mode = len(data), 0o644
        tar.addfile(f, io.BytesIO(data))
    return raw.getvalue()


def build_oci_image(layout: Path, tag: str = "v1") -> OciImage:
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = sha256(data)
        (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        return digest

    tars = [make_layer(i, size) for i, size in enumerate((4096, 150_000, 2_500_000))]
    layers = [gzip.compress(t, mtime=0) for t in tars]
    label = os.urandom(8).hex()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/layer0/payload.bin"], "Labels": {"org.example.run": label}},
            "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
            "history": [{"created_by": f"layer {i}"} for i in range(len(tars))],
        },
        separators=(",", ":"),
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": put(config), "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER_GZIP, "digest": put(layer), "size": len(layer)}
                for layer in layers
            ],
            "annotations": {"org.example.built-by": "wharf-tests"},
        },
        indent=2,  # deliberately not canonical: the registry must keep the exact bytes
    ).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": put(manifest),
                "size": len(manifest),
                "annotations": {REF_NAME: tag},
            }
        ],
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps(index))
    return OciImage(layout, tag, manifest, config, layers, label)


def read_oci_layout(layout: Path, tag: str) -> tuple[bytes, dict[str, bytes]]:
    """(manifest bytes, {digest: blob bytes}) for `tag` in an OCI layout written by skopeo."""
    index = json.loads((layout / "index.json").read_text())
    [desc] = [m for m in index["manifests"] if m.get("annotations", {}).get(REF_NAME) == tag]
    blobs = {"sha256:" + p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}
    manifest = blobs[desc["digest"]]
    assert sha256(manifest) == desc["digest"]
    return manifest, blobs


@pytest.fixture
def image(tmp_path: Path) -> OciImage:
    return build_oci_image(tmp_path / "src-oci")


@pytest.fixture
def creds(wharf_server) -> str:
    user, password = wharf_server.auth
    return f"{user}:{password}"


@pytest.fixture
def push(skopeo, image: OciImage, creds: str, wharf_server, repo: str):
    def _push(tag: str = "v1", *extra: str, src: OciImage | None = None):
        src = src or image
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            *extra,
            src.ref,
            f"docker://{wharf_server.host}/{repo}:{tag}",
        )

    return _push


def test_push_pull_round_trip_is_byte_identical(
    skopeo, push, image, creds, wharf_server, repo, client, tmp_path
):
    push("v1")
    remote = f"docker://{wharf_server.host}/{repo}:v1"

    # The registry serves exactly the bytes that were pushed.
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text
    assert r.content == image.manifest
    assert r.headers["Docker-Content-Digest"] == image.digest
    assert r.headers["Content-Type"] == OCI_MANIFEST

    # Pull into a fresh OCI layout.
    out = tmp_path / "pulled-oci"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, remote, f"oci:{out}:v1")
    manifest, blobs = read_oci_layout(out, "v1")
    assert manifest == image.manifest
    assert blobs[sha256(image.config)] == image.config
    pulled = json.loads(manifest)
    assert [d["digest"] for d in pulled["layers"]] == image.layer_digests
    for layer in image.layers:
        assert blobs[sha256(layer)] == layer

    # And into skopeo's `dir:` format, addressed by digest.
    out_dir = tmp_path / "pulled-dir"
    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds, f"{remote}", f"dir:{out_dir}")
    assert (out_dir / "manifest.json").read_bytes() == image.manifest
    for layer in image.layers:
        assert (out_dir / sha256(layer).removeprefix("sha256:")).read_bytes() == layer

    # Pulling by digest yields the same manifest.
    by_digest = f"docker://{wharf_server.host}/{repo}@{image.digest}"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, by_digest, binary=True)
    assert raw.stdout == image.manifest


def test_inspect(skopeo, push, image, creds, wharf_server, repo):
    push("v1")
    remote = f"docker://{wharf_server.host}/{repo}:v1"
    common = ("--tls-verify=false", "--creds", creds)

    info = json.loads(skopeo("inspect", *common, remote).stdout)
    assert info["Name"] == f"{wharf_server.host}/{repo}"
    assert info["Digest"] == image.digest
    assert info["Layers"] == image.layer_digests
    assert info["Labels"] == {"org.example.run": image.label}
    assert (info["Architecture"], info["Os"]) == ("amd64", "linux")
    assert info["RepoTags"] == ["v1"]

    raw = skopeo("inspect", "--raw", *common, remote, binary=True).stdout
    assert raw == image.manifest
    config = skopeo("inspect", "--config", "--raw", *common, remote, binary=True).stdout
    assert config == image.config


def test_list_tags(skopeo, push, creds, wharf_server, repo, tmp_path):
    push("v1")
    push("v2")
    # A registry-to-registry copy into a third tag.
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        creds,
        "--dest-creds",
        creds,
        f"docker://{wharf_server.host}/{repo}:v1",
        f"docker://{wharf_server.host}/{repo}:latest",
    )
    out = skopeo(
        "list-tags", "--tls-verify=false", "--creds", creds, f"docker://{wharf_server.host}/{repo}"
    )
    listing = json.loads(out.stdout)
    assert listing["Repository"] == f"{wharf_server.host}/{repo}"
    assert sorted(listing["Tags"]) == ["latest", "v1", "v2"]


def test_delete(skopeo, push, image, creds, wharf_server, repo, client, tmp_path):
    other = build_oci_image(tmp_path / "other-oci")
    push("doomed")
    push("kept", src=other)
    common = ("--tls-verify=false", "--creds", creds)
    base = f"docker://{wharf_server.host}/{repo}"

    skopeo("delete", *common, f"{base}:doomed")

    gone = skopeo("inspect", "--raw", *common, f"{base}:doomed", check=False)
    assert gone.returncode != 0, gone.stdout
    assert "manifest unknown" in gone.stderr.lower(), gone.stderr
    r = client.get(f"/v2/{repo}/manifests/{image.digest}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404, r.text

    # The other image in the same repository is untouched.
    raw = skopeo("inspect", "--raw", *common, f"{base}:kept", binary=True).stdout
    assert raw == other.manifest
    tags = json.loads(skopeo("list-tags", *common, base).stdout)["Tags"]
    assert tags == ["kept"]


def test_docker_schema2(skopeo, push, image, creds, wharf_server, repo, client, tmp_path):
    """skopeo converts OCI -> Docker schema 2 while pushing; the registry stores and serves it."""
    push("docker", "--format", "v2s2")
    remote = f"docker://{wharf_server.host}/{repo}:docker"

    raw = skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, remote, binary=True)
    manifest = json.loads(raw.stdout)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == DOCKER_CONFIG
    assert [d["mediaType"] for d in manifest["layers"]] == [DOCKER_LAYER_GZIP] * 3
    # Same compressed layers, so the blobs are reused unchanged.
    assert [d["digest"] for d in manifest["layers"]] == image.layer_digests

    r = client.get(
        f"/v2/{repo}/manifests/docker", headers={"Accept": f"{DOCKER_MANIFEST}, {OCI_MANIFEST}"}
    )
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.content == raw.stdout
    assert r.headers["Docker-Content-Digest"] == sha256(raw.stdout)

    # Registry-to-registry copy (v2s2 source) into another repository, then pull it back.
    other_repo = f"{repo}-copy"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--src-creds",
        creds,
        "--dest-creds",
        creds,
        remote,
        f"docker://{wharf_server.host}/{other_repo}:v1",
    )
    out_dir = tmp_path / "pulled-v2s2"
    skopeo(
        "copy",
        "--src-tls-verify=false",
        "--src-creds",
        creds,
        f"docker://{wharf_server.host}/{other_repo}:v1",
        f"dir:{out_dir}",
    )
    assert (out_dir / "manifest.json").read_bytes() == raw.stdout
    for layer in image.layers:
        assert (out_dir / sha256(layer).removeprefix("sha256:")).read_bytes() == layer
        r = client.get(f"/v2/{other_repo}/blobs/{sha256(layer)}")
        assert r.status_code == 200
        assert r.content == layer


@pytest.mark.parametrize("auth", ["wrong-password", "anonymous"])
def test_push_without_valid_credentials_fails(skopeo, image, wharf_server, repo, client, auth):
    creds_args = (
        ["--dest-creds", f"{wharf_server.auth[0]}:not-the-password"]
        if auth == "wrong-password"
        else ["--dest-no-creds"]
    )
    result = skopeo(
        "copy",
        "--dest-tls-verify=false",
        *creds_args,
        image.ref,
        f"docker://{wharf_server.host}/{repo}:v1",
        check=False,
    )
    assert result.returncode != 0, result.stdout
    err = result.stderr.lower()
    # Anonymous: the token endpoint hands out a token that grants nothing, so the registry
    # answers "denied"; with a wrong password the token endpoint itself refuses.
    assert any(word in err for word in ("unauthorized", "invalid username/password", "denied")), (
        result.stderr
    )

    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404, r.text
