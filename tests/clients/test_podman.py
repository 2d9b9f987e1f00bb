"""podman and buildah against Wharf: build FROM scratch, push, remove, pull back, compare."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A build context: a text file with a unique token, a random binary file, a Containerfile."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    token = os.urandom(8).hex()
    (ctx / "hello.txt").write_text(f"hello from podman {token}\n")
    (ctx / "data.bin").write_bytes(os.urandom(300_000))
    (ctx / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY hello.txt /hello.txt\n"
        "COPY data.bin /data/data.bin\n"
        f"LABEL org.example.token={token}\n"
        'CMD ["/hello.txt"]\n'
    )
    return ctx


def inspect_image(podman, ref: str) -> dict:
    [info] = json.loads(podman("image", "inspect", ref).stdout)
    return info


def assert_files(podman, ref: str, ctx: Path) -> None:
    """Mount the image's root filesystem (vfs, root) and compare with the build context."""
    mountpoint = Path(podman("image", "mount", ref).stdout.strip())
    try:
        assert (mountpoint / "hello.txt").read_bytes() == (ctx / "hello.txt").read_bytes()
        assert (mountpoint / "data" / "data.bin").read_bytes() == (ctx / "data.bin").read_bytes()
    finally:
        podman("image", "unmount", ref)


def test_build_push_remove_pull(podman, context, wharf_server, repo, client, tmp_path):
    ref = f"{wharf_server.host}/{repo}:v1"
    user, password = wharf_server.auth
    podman("build", "--format", "oci", "-t", ref, str(context))
    built = inspect_image(podman, ref)
    token = (context / "hello.txt").read_text().split()[-1]
    assert built["Labels"]["org.example.token"] == token

    digest_file = tmp_path / "digest"
    podman(
        "push",
        "--tls-verify=false",
        "--creds",
        f"{user}:{password}",
        "--digestfile",
        str(digest_file),
        ref,
    )
    digest = digest_file.read_text().strip()
    assert digest.startswith("sha256:")

    r = client.head(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Content-Type"] == OCI_MANIFEST
    manifest = client.get(f"/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST})
    assert manifest.status_code == 200
    # podman's image ID is the config digest.
    assert manifest.json()["config"]["digest"] == f"sha256:{built['Id']}"

    podman("rmi", ref)
    assert podman("image", "exists", ref, check=False).returncode == 1

    podman("pull", "--tls-verify=false", "--creds", f"{user}:{password}", ref)
    pulled = inspect_image(podman, ref)
    assert pulled["Id"] == built["Id"]
    assert pulled["Digest"] == digest
    assert f"{wharf_server.host}/{repo}@{digest}" in pulled["RepoDigests"]
    assert pulled["Labels"]["org.example.token"] == token
    assert_files(podman, ref, context)


def test_login_then_push_with_auth_file(podman, context, wharf_server, repo, auth_file):
    user, password = wharf_server.auth
    ref = f"{wharf_server.host}/{repo}:v1"
    podman("build", "--format", "oci", "-t", ref, str(context))

    bad = podman(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(auth_file),
        "-u",
        user,
        "-p",
        "not-the-password",
        wharf_server.host,
        check=False,
    )
    assert bad.returncode != 0, bad.stdout
    assert wharf_server.host not in json.loads(auth_file.read_text()).get("auths", {})

    # Without credentials the push is refused.
    refused = podman("push", "--tls-verify=false", ref, check=False)
    assert refused.returncode != 0, refused.stdout

    podman(
        "login",
        "--tls-verify=false",
        "--authfile",
        str(auth_file),
        "-u",
        user,
        "-p",
        password,
        wharf_server.host,
    )
    assert wharf_server.host in json.loads(auth_file.read_text())["auths"]

    # Credentials now come from the auth file (REGISTRY_AUTH_FILE points at it).
    podman("push", "--tls-verify=false", ref)
    podman("rmi", ref)
    podman("pull", "--tls-verify=false", ref)
    assert_files(podman, ref, context)

    podman("logout", "--authfile", str(auth_file), wharf_server.host)
    assert wharf_server.host not in json.loads(auth_file.read_text()).get("auths", {})


def test_buildah_commit_docker_format(buildah, podman, context, wharf_server, repo, client):
    """buildah from scratch + copy + commit as Docker schema 2, push, pull back with podman."""
    user, password = wharf_server.auth
    ref = f"{wharf_server.host}/{repo}:docker"
    ctr = buildah("from", "scratch").stdout.strip()
    buildah("copy", ctr, str(context / "hello.txt"), "/hello.txt")
    buildah("copy", ctr, str(context / "data.bin"), "/data/data.bin")
    buildah("config", "--label", "org.example=buildah", "--cmd", '["/hello.txt"]', ctr)
    image_id = buildah("commit", "-q", "--format", "docker", ctr, ref).stdout.strip()
    buildah("rm", ctr)
    buildah("push", "--tls-verify=false", "--creds", f"{user}:{password}", ref)

    r = client.get(f"/v2/{repo}/manifests/docker", headers={"Accept": DOCKER_MANIFEST})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.json()["config"]["digest"] == f"sha256:{image_id}"

    buildah("rmi", ref)
    assert podman("image", "exists", ref, check=False).returncode == 1
    podman("pull", "--tls-verify=false", "--creds", f"{user}:{password}", ref)
    pulled = inspect_image(podman, ref)
    assert pulled["Id"] == image_id
    assert pulled["Labels"]["org.example"] == "buildah"
    assert_files(podman, ref, context)
