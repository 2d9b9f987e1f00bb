"""The `oras` Python client against Wharf: artifacts, subjects and the referrers API."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import httpx
import oras.client
import oras.oci
import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"
TITLE = "org.opencontainers.image.title"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """oras only pushes files below the working directory and reads ~/.docker: keep both in tmp."""
    work = tmp_path / "oras"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.delenv("ORAS_USER", raising=False)
    monkeypatch.delenv("ORAS_PASS", raising=False)
    return work


@pytest.fixture
def oras_config(workdir: Path) -> str:
    return str(workdir.parent / "oras-auth.json")


@pytest.fixture
def registry(wharf_server, oras_config: str) -> oras.client.OrasClient:
    reg = oras.client.OrasClient(hostname=wharf_server.host, insecure=True, auth_backend="basic")
    user, password = wharf_server.auth
    reg.login(username=user, password=password, hostname=wharf_server.host, config_path=oras_config)
    return reg


def write_files(workdir: Path, **files: bytes) -> list[str]:
    for name, data in files.items():
        (workdir / name).write_bytes(data)
    return list(files)


def manifest_descriptor(client, repo: str, reference: str) -> tuple[bytes, oras.oci.Subject]:
    """The exact stored manifest bytes, and a subject descriptor pointing at them."""
    r = client.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text
    digest = sha256(r.content)
    assert r.headers["Docker-Content-Digest"] == digest
    return r.content, oras.oci.Subject(mediaType=OCI_MANIFEST, digest=digest, size=len(r.content))


def upload_blob(client, repo: str, data: bytes) -> str:
    """POST + monolithic PUT upload with httpx."""
    digest = sha256(data)
    start = client.post(f"/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    # Keep the query string of Location (httpx's params= would replace it).
    location = httpx.URL(start.headers["Location"]).copy_merge_params({"digest": digest})
    done = client.put(
        location,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert done.status_code == 201, done.text
    return digest


def test_push_and_pull_artifact(registry, wharf_server, repo, workdir, oras_config, client):
    files = {
        "artifact.txt": b"hello from oras " + os.urandom(8).hex().encode(),
        "data.bin": os.urandom(300_000),
    }
    target = f"{wharf_server.host}/{repo}:v1"
    resp = registry.push(
        files=write_files(workdir, **files),
        target=target,
        config_path=oras_config,
        manifest_annotations={"org.example.note": "artifact"},
        quiet=True,
    )
    assert resp.status_code == 201, resp.text

    assert registry.get_tags(f"{wharf_server.host}/{repo}") == ["v1"]
    manifest = registry.get_manifest(target)
    assert manifest["annotations"] == {"org.example.note": "artifact"}
    assert [layer["annotations"][TITLE] for layer in manifest["layers"]] == list(files)
    assert [layer["digest"] for layer in manifest["layers"]] == [sha256(d) for d in files.values()]

    out = workdir / "pulled"
    pulled = registry.pull(target=target, outdir=str(out), config_path=oras_config)
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for name, data in files.items():
        assert (out / name).read_bytes() == data

    # The blob endpoint agrees with what oras wrote.
    r = client.get(f"/v2/{repo}/blobs/{sha256(files['data.bin'])}")
    assert r.status_code == 200
    assert r.content == files["data.bin"]


def test_referrers(registry, wharf_server, repo, workdir, oras_config, client):
    host = wharf_server.host
    image = os.urandom(1000)
    registry.push(
        files=write_files(workdir, **{"image.bin": image}),
        target=f"{host}/{repo}:v1",
        config_path=oras_config,
        quiet=True,
    )
    _, subject = manifest_descriptor(client, repo, "v1")

    # Referrer 1, pushed by oras: no artifactType field, so the registry must report the
    # config media type as its artifactType.
    sbom = json.dumps({"packages": [os.urandom(4).hex()]}).encode()
    write_files(workdir, **{"sbom.json": sbom, "sbom-config.json": b"{}"})
    resp = registry.push(
        files=["sbom.json"],
        target=f"{host}/{repo}:sbom",
        config_path=oras_config,
        manifest_config=f"sbom-config.json:{SBOM_TYPE}",
        manifest_annotations={"org.example.kind": "sbom"},
        subject=subject,
        quiet=True,
    )
    assert resp.status_code == 201, resp.text
    sbom_manifest, sbom_desc = manifest_descriptor(client, repo, "sbom")
    assert json.loads(sbom_manifest)["subject"]["digest"] == subject.digest

    # Referrer 2, pushed by hand (oras-py cannot set artifactType): OCI 1.1 style with an
    # explicit artifactType and the empty config, untagged.
    signature = os.urandom(64)
    upload_blob(client, repo, b"{}")
    upload_blob(client, repo, signature)
    sig_manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SIGNATURE_TYPE,
            "config": {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2},
            "layers": [
                {
                    "mediaType": "application/octet-stream",
                    "digest": sha256(signature),
                    "size": len(signature),
                    "annotations": {TITLE: "signature.sig"},
                }
            ],
            "subject": {
                "mediaType": subject.mediaType,
                "digest": subject.digest,
                "size": subject.size,
            },
            "annotations": {"org.example.kind": "signature"},
        }
    ).encode()
    sig_digest = sha256(sig_manifest)
    r = client.put(
        f"/v2/{repo}/manifests/{sig_digest}",
        content=sig_manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text
    assert r.headers.get("OCI-Subject") == subject.digest

    r = client.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].split(";")[0] == OCI_INDEX
    index = r.json()
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert set(by_digest) == {sbom_desc.digest, sig_digest}
    expected = {
        sbom_desc.digest: {
            "mediaType": OCI_MANIFEST,
            "size": sbom_desc.size,
            "artifactType": SBOM_TYPE,
            "annotations": {"org.example.kind": "sbom"},
        },
        sig_digest: {
            "mediaType": OCI_MANIFEST,
            "size": len(sig_manifest),
            "artifactType": SIGNATURE_TYPE,
            "annotations": {"org.example.kind": "signature"},
        },
    }
    for digest, fields in expected.items():
        assert {k: by_digest[digest].get(k) for k in fields} == fields, by_digest[digest]

    # Filtering by artifactType is optional, but must be announced when applied.
    r = client.get(
        f"/v2/{repo}/referrers/{subject.digest}", params={"artifactType": SIGNATURE_TYPE}
    )
    assert r.status_code == 200, r.text
    listed = {d["digest"] for d in r.json()["manifests"]}
    if "artifactType" in r.headers.get("OCI-Filters-Applied", ""):
        assert listed == {sig_digest}
    else:
        assert listed == {sbom_desc.digest, sig_digest}

    # A manifest nobody refers to has an empty (not missing) referrers list.
    r = client.get(f"/v2/{repo}/referrers/{sig_digest}")
    assert r.status_code == 200, r.text
    assert r.json()["manifests"] == []

    # Both referrers can be inspected and pulled with oras by digest.
    sig_ref = f"{host}/{repo}@{sig_digest}"
    assert registry.get_manifest(sig_ref)["subject"]["digest"] == subject.digest
    out = workdir / "pulled"
    registry.pull(target=sig_ref, outdir=str(out), config_path=oras_config)
    assert (out / "signature.sig").read_bytes() == signature
    registry.pull(target=f"{host}/{repo}@{sbom_desc.digest}", outdir=str(out))
    assert (out / "sbom.json").read_bytes() == sbom


def test_wrong_password_is_rejected(wharf_server, repo, workdir, client):
    bad = oras.client.OrasClient(hostname=wharf_server.host, insecure=True, auth_backend="basic")
    bad.auth.set_basic_auth(wharf_server.auth[0], "not-the-password")
    write_files(workdir, **{"a.txt": b"nope"})
    with pytest.raises(ValueError, match=r"(?i)unauthori[sz]ed|authentication"):
        bad.push(files=["a.txt"], target=f"{wharf_server.host}/{repo}:v1", quiet=True)
    r = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 404, r.text
